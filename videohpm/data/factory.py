"""``build_dataset(cfg, split)`` and ``build_collate``: a validated :class:`~.schema.DataConfig`
to the dataset of a split, through the registered data format of ``data.kind`` (:mod:`.formats`)."""
from __future__ import annotations

from typing import Any, Callable

from torch.utils.data import Dataset

from .datasets import collate
from .formats import data_format
from .schema import SPLITS, split_source, validate

__all__ = ["build_dataset", "build_collate"]


def build_dataset(cfg: Any, split: str, keep_broken: bool = False) -> Dataset:
    """The dataset of a split.

    Args:
        cfg: :class:`DataConfig` (or a dict / OmegaConf node with its keys).
        split: ``"pretrain"``, ``"train"``, ``"val"`` or ``"test"``; what each builds is the
            format's (``video``: :mod:`.formats.video_list`, ``image``: :mod:`.formats.image_folder`).
        keep_broken: ``"val"`` samples of broken videos are zero clips with ``ok=False`` instead of
            substitutes (validation during training scores only the real videos).

    Raises:
        ValueError / FileNotFoundError / ListFormatError with the config key in the message.
    """
    cfg = validate(cfg, split)
    key, path = split_source(cfg, split)
    return data_format(cfg.kind).build(cfg, split, key, path, keep_broken)


def build_collate(cfg: Any = None, split: str = "train") -> Callable:
    """The DataLoader ``collate_fn`` for a split (:func:`videohpm.data.datasets.collate` handles
    every sample kind: multi-view test batches keep ``ok`` / ``error`` per video, repeated
    augmentation is flattened)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return collate
