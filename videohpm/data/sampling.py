"""Frame-index samplers (which frames of a video form a clip) and multi-view crop positions.

All samplers are pure functions of the video length ``L`` returning int64 numpy arrays of frame
indices in ``[0, L)``, non-decreasing in time. Randomness comes from ``torch`` (optionally a
``torch.Generator``) because DataLoader seeds torch differently in every worker, whereas the
global numpy RNG is duplicated across forked workers. VideoMAE's recipes:
:func:`dense_indices` (pre-training, K400 fine-tuning: ``num_frames`` frames ``stride`` apart),
:func:`segment_indices` (SSv2 fine-tuning, TSN: one frame per equal segment) and
:func:`multiview_indices` (test: ``num_clips`` clips spread uniformly, ``[num_clips, num_frames]``;
:func:`union_indices` makes them one decode call).

**Short videos** are padded by *repeating the last frame*, as VideoMAE's loaders do (a 10-frame
video sampled 16×4 gives ``0, 4, 8, 9, 9, ..., 9``); TSN segments ``[floor(i·L/S),
floor((i+1)·L/S))`` cover every frame and keep the order (VideoMAE's ``L // S`` segments drop the
last ``L mod S`` frames, and for ``L < S`` sample frame 0 only).

pytorchvideo's clip samplers work in seconds with the global ``random`` module, keep per-video
state and place uniform clips at ``k · max_start / num_clips`` (VideoMAE: ``/ (num_clips - 1)``);
decord's ``get_batch`` needs frame indices, so the few lines below are used instead.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "clip_span",
    "dense_indices",
    "segment_indices",
    "window_clip_starts",
    "multiview_indices",
    "union_indices",
    "crop_offsets",
]


def _check(length: int, num_frames: int) -> None:
    if length < 1:
        raise ValueError(f"video length must be >= 1, got {length}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def clip_span(num_frames: int, stride: int) -> int:
    """Number of video frames a dense clip covers: ``(num_frames - 1) * stride + 1``."""
    return (num_frames - 1) * stride + 1


def _randint(high: int, generator: Optional[torch.Generator]) -> int:
    """Uniform integer in ``[0, high]`` (inclusive) from torch's RNG."""
    return int(torch.randint(0, high + 1, (1,), generator=generator).item())


def dense_indices(
    length: int,
    num_frames: int,
    stride: int,
    start: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> np.ndarray:
    """``num_frames`` frames ``stride`` apart: ``start + i·stride``.

    Args:
        length: frames in the video ``L``.
        num_frames: clip length ``T``.
        stride: temporal stride (sampling rate).
        start: first frame; ``None`` draws it uniformly from ``[0, L - span]``. Values past the
            last valid start are clamped to it.
        generator: optional torch RNG.

    Returns:
        ``[T]`` int64; when the clip is longer than the video, frames past the end repeat the
        last frame (VideoMAE's padding).
    """
    _check(length, num_frames)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    max_start = max(length - clip_span(num_frames, stride), 0)
    if start is None:
        start = _randint(max_start, generator)
    start = min(max(int(start), 0), max_start)
    idx = start + np.arange(num_frames, dtype=np.int64) * stride
    return np.minimum(idx, length - 1)


def segment_indices(
    length: int,
    num_segments: int,
    offset: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> np.ndarray:
    """TSN sampling: one frame from each of ``num_segments`` (near-)equal segments.

    Segment ``i`` is the integer frame range ``[b_i, b_{i+1})`` with ``b_i = floor(i·L/S)``;
    the frame is ``b_i + floor(u_i · (b_{i+1} - b_i))`` (``b_i`` when the segment is empty,
    which happens only for ``L < S``).

    Args:
        length: frames in the video ``L``.
        num_segments: ``S`` (= clip length, 16 for SSv2).
        offset: relative position ``u`` in ``[0, 1)`` used for every segment (0.5 = centre,
            validation); ``None`` draws an independent ``u_i`` per segment (training).
        generator: optional torch RNG.

    Returns:
        ``[S]`` int64, non-decreasing; strictly increasing when ``L >= S`` (segments are
        disjoint and non-empty); for ``L < S`` every frame appears.
    """
    _check(length, num_segments)
    bounds = (np.arange(num_segments + 1, dtype=np.int64) * length) // num_segments
    seg_len = np.diff(bounds)
    if offset is None:
        u = torch.rand(num_segments, generator=generator, dtype=torch.float64).numpy()
    else:
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"segment offset must be in [0, 1), got {offset}")
        u = np.full(num_segments, float(offset))
    idx = bounds[:-1] + np.floor(u * seg_len).astype(np.int64)
    return np.clip(idx, 0, length - 1)


def window_clip_starts(length: int, span: int, num_clips: int) -> List[int]:
    """Start frames of ``num_clips`` windows of ``span`` frames spread uniformly over the video.

    ``start_k = round(k · (L - span) / (num_clips - 1))``: the first clip starts at frame 0 and
    the last one ends at the last frame (VideoMAE's K400 test); one clip is centred. For a video
    shorter than ``span`` every clip starts at 0.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    max_start = max(length - span, 0)
    if num_clips == 1:
        return [max_start // 2]
    return [int(round(k * max_start / (num_clips - 1))) for k in range(num_clips)]


def multiview_indices(
    length: int,
    num_frames: int,
    num_clips: int,
    mode: str = "window",
    stride: int = 4,
) -> np.ndarray:
    """Frame indices of every test clip.

    Args:
        length: frames in the video.
        num_frames: clip length ``T``.
        num_clips: number of temporal clips ``K`` (SSv2 2, K400 5).
        mode: ``"window"`` (dense clips at ``stride``, starts from :func:`window_clip_starts`) or
            ``"segments"`` (TSN segments; clip ``k`` takes relative offset ``(k + 0.5) / K`` in
            every segment, so one clip takes segment centres and several clips interleave).
        stride: temporal stride for ``"window"``.

    Returns:
        ``[K, T]`` int64.
    """
    if mode == "window":
        starts = window_clip_starts(length, clip_span(num_frames, stride), num_clips)
        return np.stack([dense_indices(length, num_frames, stride, start=s) for s in starts])
    if mode == "segments":
        return np.stack([segment_indices(length, num_frames, offset=(k + 0.5) / num_clips) for k in range(num_clips)])
    raise ValueError(f"unknown sampling mode {mode!r}; expected 'window' or 'segments'")


def union_indices(clips: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Frames to decode once for several clips, and where each clip's frames are in them.

    Args:
        clips: ``[K, T]`` frame indices.

    Returns:
        ``(unique, positions)``: ``unique`` ``[U]`` sorted distinct frames (one ``get_batch``),
        ``positions`` ``[K, T]`` with ``unique[positions] == clips``.
    """
    unique, inverse = np.unique(clips, return_inverse=True)
    return unique, inverse.reshape(clips.shape)


def crop_offsets(extent: int, crop: int, num_crops: int) -> List[int]:
    """Offsets of ``num_crops`` crops of size ``crop`` along an axis of size ``extent``.

    3 crops: start / centre / end (left-centre-right or top-centre-bottom); 1 crop: centre;
    generally ``round(k · (extent - crop) / (num_crops - 1))``.
    """
    if crop > extent:
        raise ValueError(f"crop {crop} larger than the image extent {extent}")
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    if num_crops == 1:
        return [(extent - crop) // 2]
    return [int(round(k * (extent - crop) / (num_crops - 1))) for k in range(num_crops)]


def apply_range(indices: np.ndarray, start: int) -> np.ndarray:
    """Shift clip indices computed on a sub-range starting at ``start`` (V2 list form)."""
    return indices + int(start) if start else indices


def usable_length(num_frames: int, start: int, total: int) -> int:
    """Frames usable from ``start`` on: ``total`` when given (> 0), else to the end."""
    avail = num_frames - int(start)
    if total > 0:
        avail = min(avail, int(total))
    return avail
