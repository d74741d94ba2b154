"""How well one ranking of token scores agrees with another, row by row: the hard-patch overlap of
their top-k and Spearman's ρ. Rows are those of HPM's Eq. 8 selection (per time slice for video).
`videohpm.tasks.teacher_fidelity` uses them to compare the cheap teacher modes with the full one.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

__all__ = ["spearman_rows", "topk_overlap_rows", "score_rows", "compare", "summarize"]


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's ρ of each row pair of `a`, `b`: `[R, n]` → `[R]` (ties ranked by position)."""
    def ranks(x: torch.Tensor) -> torch.Tensor:
        r = torch.empty_like(x, dtype=torch.float64)
        return r.scatter_(1, x.argsort(dim=1, stable=True),
                          torch.arange(x.shape[1], dtype=torch.float64).expand(x.shape[0], -1).contiguous())

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)).float()


def topk_overlap_rows(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """`|top_k(a_r) ∩ top_k(b_r)| / k` per row: `[R, n]` → `[R]`."""
    if not 1 <= k <= a.shape[1]:
        raise ValueError(f"k={k} must be in [1, {a.shape[1]}]")
    hit_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(k, dim=1).indices, True)
    hit_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(k, dim=1).indices, True)
    return (hit_a & hit_b).sum(1).float() / k


def score_rows(scores: torch.Tensor, grid: Sequence[int], per_frame: bool = True) -> torch.Tensor:
    """`[B, N]` scores → the rows of Eq. 8's selection: `[B·T', H'·W']` per time slice for video
    (`per_frame`), `[B, N]` for images (T' = 1) or `per_frame=False`."""
    t, h, w = (int(g) for g in grid)
    return scores.reshape(-1, h * w) if per_frame and t > 1 else scores.reshape(scores.shape[0], -1)


def compare(full: torch.Tensor, cheap: torch.Tensor, grid: Sequence[int], num_hard: int,
            per_frame: bool = True) -> Dict[str, torch.Tensor]:
    """Per-row `overlap` and `spearman` of a cheap mode's scores against the full teacher's."""
    a, b = score_rows(full, grid, per_frame), score_rows(cheap, grid, per_frame)
    return {"overlap": topk_overlap_rows(a, b, num_hard), "spearman": spearman_rows(a, b)}


def summarize(values: List[torch.Tensor]) -> Dict[str, float]:
    """`mean` and `std` over the concatenated per-row values."""
    v = torch.cat(values).double()
    return {"mean": float(v.mean()), "std": float(v.std()) if v.numel() > 1 else 0.0}
