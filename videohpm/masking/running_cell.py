"""``running_cell``: VideoMAE V2's decoder mask ("dual masking"), and the choice of the tokens
the decoder reconstructs.

VideoMAE V2 (Wang et al., CVPR 2023, §3.2) lets the pixel decoder see only part of the masked
tokens: its decoder-attention cost is quadratic in the number of tokens it processes, which for
a plain VideoMAE step is the largest single cost (≈ N tokens vs ≈ 0.1·N in the encoder). The
decoder mask is a *running cell*: the H'×W' grid is tiled with 2×2 cells; in every cell the
same ``k = int(4·ρ_d)`` positions are hidden from the decoder, and the pattern is a cyclic shift
of ``[1]*k + [0]*(4−k)`` over the 4 cell positions (row-major ``j = 2·(h mod 2) + (w mod 2)``)
that advances by one position per time slice. Every sample draws a random starting phase. So
each cell keeps exactly ``4 − k`` decoder-visible positions in every slice, and a position
hidden in one slice becomes visible in the next — over 4 slices every position is reconstructed
(for ρ_d = 0.5, each exactly twice).

:func:`decoder_token_ids` intersects it with the encoder mask: the recipe's decoder then gets
the visible latents plus mask tokens at exactly ``K`` encoder-masked positions per sample (the
same ``K`` in every sample, so all shapes are static), and the reconstruction loss is computed
on those ``K`` tokens only.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .base import Grid, MaskGenerator, check_ratio, parse_grid, register_mask_generator, topk_mask, uniform_noise

__all__ = ["RunningCellMaskGenerator", "decoder_token_ids", "num_decoded"]


@register_mask_generator("running_cell")
class RunningCellMaskGenerator(MaskGenerator):
    """Running-cell decoder mask: bool ``[B, N]``, True = hidden from the *decoder*.

    Args:
        mask_ratio: decoder mask ratio ρ_d; ``k = int(4·ρ_d)`` of the 4 positions of every 2×2
            cell are hidden, so ρ_d must give ``0 < k < 4`` (ρ_d ∈ [0.25, 0.75]; 0.5 in V2).

    Requires even H' and W' (whole cells), so that every sample hides exactly
    ``k·T'·H'·W'/4`` tokens (the interface's fixed-count contract).
    """

    def __init__(self, mask_ratio: float = 0.5) -> None:
        super().__init__(mask_ratio)
        self.masks_per_cell = int(4 * self.mask_ratio)
        if not 0 < self.masks_per_cell < 4:
            raise ValueError(
                f"running_cell mask_ratio must hide 1..3 of the 4 positions of a 2x2 cell "
                f"(mask_ratio in [0.25, 0.75]), got {mask_ratio!r} -> int(4*ratio) = {self.masks_per_cell}"
            )

    def _check_even(self, grid: Sequence[int]) -> Grid:
        g = parse_grid(grid)
        if g[2] % 2 or g[3] % 2:
            raise ValueError(f"running_cell needs an even token grid H' x W' (2x2 cells), got grid {g}")
        return g

    def num_masked_per_sample(self, grid: Sequence[int]) -> int:
        B, T, H, W = self._check_even(grid)
        return T * (H // 2) * (W // 2) * self.masks_per_cell

    def pattern(self, grid: Sequence[int], phase: torch.Tensor) -> torch.Tensor:
        """The mask for given starting phases.

        Args:
            grid: ``(B, T', H', W')``.
            phase: ``[B]`` int64 in ``[0, 4)``: the cell position where the hidden run starts
                at slice 0.
        Returns:
            bool ``[B, T'·H'·W']`` (time-major), True = hidden from the decoder.
        """
        B, T, H, W = self._check_even(grid)
        dev = phase.device
        cell = 2 * (torch.arange(H, device=dev) % 2).view(H, 1) + (torch.arange(W, device=dev) % 2).view(1, W)
        # position j of the cell at slice τ holds queue[(j − phase − τ) mod 4]; queue = [1]*k + [0]*(4−k)
        shift = (cell.view(1, 1, H, W) - phase.view(B, 1, 1, 1)
                 - torch.arange(T, device=dev).view(1, T, 1, 1)) % 4
        return (shift < self.masks_per_cell).view(B, T * H * W)

    def _generate(self, grid: Grid, *, scores, progress, device, generator) -> torch.Tensor:
        phase = (uniform_noise((grid[0],), device, generator) * 4).long().clamp_(max=3)
        return self.pattern(grid, phase)

    def extra_repr(self) -> str:
        return f"mask_ratio={self.mask_ratio}, masks_per_cell={self.masks_per_cell}"


def num_decoded(num_masked: int, decoder_mask_ratio: float) -> int:
    """``K``: encoder-masked tokens the decoder reconstructs per sample, ``int(M·(1 − ρ_d))``.

    With the running cell hiding a fraction ρ_d of every slice independently of where the
    encoder mask lies, ``M·(1 − ρ_d)`` is the expected size of (encoder-masked ∩
    decoder-visible); fixing it makes every sample decode the same number of tokens.
    """
    check_ratio(decoder_mask_ratio, "decoder_mask_ratio")
    return max(1, int(num_masked * (1.0 - decoder_mask_ratio)))


def decoder_token_ids(
    mask: torch.Tensor,
    decoder_mask: torch.Tensor,
    k: int,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Ascending indices ``[B, K]`` of the tokens the decoder reconstructs.

    The chosen tokens are always encoder-masked (``mask``); decoder-visible ones
    (``~decoder_mask``) come first. When a sample has more than ``K`` encoder-masked,
    decoder-visible tokens, ``K`` of them are kept at random; when it has fewer, the rest is
    filled with random encoder-masked, decoder-hidden tokens. One ``topk`` over
    ``2·[masked] + [decoder-visible] + noise`` does all of it on the device without a sync.

    Args:
        mask: bool ``[B, N]``, True = masked from the encoder (hidden).
        decoder_mask: bool ``[B, N]``, True = hidden from the decoder (running cell).
        k: tokens to decode per sample, ``0 < k ≤`` encoder-masked count.
    Returns:
        int64 ``[B, K]`` ascending token indices (the decoder's / loss's token order).
    """
    if mask.dtype != torch.bool or decoder_mask.dtype != torch.bool:
        raise TypeError(f"mask and decoder_mask must be bool, got {mask.dtype} and {decoder_mask.dtype}")
    if mask.dim() != 2 or mask.shape != decoder_mask.shape:
        raise ValueError(f"mask [B, N] and decoder_mask [B, N] disagree: {tuple(mask.shape)} vs "
                         f"{tuple(decoder_mask.shape)}")
    if not 0 < k <= mask.shape[1]:
        raise ValueError(f"cannot decode {k} of {mask.shape[1]} tokens")
    noise = uniform_noise(tuple(mask.shape), mask.device, generator)
    keys = 2.0 * mask.float() + (~decoder_mask).float() + noise  # masked ≥ 2 > unmasked < 2
    chosen = topk_mask(keys, k)
    # ascending indices of the chosen tokens: stable argsort puts the K True ones first, in order
    return torch.argsort((~chosen).to(torch.uint8), dim=1, stable=True)[:, :k]
