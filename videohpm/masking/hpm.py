"""``hpm``: HPM's easy-to-hard masking guided by teacher-predicted losses.

The HPM journal version §3.4 (Eq. 8) and the HPM supplement Alg. S1. At progress ``t/T`` a fraction
``α_t = α_0 + (t/T)·(α_T − α_0)`` (Eq. 8) of the masked patches is chosen by the teacher's
predicted reconstruction loss ``L̂^t`` (the hardest ones, ``argmax``), the rest at random.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .base import (
    Grid,
    RowMaskGenerator,
    check_per_frame,
    check_ratio,
    check_scores,
    parse_grid,
    register_mask_generator,
    topk_mask,
    uniform_noise,
)

_MODES = ("argmax", "argmin")


@register_mask_generator("hpm")
class HPMMaskGenerator(RowMaskGenerator):
    """Easy-to-hard mask from per-token scores (teacher-predicted losses), HPM journal Eq. 8.

    Within each *row* of ``n`` tokens (see below), with ``k`` tokens to mask:

    1. ``p = int(n · γ · α_t)`` tokens with the highest score are masked (Alg. S1's
       ``len_pred``; ``mode="argmin"`` masks the lowest instead, the "easy" ablation of
       Tab. 3/10);
    2. the remaining ``k − p`` masked tokens are drawn uniformly at random from the other
       ``n − p`` tokens.

    Rows: for video (T' > 1) with ``per_frame=True`` (default) each time slice is a row,
    ``n = n_s = H'·W'`` and ``k = int(γ·n_s)`` as ``frame``/``tube`` (HPM journal §1: "the mask of
    each frame is generated independently"); for images (T' = 1) or ``per_frame=False`` the
    row is the whole sample, ``n = N`` and ``k = N − int(N·(1−γ))`` as ``random`` / Alg. S1.
    Hence α_t = 0 reproduces ``frame`` (video) / ``random`` (image) exactly in distribution.

    Both steps are one ``topk`` each on ``[rows, n]``: the top-p score positions get a key of
    2 (above any ``U[0, 1)`` noise), every other position its noise, and the ``k`` largest
    keys are masked. Ties among scores are broken by ``topk`` (arbitrary but deterministic).

    Args:
        mask_ratio: γ ∈ (0, 1).
        alpha_0: α at progress 0, in [0, 1].
        alpha_T: α at progress 1, in [0, 1]; ``alpha_0 > alpha_T`` gives hard-to-easy.
        mode: ``"argmax"`` (mask hard patches, the method) or ``"argmin"`` (mask easy ones).
        per_frame: per time-slice selection for video (default True); False = over all N.
    """

    needs_scores = True

    def __init__(
        self,
        mask_ratio: float = 0.9,
        alpha_0: float = 0.0,
        alpha_T: float = 0.5,
        mode: str = "argmax",
        per_frame: bool = True,
    ) -> None:
        super().__init__(mask_ratio)
        self.alpha_0 = check_ratio(alpha_0, "alpha_0", low_open=False, high_open=False)
        self.alpha_T = check_ratio(alpha_T, "alpha_T", low_open=False, high_open=False)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        self.mode = mode
        self.per_frame = check_per_frame(per_frame)

    # -- schedule ----------------------------------------------------------------------
    def alpha(self, progress: Optional[float]) -> float:
        """α_t = α_0 + progress·(α_T − α_0) (Eq. 8, ``progress = t/T`` ∈ [0, 1])."""
        if progress is None:
            if self.alpha_0 == self.alpha_T:
                return self.alpha_0
            raise ValueError(
                "hpm mask generator needs progress (training progress in [0, 1]) because "
                f"alpha_0={self.alpha_0} != alpha_T={self.alpha_T}"
            )
        p = float(progress)
        if not (-1e-6 <= p <= 1 + 1e-6):
            raise ValueError(f"progress must be in [0, 1], got {progress!r}")
        p = min(max(p, 0.0), 1.0)
        return self.alpha_0 + p * (self.alpha_T - self.alpha_0)

    # -- counts ------------------------------------------------------------------------
    def num_hard_per_row(self, grid: Sequence[int], progress: Optional[float]) -> int:
        """``p = int(n·γ·α_t)``: tokens per row masked by score (Alg. S1 ``len_pred``).

        When this is 0 the mask is purely random and ``scores`` may be omitted, letting a
        recipe skip the teacher forward pass.
        """
        g = parse_grid(grid)
        _, n = self._rows(g)
        p = int(n * self.mask_ratio * self.alpha(progress))
        return min(p, self.num_masked_per_row(g))

    # -- sampling ----------------------------------------------------------------------
    def _generate(
        self,
        grid: Grid,
        *,
        scores: Optional[torch.Tensor],
        progress: Optional[float],
        device: torch.device,
        generator: Optional[torch.Generator],
    ) -> torch.Tensor:
        B, T, H, W = grid
        rows, n = self._rows(grid)
        k = self.num_masked_per_row(grid)
        p = self.num_hard_per_row(grid, progress)
        keys = uniform_noise((rows, n), device, generator)  # [rows, n] in [0, 1)
        if p > 0:
            if scores is None:
                raise ValueError(
                    f"hpm mask generator needs scores [B, N] (teacher-predicted losses) at "
                    f"alpha={self.alpha(progress):.4f}: {p} token(s) per row are chosen by score"
                )
            s = check_scores(scores, grid).to(device).reshape(rows, n)  # time-major → rows
            top = s.topk(p, dim=1, largest=self.mode == "argmax", sorted=False).indices
            keys.scatter_(1, top, 2.0)  # always within the k largest keys (p ≤ k)
        return topk_mask(keys, k).view(B, T * H * W)

    def extra_repr(self) -> str:
        return (
            f"mask_ratio={self.mask_ratio}, alpha_0={self.alpha_0}, alpha_T={self.alpha_T}, "
            f"mode={self.mode!r}, per_frame={self.per_frame}"
        )
