"""``data.kind: video``: VideoMAE list files (``<path> <label>`` / ``<path> <start> <total>``) of
decoded videos, with the ``data.dataset`` presets of VideoMAE's recipes (ssv2, k400, generic).

Splits: ``pretrain`` → :class:`VideoPretrainDataset` (dense clips, multi-scale crop); ``train`` /
``val`` → :class:`VideoClassificationDataset` (random / centred clip and crop; frame sampling per
``data.finetune_sampling``); ``test`` → :class:`VideoMultiViewDataset` (clips × crops).
:func:`build_eval_dataset` builds the ``val`` / ``test`` form from an already parsed list (tools
that read videos without a list file).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict

from torch.utils.data import Dataset

from ..datasets import VideoClassificationDataset, VideoClipDataset, VideoMultiViewDataset, VideoPretrainDataset
from ..lists import ListFormatError, VideoList, read_list
from ..sampling import clip_span, dense_indices, segment_indices
from ..schema import resolve
from ..transforms import eval_transform, pretrain_transform, train_transform
from .base import DataFormat, register_data_format

__all__ = ["VideoListFormat", "build_eval_dataset"]


@register_data_format("video")
class VideoListFormat(DataFormat):
    datasets = {
        "ssv2": dict(sampling_rate=2, finetune_sampling="segments", test_num_clips=2, test_num_crops=3, flip=False),
        "k400": dict(sampling_rate=4, finetune_sampling="window", test_num_clips=5, test_num_crops=3, flip=True),
        "generic": dict(sampling_rate=4, finetune_sampling="window", test_num_clips=5, test_num_crops=3, flip=True),
    }

    def build(self, cfg: Any, split: str, key: str, path: str, keep_broken: bool = False) -> Dataset:
        try:
            videos = read_list(path, cfg.data_root, num_classes=cfg.num_classes, require_labels=split != "pretrain")
        except ListFormatError as e:
            raise ListFormatError(f"data.{key}: {e}") from None
        rk = _reader_kwargs(cfg)
        flip = bool(cfg.flip)
        if split == "pretrain":
            tf = pretrain_transform(cfg.input_size, cfg.multi_scale, flip, cfg.mean, cfg.std)
            return VideoPretrainDataset(videos, _clip_sampler(cfg, split), tf, num_sample=cfg.num_sample,
                                        max_broken=cfg.max_broken, **rk)
        if split == "train":
            tf = train_transform(cfg.input_size, cfg.train_crop_scale, cfg.train_crop_ratio, flip, cfg.rand_aug,
                                 cfg.reprob, cfg.mean, cfg.std)
            return VideoClassificationDataset(videos, _clip_sampler(cfg, split), tf, num_sample=cfg.num_sample,
                                              max_broken=cfg.max_broken, **rk)
        return build_eval_dataset(cfg, videos, split, keep_broken=keep_broken)


def _reader_kwargs(cfg: Any) -> Dict[str, Any]:
    return dict(backend=cfg.backend, fallback=cfg.fallback_backend, decode_threads=cfg.decode_threads)


def _clip_sampler(cfg: Any, split: str) -> Callable:
    """The frame-index sampler of a split (a picklable partial, for spawn-based workers)."""
    if split == "pretrain":
        return partial(dense_indices, num_frames=cfg.num_frames, stride=cfg.sampling_rate)
    if cfg.finetune_sampling == "segments":
        return partial(segment_indices, num_segments=cfg.num_frames, offset=None if split == "train" else 0.5)
    if split == "train":
        return partial(dense_indices, num_frames=cfg.num_frames, stride=cfg.sampling_rate)
    return partial(_centre_window, num_frames=cfg.num_frames, stride=cfg.sampling_rate)


def _centre_window(length: int, num_frames: int, stride: int):
    """Validation window clip: the centred one (deterministic)."""
    return dense_indices(length, num_frames, stride, start=max(length - clip_span(num_frames, stride), 0) // 2)


def build_eval_dataset(cfg: Any, videos: VideoList, split: str, require_labels: bool = True,
                       keep_broken: bool = False) -> Dataset:
    """The ``"val"`` (one centre clip and crop) or ``"test"`` (multi-view) video dataset of an
    already parsed list — what ``build_dataset`` returns for those splits, also used by
    ``tools/predict.py`` and ``tools/extract_features.py`` on videos that come without a list.

    ``require_labels=False`` accepts entries without a label (``label = -1``); the ``"val"``
    samples then carry no ``"label"``. ``keep_broken``: ``"val"`` samples of broken videos are
    zero clips with ``ok=False`` instead of substitutes.
    """
    cfg = resolve(cfg)
    if split == "val":
        tf = eval_transform(cfg.input_size, cfg.short_side_size, cfg.mean, cfg.std)
        cls = VideoClassificationDataset if require_labels else VideoClipDataset
        shape = (3, cfg.num_frames, cfg.input_size, cfg.input_size) if keep_broken else None
        return cls(videos, _clip_sampler(cfg, split), tf, max_broken=cfg.max_broken, broken_shape=shape,
                   **_reader_kwargs(cfg))
    if split != "test":
        raise ValueError(f"build_eval_dataset: split must be 'val' or 'test', got {split!r}")
    return VideoMultiViewDataset(
        videos,
        num_frames=cfg.num_frames,
        num_clips=cfg.test_num_clips,
        num_crops=cfg.test_num_crops,
        crop_size=cfg.input_size,
        mode=cfg.finetune_sampling,
        stride=cfg.sampling_rate,
        mean=cfg.mean,
        std=cfg.std,
        require_labels=require_labels,
        **_reader_kwargs(cfg),
    )
