"""Mask strategies behind one interface (docs/ARCHITECTURE.md, ``videohpm.masking``).

``make_mask_generator(name, **cfg)`` returns an object called as
``gen(grid=(B, T', H', W'), scores=None, progress=None, device=None, generator=None)``
that returns a bool mask ``[B, N]`` (True = masked, time-major token order).

Names: ``random`` (MAE), ``tube`` (VideoMAE), ``frame`` (per-frame random), ``hpm``
(easy-to-hard, HPM journal Eq. 8 / Alg. S1), ``importance`` (ccMIM Eq. 4–6),
``running_cell`` (VideoMAE V2's decoder mask; see :mod:`.running_cell`), ``adamae`` (visible
tokens drawn from a learned categorical, AdaMAE §3).
"""
from .base import (
    MaskGenerator,
    RowMaskGenerator,
    SliceMaskGenerator,
    available_mask_generators,
    make_mask_generator,
    register_mask_generator,
)
from .adamae import AdaMAEMaskGenerator
from .frame import FrameMaskGenerator
from .hpm import HPMMaskGenerator
from .importance import ImportanceMaskGenerator, cls_attention_importance
from .random import RandomMaskGenerator
from .running_cell import RunningCellMaskGenerator, decoder_token_ids, num_decoded
from .tube import TubeMaskGenerator

__all__ = [
    "MaskGenerator",
    "RowMaskGenerator",
    "SliceMaskGenerator",
    "available_mask_generators",
    "make_mask_generator",
    "register_mask_generator",
    "RandomMaskGenerator",
    "TubeMaskGenerator",
    "FrameMaskGenerator",
    "AdaMAEMaskGenerator",
    "HPMMaskGenerator",
    "ImportanceMaskGenerator",
    "cls_attention_importance",
    "RunningCellMaskGenerator",
    "decoder_token_ids",
    "num_decoded",
]
