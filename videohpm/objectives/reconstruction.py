"""Reconstruction objective L_rec (HPM journal §3.2, Eq. 3).

``L_rec = M(d_φ(f_θ(x ⊙ M)), T(x ⊙ (1 − M)))`` with M the (normalized) ℓ2 distance of
MAE/VideoMAE: the squared error averaged over each patch vector gives a per-patch loss
``[B, N_masked]`` (which HPM's loss predictor learns to rank, Eq. 5–7), and its mean over all
masked tokens is the loss.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


def select_masked(x: torch.Tensor, mask: torch.Tensor, key: str = "x", count: Optional[int] = None) -> torch.Tensor:
    """Masked tokens of ``x`` in ascending token order: ``x[mask].view(B, N_masked, ...)``.

    Args:
        x: ``[B, N, ...]`` per-token tensor.
        mask: bool ``[B, N]``, True = masked, the same count in every sample.
        count: that count, when the caller knows it (a shape of its tensors): then the tokens are
            gathered by index and no device→host sync is needed (``x[mask]`` must read the
            number of True entries before it can allocate its output).

    Returns:
        ``[B, N_masked, ...]`` (VideoMAE's convention for per-masked-token tensors).
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool [B, N], got dtype {mask.dtype}")
    if mask.dim() != 2 or tuple(x.shape[:2]) != tuple(mask.shape):
        raise ValueError(
            f"{key} [B, N, ...] and mask [B, N] disagree: {tuple(x.shape)} vs {tuple(mask.shape)}"
        )
    B = x.shape[0]
    if count is None:
        return x[mask].reshape(B, -1, *x.shape[2:])
    ids = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :count]  # masked first, ascending
    return torch.gather(x, 1, ids.view(B, count, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def per_patch_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-patch squared error averaged over the patch vector (Eq. 3 with M = ℓ2).

    Args:
        pred: ``[B, Nm, P]`` decoder output d_φ on masked tokens.
        target: ``[B, Nm, P]`` target T(x) of the same tokens (no gradient is expected;
            it is detached here so a feature target can't leak gradients).

    Returns:
        ``[B, Nm]`` float32. Computed in fp32 even under autocast: the per-patch losses are
        also the ground truth of the loss predictor, and bf16 would quantize their ranking.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"vs {tuple(target.shape)}")
    if pred.dim() != 3:
        raise ValueError(f"pred must be [B, N_masked, P], got shape {tuple(pred.shape)}")
    diff = pred.float() - target.detach().float()
    return diff.pow(2).mean(dim=-1)


class ReconstructionLoss(NamedTuple):
    """``loss``: scalar mean over masked tokens; ``per_patch``: ``[B, Nm]`` (with grad)."""

    loss: torch.Tensor
    per_patch: torch.Tensor


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None
) -> ReconstructionLoss:
    """L_rec of Eq. 3: mean of the per-patch MSE over all masked tokens of the batch.

    Args:
        pred: ``[B, Nm, P]`` reconstruction of the masked tokens (ascending token order).
        target: ``[B, Nm, P]``, or ``[B, N, P]`` for all tokens together with ``mask``.
        mask: bool ``[B, N]`` (True = masked); needed only when ``target`` covers all tokens.

    Returns:
        ``ReconstructionLoss(loss, per_patch)``; ``per_patch`` keeps its graph so that a
        recipe can detach it as the loss predictor's ground truth (Eq. 4–7).
    """
    if mask is not None and target.shape[1] != pred.shape[1]:
        target = select_masked(target, mask, key="target")
    per_patch = per_patch_mse(pred, target)
    return ReconstructionLoss(per_patch.mean(), per_patch)
