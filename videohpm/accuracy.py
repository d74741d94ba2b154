"""Top-k hits, the one implementation behind every accuracy of the package: the engine's
validation (`val_acc1` / `val_acc5`), the weighted k-NN metric and the multi-view test
(`videohpm.evaluation.metrics`). A bottom-layer module (torch only), so that the engine may use
it without importing evaluation.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

__all__ = ["topk_hits", "topk_correct"]


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> Dict[int, torch.Tensor]:
    """For each k in `ks`, `[B]` bool: is `labels[b]` among the `k` highest `scores[b]`.

    One `topk` over the largest k (capped at the class count `scores.shape[-1]`); smaller ks take
    its leading columns. `scores: [B, K]`, `labels: [B]`.
    """
    kmax = min(max(int(k) for k in ks), scores.shape[-1])
    top = scores.topk(kmax, dim=-1).indices
    hit = top == labels.view(-1, 1)
    return {int(k): hit[:, :min(int(k), kmax)].any(dim=-1) for k in ks}


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """`[B]` bool: is `labels[b]` among the `k` highest `scores[b]` (`k` capped at the class count)."""
    return topk_hits(scores, labels, (k,))[int(k)]
