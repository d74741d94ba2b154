"""Datasets: video pre-training, classification (train/val), multi-view test, image folders.

Sample dicts (docs/ARCHITECTURE.md), plus bookkeeping fields: pre-training ``{"video": [C, T, H,
W], "index", "broken"}``; classification ``{"video", "label", "index", "broken"}`` (and ``"ok"``
where broken videos are kept); multi-view test ``{"views": [V, C, T, H, W], "label", "video_id",
"ok", "index", "error"}``. With ``num_sample = S > 1`` (repeated augmentation: one decode, S
augmentations) ``"video"`` is ``[S, C, T, H, W]``; :func:`collate` flattens it into the batch.

**Broken videos.** In training (:class:`VideoClipDataset`, :class:`ImageFolderDataset`) a file
that raises :class:`~videohpm.data.video.VideoDecodeError` (or an unreadable image) is replaced by
a *deterministic* other index, with a warning (logger ``videohpm.data``); ``"broken"`` counts the
failed attempts inside the sample, so the engine's sum of ``batch["broken"]`` is right whatever the
number of workers. ``max_broken`` consecutive failures raise :class:`BrokenVideoError` (a wrong
``data_root`` must not silently train on nothing). Evaluation never swaps: built with
``broken_shape`` (validation during training) a broken video is reported once and yields a zero
clip with ``ok=False``; in test mode (:class:`VideoMultiViewDataset`) zero views with ``ok=False``
and the reason in ``"error"``; the evaluation leaves them out of its metrics.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from torchvision import datasets as tv_datasets
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from videohpm.constants import IMAGENET_MEAN, IMAGENET_STD

from .lists import VideoList
from .sampling import multiview_indices, union_indices, usable_length
from .transforms import MultiViewTransform, frames_to_video
from .video import VideoDecodeError, VideoReader

__all__ = [
    "BrokenVideoError",
    "VideoClipDataset",
    "VideoPretrainDataset",
    "VideoClassificationDataset",
    "VideoMultiViewDataset",
    "ImageFolderDataset",
    "collate",
]

log = logging.getLogger("videohpm.data")

IndexSampler = Callable[[int], np.ndarray]  # video length -> [T] frame indices


class BrokenVideoError(RuntimeError):
    """Too many consecutive broken samples (``data.max_broken``)."""


def replacement_index(index: int, attempt: int, length: int) -> int:
    """Deterministic substitute for a broken sample: same (index, attempt) → same result."""
    return random.Random(index * 1_000_003 + attempt).randrange(length)


def _augmented_sample(video: tv_tensors.Video, transform: Callable, num_sample: int,
                      label: Optional[int]) -> Dict[str, Any]:
    """``{"video": transform(video)}``, or with ``num_sample = S > 1`` S augmentations of the one
    decode stacked ``[S, ...]``; plus ``"label"`` unless ``label`` is None."""
    if num_sample == 1:
        clip = transform(video)
    else:
        clip = torch.stack([transform(video) for _ in range(num_sample)])
    sample: Dict[str, Any] = {"video": clip}
    if label is not None:
        sample["label"] = label
    return sample


class _ReplaceBroken:
    """Mixin: load a sample, replacing broken ones (training semantics), or with ``broken_shape``
    set keeping them as ``ok=False`` zero clips (evaluation semantics)."""

    max_broken: int
    broken_shape: Optional[Sequence[int]] = None

    def _describe(self, index: int) -> str:
        raise NotImplementedError

    def _load_kept(self, index: int, load: Callable[[int], Dict[str, Any]]) -> Dict[str, Any]:
        """Sample ``index`` with ``ok=True``; a broken one as a zero clip of ``broken_shape`` with
        ``ok=False`` and ``broken=1``, its path and reason logged once per process."""
        try:
            sample = load(index)
        except (VideoDecodeError, OSError) as e:
            reason = f"{e.path}: {e.reason}" if isinstance(e, VideoDecodeError) else \
                f"{self._describe(index)}: {type(e).__name__}: {e}"
            reported = self.__dict__.setdefault("_reported", set())
            if index not in reported:
                reported.add(index)
                log.warning("broken video %d (%s); reported, not evaluated", index, reason)
            sample = {"video": torch.zeros(tuple(self.broken_shape))}  # type: ignore[arg-type]
            if getattr(self, "with_label", False):
                sample["label"] = self._label(index)
            sample.update(index=index, broken=1, ok=False)
            return sample
        sample.update(index=index, broken=0, ok=True)
        return sample

    def _label(self, index: int) -> int:
        raise NotImplementedError

    def _load_with_replacement(self, index: int, load: Callable[[int], Dict[str, Any]]) -> Dict[str, Any]:
        if self.broken_shape is not None:
            return self._load_kept(index, load)
        n = len(self)  # type: ignore[arg-type]
        current = index
        failures: List[str] = []
        for attempt in range(1, self.max_broken + 1):
            try:
                sample = load(current)
            except VideoDecodeError as e:
                reason = f"{e.path}: {e.reason}"
            except OSError as e:  # unreadable image (PIL raises OSError subclasses)
                reason = f"{self._describe(current)}: {type(e).__name__}: {e}"
            else:
                sample["index"] = current
                sample["broken"] = attempt - 1
                return sample
            failures.append(reason)
            nxt = replacement_index(index, attempt, n)
            log.warning("broken sample %d (%s); replaced by sample %d", current, reason, nxt)
            current = nxt
        raise BrokenVideoError(
            f"{self.max_broken} consecutive broken samples starting at index {index} "
            f"(data.max_broken={self.max_broken}); check data.data_root and the list with "
            f"tools/check_videos.py. Failures: " + " | ".join(failures[-3:])
        )


class VideoClipDataset(_ReplaceBroken, Dataset):
    """One clip (or ``num_sample`` augmentations of it) per video of a list.

    Args:
        videos: parsed list (:func:`videohpm.data.lists.read_list`).
        sampler: ``length -> [T]`` frame indices (e.g. ``partial(dense_indices, num_frames=16,
            stride=4)``); called on the usable length of each video.
        transform: ``Video [T, C, H, W]`` uint8 → ``[C, T, H, W]`` float.
        with_label: put ``"label"`` in the samples (classification).
        num_sample: augmentations per decode (repeated augmentation); ``> 1`` makes ``"video"``
            ``[S, C, T, H, W]``.
        backend, fallback, decode_threads: :class:`~videohpm.data.video.VideoReader` options.
        max_broken: consecutive broken videos tolerated per sample before aborting.
        broken_shape: keep broken videos as zero clips of this shape (``[C, T, H, W]``, the
            transform's output) with ``ok=False`` instead of replacing them (evaluation).
    """

    def __init__(
        self,
        videos: VideoList,
        sampler: IndexSampler,
        transform: Callable[[torch.Tensor], torch.Tensor],
        with_label: bool = False,
        num_sample: int = 1,
        backend: str = "decord",
        fallback: Optional[str] = "pyav",
        decode_threads: int = 1,
        max_broken: int = 10,
        broken_shape: Optional[Sequence[int]] = None,
    ) -> None:
        if num_sample < 1:
            raise ValueError(f"num_sample must be >= 1, got {num_sample}")
        if max_broken < 1:
            raise ValueError(f"max_broken must be >= 1, got {max_broken}")
        if with_label and not videos.has_labels:
            raise ValueError(f"{videos.source}: classification needs a label on every line")
        self.videos = videos
        self.sampler = sampler
        self.transform = transform
        self.with_label = with_label
        self.num_sample = int(num_sample)
        self.backend = backend
        self.fallback = fallback
        self.decode_threads = int(decode_threads)
        self.max_broken = int(max_broken)
        self.broken_shape = None if broken_shape is None else tuple(int(d) for d in broken_shape)

    def __len__(self) -> int:
        return len(self.videos)

    def _label(self, index: int) -> int:
        return int(self.videos.labels[index])

    def _describe(self, index: int) -> str:
        return str(self.videos.paths[index])

    def decode_clip(self, index: int) -> tv_tensors.Video:
        """Decode the sampled frames of video ``index``: ``Video [T, C, H, W]`` uint8."""
        path = str(self.videos.paths[index])
        start, total = int(self.videos.starts[index]), int(self.videos.totals[index])
        with VideoReader(path, backend=self.backend, num_threads=self.decode_threads, fallback=self.fallback) as vr:
            length = usable_length(vr.num_frames, start, total)
            if length < 1:
                raise VideoDecodeError(path, f"no frames from start_frame {start} (video has {vr.num_frames})")
            frames = vr.get_batch(self.sampler(length) + start)
        return frames_to_video(frames)

    def _load(self, index: int) -> Dict[str, Any]:
        video = self.decode_clip(index)
        label = int(self.videos.labels[index]) if self.with_label else None
        return _augmented_sample(video, self.transform, self.num_sample, label)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self._load_with_replacement(int(index), self._load)


class VideoPretrainDataset(VideoClipDataset):
    """Pre-training clips ``{"video": [C, T, H, W], "index", "broken"}`` (labels ignored)."""

    def __init__(self, videos: VideoList, sampler: IndexSampler, transform: Callable, **kwargs: Any) -> None:
        super().__init__(videos, sampler, transform, with_label=False, **kwargs)


class VideoClassificationDataset(VideoClipDataset):
    """Fine-tuning / validation clips ``{"video", "label", "index", "broken"}``."""

    def __init__(self, videos: VideoList, sampler: IndexSampler, transform: Callable, **kwargs: Any) -> None:
        super().__init__(videos, sampler, transform, with_label=True, **kwargs)


class VideoMultiViewDataset(Dataset):
    """Multi-view test: every view of a video from one decode.

    Args:
        videos: parsed, labelled list.
        num_frames: clip length ``T``.
        num_clips: temporal clips ``K`` (SSv2 2, K400 5).
        num_crops: spatial crops per clip (3 or 1).
        crop_size: view side; frames are resized so the short side equals it.
        mode: ``"window"`` (K400: dense clips at ``stride``) or ``"segments"`` (SSv2 TSN).
        stride: temporal stride for ``"window"``.
        mean, std: normalization.
        backend, fallback, decode_threads: reader options.
        require_labels: refuse entries without a label (``False``: prediction, ``label = -1``).

    Returns samples ``{"views": [K·crops, C, T, s, s], "label", "video_id", "ok", "index",
    "error"}`` (views clip-major); a broken video gives zero views, ``ok=False`` and the reason.
    """

    def __init__(
        self,
        videos: VideoList,
        num_frames: int,
        num_clips: int,
        num_crops: int,
        crop_size: int,
        mode: str = "window",
        stride: int = 4,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        backend: str = "decord",
        fallback: Optional[str] = "pyav",
        decode_threads: int = 1,
        require_labels: bool = True,
    ) -> None:
        if require_labels and not videos.has_labels:
            raise ValueError(f"{videos.source}: the test list needs a label on every line")
        if mode not in ("window", "segments"):
            raise ValueError(f"unknown sampling mode {mode!r}; expected 'window' or 'segments'")
        self.videos = videos
        self.num_frames = int(num_frames)
        self.num_clips = int(num_clips)
        self.num_crops = int(num_crops)
        self.crop_size = int(crop_size)
        self.mode = mode
        self.stride = int(stride)
        self.views = MultiViewTransform(crop_size, num_crops, mean, std)
        self.backend = backend
        self.fallback = fallback
        self.decode_threads = int(decode_threads)

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    def clip_indices(self, length: int) -> np.ndarray:
        """``[K, T]`` frame indices of the test clips of a video with ``length`` usable frames."""
        return multiview_indices(length, self.num_frames, self.num_clips, mode=self.mode, stride=self.stride)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = int(index)
        path = str(self.videos.paths[index])
        start, total = int(self.videos.starts[index]), int(self.videos.totals[index])
        sample: Dict[str, Any] = {
            "label": int(self.videos.labels[index]),
            "video_id": str(self.videos.names[index]),
            "index": index,
        }
        try:
            with VideoReader(path, backend=self.backend, num_threads=self.decode_threads, fallback=self.fallback) as vr:
                length = usable_length(vr.num_frames, start, total)
                if length < 1:
                    raise VideoDecodeError(path, f"no frames from start_frame {start}")
                unique, positions = union_indices(self.clip_indices(length))
                frames = vr.get_batch(unique + start)  # ONE decode for all views
            views = self.views(frames_to_video(frames), positions)
            sample.update(views=views, ok=True, error="")
        except VideoDecodeError as e:
            log.warning("test video %s is broken (%s); reported, not evaluated", e.path, e.reason)
            s = self.crop_size
            sample.update(views=torch.zeros(self.num_views, 3, self.num_frames, s, s), ok=False, error=e.reason)
        return sample


class ImageFolderDataset(_ReplaceBroken, Dataset):
    """A torchvision ``ImageFolder`` as ``T = 1`` clips.

    Args:
        root: folder with one sub-folder per class.
        transform: ``Video [1, C, H, W]`` uint8 → ``[C, 1, H, W]`` float.
        with_label: classification samples (else pre-training samples).
        num_classes: when given, must be at least the number of class folders.
        num_sample: augmentations per image.
        max_broken: consecutive unreadable images tolerated per sample.
        multiview: wrap the clip as ``views [1, C, 1, H, W]`` (test-split samples); needs
            ``view_size`` (the transform's output side) for the zero views of unreadable images.
        broken_shape: keep unreadable images as zero clips of this shape with ``ok=False``
            instead of replacing them (validation).
    """

    def __init__(
        self,
        root: str,
        transform: Callable[[torch.Tensor], torch.Tensor],
        with_label: bool = False,
        num_classes: Optional[int] = None,
        num_sample: int = 1,
        max_broken: int = 10,
        multiview: bool = False,
        view_size: Optional[int] = None,
        broken_shape: Optional[Sequence[int]] = None,
    ) -> None:
        if multiview and view_size is None:
            raise ValueError("ImageFolderDataset(multiview=True) needs view_size")
        self.folder = tv_datasets.ImageFolder(root)
        if num_classes is not None and len(self.folder.classes) > num_classes:
            raise ValueError(f"{root}: {len(self.folder.classes)} class folders but num_classes={num_classes}")
        self.transform = transform
        self.with_label = with_label
        self.num_sample = int(num_sample)
        self.max_broken = int(max_broken)
        self.multiview = multiview
        self.view_size = view_size
        self.broken_shape = None if broken_shape is None else tuple(int(d) for d in broken_shape)

    @property
    def classes(self) -> List[str]:
        return list(self.folder.classes)

    def __len__(self) -> int:
        return len(self.folder.samples)

    def _describe(self, index: int) -> str:
        return self.folder.samples[index][0]

    def _label(self, index: int) -> int:
        return int(self.folder.samples[index][1])

    def _load(self, index: int) -> Dict[str, Any]:
        path, label = self.folder.samples[index]
        img = self.folder.loader(path)  # PIL RGB
        video = tv_tensors.Video(F.pil_to_tensor(img).unsqueeze(0))  # [1, C, H, W] uint8
        return _augmented_sample(video, self.transform, self.num_sample, int(label) if self.with_label else None)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = int(index)
        if not self.multiview:
            return self._load_with_replacement(index, self._load)
        path, label = self.folder.samples[index]
        video_id = os.path.relpath(path, self.folder.root)
        sample: Dict[str, Any] = {"label": int(label), "video_id": video_id, "index": index}
        try:
            clip = self._load(index)["video"]
            sample.update(views=clip.unsqueeze(0), ok=True, error="")
        except OSError as e:
            log.warning("test image %s is unreadable (%s); reported, not evaluated", path, e)
            s = int(self.view_size)  # type: ignore[arg-type]
            sample.update(views=torch.zeros(1, 3, 1, s, s), ok=False, error=f"{type(e).__name__}: {e}")
        return sample


def collate(batch: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Collate any of this package's sample dicts.

    * multi-view test samples: ``views [B, V, C, T, H, W]`` (zeros for broken videos),
      ``label [B]``, ``ok [B]`` bool, ``index [B]``, ``video_id`` / ``error`` lists of str;
    * repeated augmentation (``video [S, C, T, H, W]``): flattened to ``[B·S, C, T, H, W]`` with
      ``label`` / ``index`` repeated ``S`` times; ``broken`` stays ``[B]`` (sum it);
    * otherwise ``torch.utils.data.default_collate``.
    """
    first = batch[0]
    if "views" in first:
        return {
            "views": torch.stack([b["views"] for b in batch]),
            "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
            "ok": torch.tensor([bool(b["ok"]) for b in batch], dtype=torch.bool),
            "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
            "video_id": [b["video_id"] for b in batch],
            "error": [b["error"] for b in batch],
        }
    video = first["video"]
    if video.ndim == 5:  # [S, C, T, H, W]: repeated augmentation
        s = video.shape[0]
        out: Dict[str, Any] = {"video": torch.cat([b["video"] for b in batch])}
        for key in ("label", "index"):
            if key in first:
                out[key] = torch.tensor([b[key] for b in batch], dtype=torch.long).repeat_interleave(s)
        if "broken" in first:
            out["broken"] = torch.tensor([b["broken"] for b in batch], dtype=torch.long)
        return out
    return default_collate(batch)
