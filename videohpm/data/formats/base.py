"""The data-format registry: one class per way data is stored (``data.kind``), one decorator.

A format says what the rest of the code asks of a ``kind`` — whether its clips are videos
(``data.num_frames`` frames) or single images (``T = 1``), whether a split's source is a list file
or a folder, whether labels need ``data.num_classes``, which ``data.dataset`` presets (sampling
defaults) it takes — and builds a split's dataset. Adding a format (for example a WebDataset shard
reader) is one module with one ``@register_data_format("name")`` class, imported in
``formats/__init__.py``; no ``kind == "video"`` check anywhere else.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Type

from torch.utils.data import Dataset

__all__ = ["DataFormat", "register_data_format", "data_format", "find_data_format", "available_data_formats",
           "dataset_presets"]


class DataFormat:
    """One ``data.kind``: its properties and its dataset builder (stateless; one instance each)."""

    #: the ``data.kind`` it is registered under
    name: str = ""
    #: clips hold ``data.num_frames`` frames; False: one frame (``T = 1``, images)
    is_video: bool = True
    #: a split's source (``data.train`` / ``val`` / ``test``) is a folder; False: a file
    source_is_dir: bool = False
    #: the source is a VideoMAE list file (one entry per non-blank line, ``videohpm.data.lists``)
    source_is_list: bool = True
    #: the classification splits need ``data.num_classes`` (False: the source names the classes)
    needs_num_classes: bool = True
    #: the ``data.dataset`` presets it takes, name → defaults of the ``None`` fields (``resolve``)
    datasets: Dict[str, Dict[str, Any]] = {}
    #: what ``data.dataset: generic`` (the default) means for this format
    default_dataset: str = "generic"

    def frames(self, cfg: Any) -> int:
        """The clip length ``T`` of a (resolved) data config."""
        return int(cfg.num_frames) if self.is_video else 1

    def clip_shape(self, cfg: Any) -> Tuple[int, int, int, int]:
        """``(C, T, H, W)`` of one training / validation clip."""
        return (3, self.frames(cfg), int(cfg.input_size), int(cfg.input_size))

    def build(self, cfg: Any, split: str, key: str, path: str, keep_broken: bool = False) -> Dataset:
        """The dataset of ``split`` read from ``path`` (config key ``key``) of a validated config."""
        raise NotImplementedError


_REGISTRY: Dict[str, DataFormat] = {}


def register_data_format(name: str) -> Callable[[Type[DataFormat]], Type[DataFormat]]:
    """Class decorator: register a :class:`DataFormat` subclass as ``data.kind: <name>``."""

    def deco(cls: Type[DataFormat]) -> Type[DataFormat]:
        if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
            raise ValueError(f"data format {name!r} is already registered by {type(_REGISTRY[name])!r}")
        cls.name = name
        _REGISTRY[name] = cls()
        return cls

    return deco


def available_data_formats() -> Tuple[str, ...]:
    """The registered ``data.kind`` names, in registration order."""
    return tuple(_REGISTRY)


def data_format(kind: str) -> DataFormat:
    """The format registered as ``kind``; ValueError naming ``data.kind`` and the choices."""
    if kind not in _REGISTRY:
        raise ValueError(f"data.kind: {kind!r} is not one of {available_data_formats()}")
    return _REGISTRY[kind]


def find_data_format(kind: str) -> Optional[DataFormat]:
    """The format registered as ``kind``, None for an unknown one (checks that collect problems)."""
    return _REGISTRY.get(kind)


def dataset_presets() -> Dict[str, Dict[str, Any]]:
    """Every format's ``data.dataset`` presets, name → defaults (registration order)."""
    return {name: defaults for fmt in _REGISTRY.values() for name, defaults in fmt.datasets.items()}
