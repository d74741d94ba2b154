"""``random``: MAE's per-sample uniform random masking over all N tokens."""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Grid, MaskGenerator, global_count, parse_grid, register_mask_generator, topk_mask, uniform_noise


@register_mask_generator("random")
class RandomMaskGenerator(MaskGenerator):
    """Uniformly random mask over all ``N = T'·H'·W'`` tokens, independently per sample.

    Counts follow MAE's ``len_keep = int(N·(1−γ))`` visible tokens, i.e.
    ``N − int(N·(1−γ))`` masked tokens per sample (also the count of HPM supplement, Alg. S1).
    Video tokens are treated like image tokens (MAE-ST style "spacetime-agnostic" masking).
    """

    def __init__(self, mask_ratio: float = 0.75) -> None:
        super().__init__(mask_ratio)

    def num_masked_per_sample(self, grid: Sequence[int]) -> int:
        B, T, H, W = parse_grid(grid)
        return global_count(T * H * W, self.mask_ratio)

    def _generate(self, grid: Grid, *, scores, progress, device, generator) -> torch.Tensor:
        B, T, H, W = grid
        N = T * H * W
        noise = uniform_noise((B, N), device, generator)  # [B, N]
        return topk_mask(noise, self.num_masked_per_sample(grid))
