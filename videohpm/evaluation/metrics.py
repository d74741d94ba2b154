"""Classification metrics of the multi-view protocol (VideoMAE / HPM journal Tables 13–14).

Per video the softmax of each view (clip × crop) is averaged — not the logits — exactly as
VideoMAE's `merge` does; top-k accuracy and the mean per-class accuracy are then computed on
the averaged probabilities.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch

from videohpm.accuracy import topk_correct

__all__ = ["average_view_softmax", "topk_correct", "topk_accuracy", "mean_class_accuracy", "classification_metrics"]


def average_view_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Video-level probabilities from per-view logits.

    Args:
        logits: `[B, V, K]` logits of the V views (clips × crops) of each of B videos.
    Returns:
        `[B, K]` = mean over views of `softmax(logits, -1)`, computed in float32.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, V, K], got {tuple(logits.shape)}")
    return logits.float().softmax(dim=-1).mean(dim=1)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
    """Top-k accuracy in percent for each k in `ks` (`scores: [B, K]`, `labels: [B]`)."""
    if scores.shape[0] == 0:
        return {int(k): float("nan") for k in ks}
    return {int(k): 100.0 * topk_correct(scores, labels, k).double().mean().item() for k in ks}


def mean_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: Optional[int] = None) -> float:
    """Mean over the classes present in `labels` of the per-class top-1 accuracy (percent).

    Classes with no sample are left out of the mean (their accuracy is undefined).
    """
    if labels.numel() == 0:
        return float("nan")
    k = int(num_classes) if num_classes is not None else int(labels.max().item()) + 1
    labels = labels.long()
    total = torch.bincount(labels, minlength=k).double()
    hits = torch.bincount(labels, weights=(pred.long() == labels).double(), minlength=k)
    present = total > 0
    return 100.0 * (hits[present] / total[present]).mean().item()


def classification_metrics(probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> Dict[str, float]:
    """`{"top1", "top5", "mean_class_acc", "num_videos"}` of video-level `probs: [n, K]`."""
    p = torch.as_tensor(np.asarray(probs) if not isinstance(probs, torch.Tensor) else probs).float()
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).long()
    acc = topk_accuracy(p, y, (1, 5))
    mca = mean_class_accuracy(p.argmax(-1), y, p.shape[-1]) if p.shape[0] else float("nan")
    return {"top1": acc[1], "top5": acc[5], "mean_class_acc": mca, "num_videos": int(p.shape[0])}
