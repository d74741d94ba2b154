"""Masked Token Optimization (MTO) regularizers, MTO paper §3.1 and §4 (Eq. 2–5, Algorithm 1).

Applied to the decoder of an MAE-style model: ``tokens[l]: [B, N, D]`` for ``l = 0..L``, layer 0
the decoder *input* (visible latents + mask tokens, after position embedding), layer l the output
of decoder block l. ``mask: [B, N]`` (True = masked token) is aligned with the token order of
those tensors — for a VideoMAE decoder, whose input is ``[visible; masked]``, that is
``arange(N) >= N_vis``, not the clip mask.

Per sample:
- Eq. 2, heterogeneity  ``H = −(1/|δ_M|) Σ_i Σ_j A_ij log A_ij``,  ``A = ψ(X_M X_V^T)``
  (ψ = row softmax over visible tokens): the mean entropy of each masked token's affinity
  distribution over the visible tokens.
- Eq. 3, ``L_spa = −Σ_{i∉δ_M} Σ_j p_ij log p_ij``,  ``p = ψ(X X^T)``: entropy of the *visible*
  rows of the full affinity over all N tokens (summed over rows, as written).
- Eq. 4, ``L_e = 1 / (H^0 + ε)``: maximize the initial heterogeneity.
- Eq. 5, ``L_r = Σ_{l=1}^{L} log(1 + exp(H^{l−1} − H^l))``.
- Algorithm 1: ``L_total = L_spa + L_e + L_r`` (weights settable here).

Losses are averaged over the batch, in fp32; where text and equations differ, the equations win
(`mto_losses`).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

_SPA_LAYERS = ("first", "all")


def _split(tokens: torch.Tensor, mask: torch.Tensor, key: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[B, N, D]`` → masked ``X_M [B, Nm, D]`` and visible ``X_V [B, Nv, D]`` (fp32)."""
    if tokens.dim() != 3 or tuple(tokens.shape[:2]) != tuple(mask.shape):
        raise ValueError(f"{key} must be [B, N, D] matching mask [B, N] = {tuple(mask.shape)}, "
                         f"got {tuple(tokens.shape)}")
    B = tokens.shape[0]
    x = tokens.float()
    return x[mask].view(B, -1, x.shape[-1]), x[~mask].view(B, -1, x.shape[-1])


def _row_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``−Σ_j p_j log p_j`` of ``p = softmax(logits)`` over the last dim (stable)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def _check_mask(mask: torch.Tensor) -> None:
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise TypeError(f"mask must be bool [B, N], got {mask.dtype} with shape {tuple(mask.shape)}")


def heterogeneity(tokens: torch.Tensor, mask: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Eq. 2 per sample: mean entropy of ``ψ(X_M X_V^T)`` rows → ``[B]``.

    Args:
        tokens: ``[B, N, D]`` tokens of one layer.
        mask: bool ``[B, N]`` aligned with ``tokens`` (True = masked token, same count per row).
        scale: multiplier of the dot-product logits (1 = Eq. 2 as written).
    """
    _check_mask(mask)
    xm, xv = _split(tokens, mask, "tokens")
    logits = (xm @ xv.transpose(1, 2)) * scale  # [B, Nm, Nv]
    return _row_entropy(logits).mean(dim=1)


def sparsity_loss(tokens: torch.Tensor, mask: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Eq. 3 per sample: ``−Σ_{i∉δ_M} Σ_j p_ij log p_ij`` with ``p = ψ(X X^T)`` → ``[B]``.

    Rows are the visible tokens, columns all N tokens (including itself), as in Eq. 3.
    """
    _check_mask(mask)
    _, xv = _split(tokens, mask, "tokens")
    logits = (xv @ tokens.float().transpose(1, 2)) * scale  # [B, Nv, N]
    return _row_entropy(logits).sum(dim=1)


def mto_losses(
    tokens: Sequence[torch.Tensor],
    mask: torch.Tensor,
    *,
    w_spa: float = 1.0,
    w_e: float = 1.0,
    w_r: float = 1.0,
    eps: float = 1e-6,
    scale: float = 1.0,
    spa_layers: str = "first",
) -> Dict[str, torch.Tensor]:
    """MTO objective of Algorithm 1 from per-layer decoder tokens.

    Text vs. equations (we follow the equations): §4 says Eq. 5 should make heterogeneity
    *decrease* with depth ("progressively lower heterogeneity", "gradual reduction"), but
    ``softplus(H^{l−1} − H^l)`` is minimized by ``H^l > H^{l−1}``, i.e. it rewards an *increase*
    of H from layer to layer. Eq. 5 is implemented as written. Eq. 3 names no layer; §4 motivates
    it on "the initial embedding stage", so by default it is applied to layer 0 only
    (``spa_layers="first"``; ``"all"`` averages it over every layer). The affinities use raw dot
    products as in Eq. 2–3 (``scale=1``); ``scale`` multiplies the logits when wanted (e.g.
    ``D^-1/2`` as attention), since wide, unnormalized tokens make ψ nearly one-hot.

    Args:
        tokens: ``[tokens_0, ..., tokens_L]``, each ``[B, N, D]``; ``tokens_0`` = decoder input.
        mask: bool ``[B, N]`` aligned with the token order (True = mask token).
        w_spa, w_e, w_r: weights of L_spa (Eq. 3), L_e (Eq. 4), L_r (Eq. 5).
        eps: ε of Eq. 4.
        scale: logit multiplier of the affinities (1 = as written).
        spa_layers: ``"first"`` (layer 0, default) or ``"all"`` (mean over layers) for Eq. 3.

    Returns:
        dict with ``"loss"`` (weighted total, with grad), ``"loss_spa"``, ``"loss_e"``,
        ``"loss_r"`` (with grad) and ``"heterogeneity"``: detached ``[L + 1]`` batch-mean H^l
        for logging.
    """
    _check_mask(mask)
    if len(tokens) < 1:
        raise ValueError("tokens must hold at least the decoder input (layer 0)")
    if spa_layers not in _SPA_LAYERS:
        raise ValueError(f"spa_layers must be one of {list(_SPA_LAYERS)}, got {spa_layers!r}")
    H = torch.stack([heterogeneity(t, mask, scale) for t in tokens], dim=0)  # [L+1, B]
    loss_e = (1.0 / (H[0] + eps)).mean()  # Eq. 4
    if H.shape[0] > 1:
        loss_r = torch.nn.functional.softplus(H[:-1] - H[1:]).sum(dim=0).mean()  # Eq. 5
    else:
        loss_r = H.new_zeros(())
    spa_src = tokens[:1] if spa_layers == "first" else tokens
    loss_spa = torch.stack([sparsity_loss(t, mask, scale) for t in spa_src]).mean(dim=0).mean()
    total = w_spa * loss_spa + w_e * loss_e + w_r * loss_r
    return {
        "loss": total,
        "loss_spa": loss_spa,
        "loss_e": loss_e,
        "loss_r": loss_r,
        "heterogeneity": H.detach().mean(dim=1),
    }
