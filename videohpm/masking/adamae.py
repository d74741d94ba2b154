"""``adamae``: AdaMAE's adaptive masking — visible tokens sampled from a learned categorical.

AdaMAE (Bandara et al., *AdaMAE: Adaptive Masking for Efficient Spatiotemporal Learning with
Masked Autoencoders*, CVPR 2023, §3): a token sampling network maps all tokens to a categorical
distribution ``p = Softmax(Linear(MHA(X)))`` over the N space-time tokens; the ``N_v`` *visible*
tokens are drawn from it **without replacement** and every other token is masked. The network
itself lives in the recipe (:mod:`videohpm.methods.adamae`); this strategy turns its
probabilities (``scores``) into the mask.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import Grid, MaskGenerator, check_scores, global_count, parse_grid, register_mask_generator, \
    topk_mask, uniform_noise

_TINY = 1e-30


def gumbel_keys(probs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Keys ``log p + G``, ``G ~ Gumbel(0, 1)`` i.i.d., for ``probs: [rows, n]`` (float32).

    The ``k`` largest keys of a row are a draw of ``k`` distinct indices from the categorical
    ``p`` *without replacement* (sequentially: draw one ∝ p, remove it, renormalise, repeat) —
    the Gumbel-top-k trick, the same law as ``torch.multinomial(p, k, replacement=False)`` (the
    official AdaMAE code's call), here with one ``topk``, no host sync, and a ``generator``.
    """
    u = uniform_noise(tuple(probs.shape), probs.device, generator)
    gumbel = -(-u.clamp_min(_TINY).log()).log()
    return probs.float().clamp_min(_TINY).log() + gumbel


@register_mask_generator("adamae")
class AdaMAEMaskGenerator(MaskGenerator):
    """Mask from AdaMAE's token distribution ``scores = p: [B, N]`` (rows sum to 1).

    Per sample, ``N_v = int(N·(1 − γ))`` visible tokens (the official code's
    ``visible_patches = int(num_patches·(1 − mask_ratio))``, 78 of 1568 at γ = 0.95) are drawn
    from ``p`` without replacement (:func:`gumbel_keys`); the other ``N − N_v`` are masked, so
    every sample masks exactly the same count. Selection is over all N tokens (not per frame):
    AdaMAE lets the distribution put more visible tokens in some frames than in others.

    ``scores`` carry no gradient into the mask (the draw is discrete): the sampling network
    learns through the recipe's sampling objective only.

    Args:
        mask_ratio: γ ∈ (0, 1); 0.95 by default, as the paper.
    """

    needs_scores = True

    def __init__(self, mask_ratio: float = 0.95) -> None:
        super().__init__(mask_ratio)

    def num_masked_per_sample(self, grid) -> int:
        B, T, H, W = parse_grid(grid)
        return global_count(T * H * W, self.mask_ratio)

    def _generate(self, grid: Grid, *, scores, progress, device, generator) -> torch.Tensor:
        if scores is None:
            raise ValueError("adamae mask generator needs scores [B, N] (the sampling network's "
                             "token probabilities)")
        B, T, H, W = grid
        n = T * H * W
        p = check_scores(scores, grid).to(device)
        n_vis = n - self.num_masked_per_sample(grid)
        visible = topk_mask(gumbel_keys(p, generator), n_vis)  # [B, N], exactly n_vis True per row
        return ~visible
