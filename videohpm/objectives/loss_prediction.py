"""Loss-predictor objectives L_pred of HPM (HPM journal §3.3): relative BCE (Eq. 5–7), absolute MSE (Eq. 4).

Both take the student's predicted losses ``L̂^s = d_ψ(f_θ(x ⊙ M))`` and the per-patch
reconstruction losses ``L_rec`` of the same masked tokens, ``[B, Nm]`` each in ascending
token order. ``L_rec`` is the *ground truth* here: it is always detached, so L_pred trains
only the loss predictor (and, through it, the encoder) and never pushes L_rec around.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .reconstruction import select_masked

#: Default budget of pair-matrix elements per chunk (fp32: 64 MiB per temporary, a few live at
#: once); video Nm ≈ 1411 → 8 samples per chunk.
DEFAULT_CHUNK_PAIRS = 1 << 24


def _as_per_token(x: torch.Tensor, key: str, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``[B, Nm]`` (or ``[B, N]`` + mask, or with a trailing 1-dim) → ``[B, Nm]``."""
    if x.dim() == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if mask is not None and tuple(x.shape[:2]) == tuple(mask.shape):
        # full-length input (N tokens); masked tokens are fewer than N since γ < 1.
        x = select_masked(x, mask, key=key)
    if x.dim() != 2:
        raise ValueError(f"{key} must be [B, N_masked] (or [B, N_masked, 1]), got {tuple(x.shape)}")
    return x


def _check_pair(pred: torch.Tensor, rec: torch.Tensor, mask: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    pred = _as_per_token(pred, "pred", mask)
    rec = _as_per_token(rec, "rec_loss", mask)
    if pred.shape != rec.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and rec_loss {tuple(rec.shape)} must both be [B, N_masked]"
        )
    return pred, rec


def _pairwise_bce_chunk(
    pred: torch.Tensor, rec: torch.Tensor, with_grad: bool
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Eq. 5 summed over all ordered pairs of a chunk of samples, fused with its gradient.

    pred, rec: ``[c, n]`` (same float dtype, rec detached). Returns the summed loss, the number
    of counted pairs and, if ``with_grad``, ``∂sum/∂pred`` ``[c, n]``.

    With ``z_ij = L̂_i − L̂_j``, target ``t_ij = 1⁺_ij`` and weight ``w_ij = 1⁺_ij + 1⁻_ij``,
    ``∂ℓ_ij/∂z_ij = g_ij = w_ij (σ(z_ij) − t_ij)``; as ``z_ji = −z_ij`` and ``t_ji = 1 − t_ij``
    on counted pairs, ``g_ji = −g_ij`` and so ``∂sum/∂L̂_k = Σ_j g_kj − Σ_i g_ik = 2 Σ_j g_kj``.
    """
    logits = pred.unsqueeze(2) - pred.unsqueeze(1)  # [c, n, n]: L̂_i − L̂_j
    diff = rec.unsqueeze(2) - rec.unsqueeze(1)  # [c, n, n]: L_rec(i) − L_rec(j)
    target = (diff > 0).to(logits.dtype)  # 1⁺_ij (Eq. 6); 1⁻_ij = (diff < 0) (Eq. 7)
    counted = (diff != 0).to(logits.dtype)  # 1⁺ + 1⁻: ties and the diagonal count 0
    del diff
    # BCE-with-logits: −t·log σ(z) − (1−t)·log(1−σ(z)), computed stably (log-sum-exp form).
    total = F.binary_cross_entropy_with_logits(logits, target, weight=counted, reduction="sum")
    grad = None
    if with_grad:
        grad = torch.sigmoid(logits).sub_(target).mul_(counted).sum(dim=2).mul_(2.0)
    return total, counted.sum(), grad


class _RelativePairLoss(torch.autograd.Function):
    """Sum of Eq. 5 over a batch and its pair count, memory-light.

    The gradient is computed together with the loss, chunk by chunk, so backward keeps only a
    ``[B, Nm]`` tensor instead of the ``[B, Nm, Nm]`` pair matrices autograd would save.
    """

    @staticmethod
    def forward(ctx, pred: torch.Tensor, rec: torch.Tensor, per_chunk: int):  # type: ignore[override]
        with_grad = bool(ctx.needs_input_grad[0])
        B = pred.shape[0]
        total = pred.new_zeros(())
        count = pred.new_zeros(())
        grads = []
        with torch.autocast(device_type=pred.device.type, enabled=False):  # pairs stay fp32
            for start in range(0, B, per_chunk):  # chunks bound memory; no per-sample logic
                s, c, g = _pairwise_bce_chunk(
                    pred[start:start + per_chunk], rec[start:start + per_chunk], with_grad
                )
                total, count = total + s, count + c
                if with_grad:
                    grads.append(g)
        if with_grad:
            ctx.save_for_backward(torch.cat(grads, dim=0))
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor, grad_count: Optional[torch.Tensor]):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_total, None, None


def relative_loss_prediction(
    pred: torch.Tensor,
    rec_loss: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> torch.Tensor:
    """Relative (ranking) loss-prediction objective, HPM journal Eq. 5–7.

    ``L_pred = −Σ_i Σ_{j≠i} [1⁺_ij log σ(L̂_i − L̂_j) + 1⁻_ij log(1 − σ(L̂_i − L̂_j))]``
    over the masked patches of each sample (Eq. 6–7 restrict to ``M_i = M_j`` = masked),
    with ``1⁺_ij = 1[L_rec(i) > L_rec(j)]`` and ``1⁻_ij = 1[L_rec(i) < L_rec(j)]``; ties get
    both indicators 0 and are not counted. The sum is divided by the number of counted
    ordered pairs over the batch (a scale-free mean, so the weight of L_pred in Eq. 2 does not
    depend on ``Nm``).

    The double sum visits both (i, j) and (j, i); since ``σ(−z) = 1 − σ(z)`` and the
    indicators swap, both terms are equal, so this is exactly Eq. 5 and its normalized value
    equals the mean over unordered pairs. Only differences ``L̂_i − L̂_j`` enter, so a constant
    shift of all predictions (e.g. the loss head's output bias) gets exactly zero gradient.

    Cost: ``B·Nm²`` pairs (video: Nm ≈ 1.4k → ≈ 2M pairs/sample). The pair matrices are
    built in fp32 (also under autocast; float64 inputs stay float64) chunk by chunk over
    samples (``chunk_pairs`` elements each), and the gradient is formed in the same pass
    (see ``_pairwise_bce_chunk``), so only ``[B, Nm]`` is kept for backward and the peak is one
    chunk's few pair matrices. (Double backward is not supported.)

    Args:
        pred: ``[B, Nm]`` (or ``[B, Nm, 1]``) predicted losses of masked tokens (with grad).
        rec_loss: ``[B, Nm]`` per-patch reconstruction loss (detached here).
        mask: optional bool ``[B, N]``; if given, ``pred``/``rec_loss`` may cover all N tokens
            and the masked ones are selected.
        chunk_pairs: pair-matrix elements per chunk (≤ Nm² processes one sample at a time).

    Returns:
        scalar loss (fp32, or fp64 for fp64 inputs).
    """
    pred, rec = _check_pair(pred, rec_loss, mask)
    dtype = torch.promote_types(pred.dtype, torch.float32)
    pred = pred.to(dtype)
    rec = rec.detach().to(dtype)
    B, n = pred.shape
    if n < 2:
        return pred.sum() * 0.0  # no pairs: zero loss that still joins the graph
    per_chunk = max(1, int(chunk_pairs) // (n * n))
    total, count = _RelativePairLoss.apply(pred, rec, per_chunk)
    return total / count.clamp_min(1.0)


def absolute_loss_prediction(
    pred: torch.Tensor,
    rec_loss: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    standardize: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Absolute loss-prediction objective, HPM journal Eq. 4: MSE to the detached L_rec.

    ``L_pred = mean over masked tokens of (L̂_i − L_rec(i))²``.

    Target standardization: none by default (Eq. 4 regresses the raw values). With
    ``standardize=True`` the target is standardised per sample over its masked tokens as the
    official HPM code's ``forward_learning_loss`` does,
    ``(L_rec − mean) / sqrt(var_unbiased + eps)`` (``eps`` = 1e-6), which removes the shrinking
    scale of L_rec the paper criticises (§3.3) while keeping a regression loss
    (``method.kwargs.absolute_target: standardized`` of the HPM recipe).

    Args:
        pred: ``[B, Nm]`` (or ``[B, Nm, 1]``) predicted losses (with grad).
        rec_loss: ``[B, Nm]`` per-patch reconstruction loss (detached here).
        mask: optional bool ``[B, N]`` to select masked tokens from full-length inputs.
        standardize, eps: the target standardisation above (needs ≥ 2 masked tokens per sample).

    Returns:
        scalar fp32 loss.
    """
    pred, rec = _check_pair(pred, rec_loss, mask)
    target = rec.detach().float()
    if standardize:
        if target.shape[1] < 2:
            raise ValueError(f"absolute_loss_prediction(standardize=True) needs at least 2 masked tokens per sample "
                             f"(an unbiased variance), got {target.shape[1]}")
        mean = target.mean(dim=1, keepdim=True)
        var = target.var(dim=1, keepdim=True, unbiased=True)
        target = (target - mean) / (var + eps).sqrt()
    return (pred.float() - target).pow(2).mean()


def loss_prediction_loss(kind: str, pred: torch.Tensor, rec_loss: torch.Tensor, **kwargs) -> torch.Tensor:
    """Dispatch by name: ``"relative"`` (Eq. 5, HPM's default) or ``"absolute"`` (Eq. 4)."""
    if kind == "relative":
        return relative_loss_prediction(pred, rec_loss, **kwargs)
    if kind == "absolute":
        return absolute_loss_prediction(pred, rec_loss, **kwargs)
    raise ValueError(f"unknown loss prediction kind {kind!r}; expected 'relative' or 'absolute'")
