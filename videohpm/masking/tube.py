"""``tube``: VideoMAE's tube masking — one spatial mask shared by every time slice."""
from __future__ import annotations

import torch

from .base import Grid, SliceMaskGenerator, register_mask_generator, topk_mask, uniform_noise


@register_mask_generator("tube")
class TubeMaskGenerator(SliceMaskGenerator):
    """Random spatial mask of ``int(γ·H'·W')`` tokens per sample, repeated over all T' slices.

    Sharing the mask along time removes the "copy from the neighbouring frame" shortcut that
    temporal redundancy offers (VideoMAE). The per-slice count ``int(γ·n_s)``, ``n_s = H'·W'``,
    is VideoMAE's ``TubeMaskingGenerator`` formula; per sample ``T'·int(γ·n_s)`` are masked.
    """

    def __init__(self, mask_ratio: float = 0.9) -> None:
        super().__init__(mask_ratio)

    def _generate(self, grid: Grid, *, scores, progress, device, generator) -> torch.Tensor:
        B, T, H, W = grid
        noise = uniform_noise((B, H * W), device, generator)  # [B, n_s]
        spatial = topk_mask(noise, self.num_masked_per_slice(grid))  # [B, n_s]
        # time-major flattening: index = τ·n_s + s  →  repeat the spatial mask T' times.
        return spatial.unsqueeze(1).expand(B, T, H * W).reshape(B, T * H * W)
