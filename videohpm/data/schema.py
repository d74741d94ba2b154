"""``DataConfig``: every knob of the data package, with its defaults and checks (``resolve``, ``validate``).

The dataclass holds plain types with defaults only, so ``OmegaConf.structured(DataConfig)``
works and a YAML ``data:`` section merges onto it. Fields left ``None`` take the defaults of
``dataset`` (VideoMAE's recipes) in :func:`resolve`:

==================  ==========  ==========  =========================
field               ssv2        k400        generic / imagefolder
==================  ==========  ==========  =========================
sampling_rate       2           4           4
finetune_sampling   segments    window      window
test clips × crops  2 × 3       5 × 3       5 × 3 (images: 1 × 1)
flip                False       True        True
==================  ==========  ==========  =========================

Splits: ``"pretrain"`` (list ``train``, labels not needed), ``"train"``, ``"val"`` and
``"test"`` (list ``test``, falling back to ``val``, as VideoMAE tests on validation). ``kind``
names a registered data format (:mod:`.formats`; for ``image`` the three fields are ImageFolder
roots), which also holds the dataset presets of the table.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from .formats.base import DataFormat, data_format, dataset_presets, find_data_format
from .transforms import IMAGENET_MEAN, IMAGENET_STD, parse_rand_aug
from .video import BACKENDS

__all__ = ["DataConfig", "resolve", "validate", "split_source", "SPLITS", "SAMPLINGS"]

SPLITS = ("pretrain", "train", "val", "test")
SAMPLINGS = ("segments", "window")


@dataclass
class DataConfig:
    """Data settings (``data:`` section of a run config).

    Attributes:
        kind: ``"video"`` or ``"image"`` (ImageFolder as ``T = 1`` clips).
        dataset: ``"ssv2"``, ``"k400"``, ``"generic"`` or ``"imagefolder"``; picks the sampling
            defaults (table in the module docstring). ``generic`` with ``kind="image"`` means
            ``imagefolder``.
        train, val, test: list files (video) or ImageFolder roots (image). ``test`` falls back
            to ``val``.
        data_root: prefix joined onto relative paths in the lists.
        num_classes: classes; every label must lie in ``[0, num_classes)``. Needed for the
            classification splits of video lists (image mode infers it from the folders).
        class_names: the class names in label-id order (optional; saved with the run's config,
            so ``tools/predict.py`` names its answers). Must have ``num_classes`` entries.
        num_frames: clip length ``T`` (16).
        sampling_rate: dense stride for pre-training and ``window`` fine-tuning/test clips
            (``None`` → 2 for ssv2, 4 otherwise).
        finetune_sampling: ``"segments"`` (TSN, SSv2) or ``"window"`` (dense random window,
            K400); also used for validation and test clips.
        input_size: training/validation crop side (224). Must be a multiple of the model's
            patch size, and equal to the model's ``img_size`` unless ``allow_resolution_change``.
        allow_resolution_change: run the model at another ``input_size`` than it was built for
            (its position table is interpolated to the new grid, as VideoMAE's fine-tuning at a
            higher resolution); false (default): such a config is an error before any work.
        short_side_size: validation resize of the short side before the centre crop
            (``None`` → ``input_size``). Test views are ``input_size`` crops of frames whose
            short side is resized to ``input_size``.
        test_num_clips, test_num_crops: multi-view test (``None`` → ssv2 2×3, k400 5×3).
        flip: horizontal flip in pre-training and fine-tuning (``None`` → off for ssv2).
        mean, std: normalization (ImageNet).
        multi_scale: GroupMultiScaleCrop scales of pre-training.
        train_crop_scale, train_crop_ratio: fine-tuning random resized crop.
        image_pretrain_scale: image-mode pre-training RandomResizedCrop scale (MAE: 0.2–1).
        image_crop_pct: image-mode validation centre-crop ratio (resize to ``size / pct``).
        rand_aug: timm RandAugment string for fine-tuning (``""`` disables).
        reprob: random-erasing probability in fine-tuning.
        num_sample: repeated augmentation (augmentations per decode) for pretrain/train.
        num_workers: DataLoader workers (read by the engine).
        persistent_workers: keep the training loader's workers alive between epochs (saves a
            worker start per epoch: worth it for short epochs; the augmentations do
            not change, they are seeded per sample and epoch).
        decode_threads: decoder threads per video (decord ``num_threads``).
        backend: ``"decord"`` or ``"pyav"``; fallback_backend: tried when it fails (``None``: off).
        max_broken: consecutive broken videos tolerated per training sample before aborting.
    """

    kind: str = "video"
    dataset: str = "generic"
    train: Optional[str] = None
    val: Optional[str] = None
    test: Optional[str] = None
    data_root: str = ""
    num_classes: Optional[int] = None
    class_names: Optional[List[str]] = None
    num_frames: int = 16
    sampling_rate: Optional[int] = None
    finetune_sampling: Optional[str] = None
    input_size: int = 224
    allow_resolution_change: bool = False
    short_side_size: Optional[int] = None
    test_num_clips: Optional[int] = None
    test_num_crops: Optional[int] = None
    flip: Optional[bool] = None
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
    multi_scale: List[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])
    train_crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    train_crop_ratio: List[float] = field(default_factory=lambda: [0.75, 4.0 / 3.0])
    image_pretrain_scale: List[float] = field(default_factory=lambda: [0.2, 1.0])
    image_crop_pct: float = 0.875
    rand_aug: Optional[str] = "rand-m7-n4-mstd0.5-inc1"
    reprob: float = 0.25
    num_sample: int = 1
    num_workers: int = 8
    persistent_workers: bool = False
    decode_threads: int = 1
    backend: str = "decord"
    fallback_backend: Optional[str] = "pyav"
    max_broken: int = 10


def _as_dataclass(cfg: Any) -> DataConfig:
    if isinstance(cfg, DataConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, dict):
        known = {f.name for f in dataclasses.fields(DataConfig)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"data: unknown key(s) {unknown}")
        return DataConfig(**cfg)
    raise TypeError(f"data: expected DataConfig, dict or DictConfig, got {type(cfg).__name__}")


def resolve(cfg: Any) -> DataConfig:
    """A copy of ``cfg`` with the ``None`` fields filled from the dataset's defaults."""
    cfg = _as_dataclass(cfg)
    fmt = find_data_format(cfg.kind)
    if cfg.dataset == "generic" and fmt is not None:  # the default dataset, per format
        cfg = dataclasses.replace(cfg, dataset=fmt.default_dataset)
    presets = dataset_presets()
    if cfg.dataset not in presets:
        raise ValueError(f"data.dataset: unknown dataset {cfg.dataset!r}; expected one of {tuple(presets)}")
    updates = {k: v for k, v in presets[cfg.dataset].items() if getattr(cfg, k) is None}
    if cfg.short_side_size is None:
        updates["short_side_size"] = cfg.input_size
    return dataclasses.replace(cfg, **updates)


def _check_path(key: str, path: Optional[str], want_dir: bool) -> str:
    if not path:
        raise ValueError(f"data.{key}: not set")
    if want_dir and not os.path.isdir(path):
        raise FileNotFoundError(f"data.{key}: folder not found: {path}")
    if not want_dir and not os.path.isfile(path):
        raise FileNotFoundError(f"data.{key}: file not found: {path}")
    return path


def split_source(cfg: DataConfig, split: str) -> Tuple[str, Optional[str]]:
    """``(config key, path)`` of the list / folder a split reads."""
    if split in ("pretrain", "train"):
        return "train", cfg.train
    if split == "val":
        return "val", cfg.val
    if cfg.test:
        return "test", cfg.test
    return "val", cfg.val  # VideoMAE tests on the validation list


def _check_values(cfg: DataConfig) -> None:
    """Every value check of a resolved config that needs no file (messages name the key)."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"data.backend: {cfg.backend!r} is not one of {BACKENDS}")
    if cfg.fallback_backend is not None and cfg.fallback_backend not in BACKENDS:
        raise ValueError(f"data.fallback_backend: {cfg.fallback_backend!r} is not one of {BACKENDS} or null")
    if cfg.finetune_sampling not in SAMPLINGS:
        raise ValueError(f"data.finetune_sampling: {cfg.finetune_sampling!r} is not one of {SAMPLINGS}")
    for key in ("num_frames", "sampling_rate", "input_size", "short_side_size", "test_num_clips",
                "test_num_crops", "num_sample", "decode_threads", "max_broken"):
        if int(getattr(cfg, key)) < 1:
            raise ValueError(f"data.{key}: must be >= 1, got {getattr(cfg, key)}")
    if cfg.num_workers < 0:
        raise ValueError(f"data.num_workers: must be >= 0, got {cfg.num_workers}")
    if cfg.short_side_size < cfg.input_size:
        raise ValueError(f"data.short_side_size: {cfg.short_side_size} < data.input_size {cfg.input_size}")
    if cfg.num_classes is not None and cfg.num_classes < 1:
        raise ValueError(f"data.num_classes: must be >= 1, got {cfg.num_classes}")
    if cfg.class_names is not None:
        names = list(cfg.class_names)
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(f"data.class_names: needs non-empty strings, got {names[:5]}")
        if cfg.num_classes is not None and len(names) != cfg.num_classes:
            raise ValueError(f"data.class_names: {len(names)} names but data.num_classes={cfg.num_classes}")
    for key in ("mean", "std"):
        if len(getattr(cfg, key)) != 3:
            raise ValueError(f"data.{key}: needs 3 values (RGB), got {list(getattr(cfg, key))}")
    for key in ("train_crop_scale", "train_crop_ratio", "image_pretrain_scale"):
        lo_hi = list(getattr(cfg, key))
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            raise ValueError(f"data.{key}: needs [low, high] with 0 < low <= high, got {lo_hi}")
    if not 0 <= cfg.reprob <= 1:
        raise ValueError(f"data.reprob: must be in [0, 1], got {cfg.reprob}")
    try:
        parse_rand_aug(cfg.rand_aug)
    except ValueError as e:
        raise ValueError(f"data.{e}") from None


def _check_split(cfg: DataConfig, fmt: DataFormat, split: str) -> None:
    """The split's list / folder exists, and its labels can be checked."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    key, path = split_source(cfg, split)
    if split == "test" and not path:
        raise ValueError("data.test: not set (and no data.val to fall back on)")
    _check_path(key, path, want_dir=fmt.source_is_dir)
    if fmt.needs_num_classes and split != "pretrain" and cfg.num_classes is None:
        raise ValueError(f"data.num_classes: must be set for the {split!r} split (labels are checked against it)")


def validate(cfg: Any, split: Optional[str] = None) -> DataConfig:
    """Resolve and check ``cfg`` (and, with ``split``, that its list / folder exists).

    Raises:
        ValueError / FileNotFoundError naming the key, e.g. ``data.train: file not found: ...``.
    """
    cfg = resolve(cfg)
    fmt = data_format(cfg.kind)
    if cfg.dataset not in fmt.datasets:
        raise ValueError(f"data.dataset: {cfg.dataset!r} does not go with data.kind={cfg.kind!r} "
                         f"(kind={cfg.kind} takes dataset {' / '.join(fmt.datasets)})")
    _check_values(cfg)
    if split is not None:
        _check_split(cfg, fmt, split)
    return cfg
