"""``frame``: an independent random mask in every time slice (same count per slice)."""
from __future__ import annotations

import torch

from .base import Grid, SliceMaskGenerator, register_mask_generator, topk_mask, uniform_noise


@register_mask_generator("frame")
class FrameMaskGenerator(SliceMaskGenerator):
    """Per-frame random masking: ``int(γ·n_s)`` tokens masked in each slice, drawn independently.

    Same per-slice count as ``tube`` (VideoMAE's ``int(γ·n_s)``, ``n_s = H'·W'``) so the two are
    directly comparable; this is the α = 0 limit of HPM's per-frame masking (HPM journal §1:
    "the mask of each frame is generated independently").
    """

    def __init__(self, mask_ratio: float = 0.9) -> None:
        super().__init__(mask_ratio)

    def _generate(self, grid: Grid, *, scores, progress, device, generator) -> torch.Tensor:
        B, T, H, W = grid
        noise = uniform_noise((B * T, H * W), device, generator)  # one row per (sample, slice)
        return topk_mask(noise, self.num_masked_per_slice(grid)).view(B, T * H * W)
