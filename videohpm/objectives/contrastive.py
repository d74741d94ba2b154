"""ccMIM's single-view contrastive objectives on the [CLS] tokens (ccMIM paper §3.2, Eq. 7–8).

The encoder runs twice on one clip: on the visible set V and on the masked set M (the
important patches). Their [CLS] tokens, passed through the projector g, give ``h^V`` and
``h^M`` ``[B, D]``. The masked branch is the teacher (richer content): it is always behind a
stop-gradient (``SG``).

- :func:`nce_loss` — Eq. 7, InfoNCE that contrasts only the visible branch.
- :func:`align_loss` — Eq. 8, SimSiam-style alignment through a predictor head ``p``.

The projector / predictor heads are modules owned by the recipe; these are pure functions.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

_GATHER_GRAD = ("local", "all")


def _world() -> Tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherSumGrad(torch.autograd.Function):
    """all_gather ``[b, D]`` → ``[world·b, D]`` whose backward sums every rank's gradient.

    Backward all-reduces the full ``[world·b, D]`` gradient and keeps this rank's slice
    (all_reduce works on every backend, gloo included).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = _world()
        ctx.rank, ctx.b = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.b:(ctx.rank + 1) * ctx.b]


def gather_batch(x: torch.Tensor, grad: str = "local") -> Tuple[torch.Tensor, int]:
    """Concatenate ``x: [b, D]`` over all ranks → ``([world·b, D], offset of this rank)``.

    ``grad="local"``: the other ranks' rows are constants and only this rank's own rows carry
    gradient (the usual SimCLR-style gather; cheap, each rank's loss trains on its own
    anchors). ``grad="all"``: autograd-aware all_gather whose backward sums the gradients from every rank's loss into the owner — with gradient
    averaging over ranks this equals the gradient of the single-process loss on the global
    batch. Every rank must hold the same ``b``. Without an initialized process group this
    returns ``(x, 0)``.
    """
    if grad not in _GATHER_GRAD:
        raise ValueError(f"gather grad must be one of {list(_GATHER_GRAD)}, got {grad!r}")
    rank, world = _world()
    if world == 1:
        return x, 0
    if grad == "all":
        return _AllGatherSumGrad.apply(x), rank * x.shape[0]
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x  # keep the local part in the graph
    return torch.cat(parts, dim=0), rank * x.shape[0]


def nce_loss(
    h_vis: torch.Tensor,
    h_mask: torch.Tensor,
    temperature: float = 0.5,
    *,
    visible_negatives: bool = True,
    gather: bool = True,
    gather_grad: str = "local",
) -> torch.Tensor:
    """L_NCE of ccMIM paper Eq. 7, mean over this rank's samples.

    For each local sample i, with ``m_i = SG(h_i^M)``, ``v_j = h_j^V`` and cosine ``sim``::

        ℓ_i = −log  e^{sim(m_i, v_i)/τ}
                    / ( Σ_{j≠i} e^{sim(v_i, v_j)/τ} + Σ_j e^{sim(m_i, v_j)/τ} )

    j runs over the global batch: ``h^V`` is gathered from all ranks (:func:`gather_batch`).
    ``h^M`` only ever appears through ``SG`` (the masked set is the teacher), so no gradient
    reaches the masked branch. Similarities and the log-sum-exp are computed in fp32.

    Args:
        h_vis: ``[b, D]`` projected [CLS] of the visible-set pass (with grad).
        h_mask: ``[b, D]`` projected [CLS] of the masked-set pass (detached here).
        temperature: τ; 0.5 as the official code (settable).
        visible_negatives: include the ``Σ_{j≠i} e^{sim(v_i, v_j)/τ}`` term of Eq. 7 (default).
            ``False`` gives the official code's MoCo-v3-style loss (only masked-vs-visible
            logits; note that code also multiplies the loss by 2τ — fold that into λ).
        gather: gather negatives across ranks when a process group is initialized.
        gather_grad: ``"local"`` or ``"all"``, see :func:`gather_batch`.

    Returns:
        scalar fp32 loss.
    """
    if h_vis.dim() != 2 or h_vis.shape != h_mask.shape:
        raise ValueError(
            f"h_vis and h_mask must both be [B, D], got {tuple(h_vis.shape)} and {tuple(h_mask.shape)}"
        )
    tau = float(temperature)
    if not tau > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    v = F.normalize(h_vis.float(), dim=-1)  # [b, D]
    m = F.normalize(h_mask.detach().float(), dim=-1)  # SG(h^M)
    if gather:
        v_all, offset = gather_batch(v, grad=gather_grad)  # [Bg, D]
    else:
        v_all, offset = v, 0
    b = v.shape[0]
    pos = torch.arange(b, device=v.device) + offset  # index of sample i in the global batch
    logits_mv = m @ v_all.t() / tau  # [b, Bg]: sim(m_i, v_j)/τ, positive at j = i
    if visible_negatives:
        logits_vv = v @ v_all.t() / tau  # [b, Bg]: sim(v_i, v_j)/τ
        self_pair = torch.zeros_like(logits_vv, dtype=torch.bool)
        self_pair[torch.arange(b, device=v.device), pos] = True
        logits_vv = logits_vv.masked_fill(self_pair, float("-inf"))  # j ≠ i
        logits = torch.cat([logits_mv, logits_vv], dim=1)  # [b, 2·Bg]
    else:
        logits = logits_mv
    return F.cross_entropy(logits, pos)


def align_loss(p_vis: torch.Tensor, h_mask: torch.Tensor) -> torch.Tensor:
    """L_align of ccMIM paper Eq. 8: ``E_i[1 − sim(SG(h_i^M), p(h_i^V))]`` (cosine similarity).

    Args:
        p_vis: ``[B, D]`` predictor output ``p(h^V)`` of the visible branch (with grad).
        h_mask: ``[B, D]`` projected [CLS] of the masked branch (stop-gradient applied here).

    Returns:
        scalar fp32 loss in [0, 2].
    """
    if p_vis.dim() != 2 or p_vis.shape != h_mask.shape:
        raise ValueError(
            f"p_vis and h_mask must both be [B, D], got {tuple(p_vis.shape)} and {tuple(h_mask.shape)}"
        )
    sim = F.cosine_similarity(p_vis.float(), h_mask.detach().float(), dim=-1)
    return (1.0 - sim).mean()
