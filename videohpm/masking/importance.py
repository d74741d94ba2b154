"""``importance``: ccMIM's contextual masking by [CLS]-attention importance (ccMIM paper §3.2).

Two pieces:

- :func:`cls_attention_importance` — Eq. 4, ``s = Softmax(E_h[q_0 K_{1:}^T / √d])``: how much the
  global token attends to each patch token, averaged over heads, normalized over patches.
- ``importance`` mask generator — Eq. 5–6: the masked set is drawn by *importance sampling*, so
  that important (semantically rich) patches tend to be masked while some randomness remains
  (Tab. 5: "importance sampling" beats plain top-k "importance").
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .base import (
    Grid,
    RowMaskGenerator,
    check_per_frame,
    check_scores,
    register_mask_generator,
    topk_mask,
    uniform_noise,
)

_SAMPLERS = ("gumbel", "official")
_DIRECTIONS = ("cls_to_patch", "patch_to_cls")
_TINY = 1e-20


def cls_attention_importance(
    attn: Union[torch.Tensor, Sequence[torch.Tensor], None] = None,
    *,
    q: Optional[torch.Tensor] = None,
    k: Optional[torch.Tensor] = None,
    cls_logits: Union[torch.Tensor, Sequence[torch.Tensor], None] = None,
    scale: Optional[float] = None,
    direction: str = "cls_to_patch",
) -> torch.Tensor:
    """Patch importance from [CLS] attention, ccMIM paper Eq. 4 → ``[B, N]`` (rows sum to 1).

    Either from query/key tensors of one attention layer (cheapest: only the [CLS] row of
    ``q K^T`` is formed, O(N·d) instead of the O(N²) map SDPA never materializes)::

        q, k: [B, heads, 1 + N, d_h]  ([CLS] first)
        s = softmax_j( mean_h  q_h,0 · k_h,j · scale ),  j = 1..N,  scale = d_h^-1/2 by default

    or from the [CLS]-row logits themselves, ``cls_logits: [B, heads, N]`` (``q_0 · k_j · scale``,
    what a model hook can return cheaply), or a list of them over layers (averaged with the heads),

    or from attention probabilities ``attn: [B, heads, 1 + N, 1 + N]`` (or a list of them over
    layers). Eq. 4 averages *logits* over heads; since ``log A_h[0, j] = logit_h,j − c_h`` with a
    per-head constant ``c_h`` (the softmax normalizer), ``softmax_j(mean_{h,layers} log A[0, j])``
    equals Eq. 4 exactly (the constants cancel in the softmax over patches).

    ``direction="patch_to_cls"`` reproduces the official ccMIM code instead: it uses column 0
    (how much each patch attends to [CLS]), averages the *probabilities* over heads, sums them
    over layers and applies a softmax over patches (``attn`` input only).

    Returns:
        ``s: [B, N]`` float32 importance (no gradient: it only drives mask selection).
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {list(_DIRECTIONS)}, got {direction!r}")
    with torch.no_grad():
        if cls_logits is not None:
            if attn is not None or q is not None or k is not None or direction != "cls_to_patch":
                raise ValueError("cls_logits excludes attn, q/k and direction='patch_to_cls'")
            return _importance_from_logits(cls_logits)
        if q is not None or k is not None:
            if q is None or k is None or attn is not None:
                raise ValueError("pass either attn, or both q and k")
            if direction != "cls_to_patch":
                raise ValueError("direction='patch_to_cls' needs attention probabilities (attn)")
            return _importance_from_qk(q, k, scale)
        if attn is None:
            raise ValueError("pass either attn, or both q and k")
        return _importance_from_attn(attn, direction)


def _importance_from_logits(cls_logits: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    """Eq. 4 from [CLS]-row logits ``[B, heads, N]`` (or a list over layers): mean, then softmax."""
    logs = [cls_logits] if isinstance(cls_logits, torch.Tensor) else list(cls_logits)
    if not logs or any(t.dim() != 3 or t.shape != logs[0].shape for t in logs):
        raise ValueError("cls_logits must be [B, heads, N] (or a non-empty list of them)")
    return torch.stack([t.float() for t in logs]).mean(dim=(0, 2)).softmax(dim=-1)


def _importance_from_qk(q: torch.Tensor, k: torch.Tensor, scale: Optional[float]) -> torch.Tensor:
    """Eq. 4 from one layer's queries and keys: only the [CLS] row of ``q K^T`` is formed."""
    if q.dim() != 4 or q.shape != k.shape:
        raise ValueError(
            f"q and k must both be [B, heads, 1 + N, d_h], got {tuple(q.shape)} and "
            f"{tuple(k.shape)}"
        )
    sc = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q0 = q[:, :, :1].float()  # [B, h, 1, d]
    logits = (q0 @ k[:, :, 1:].float().transpose(-1, -2)).squeeze(2) * sc  # [B, h, N]
    return logits.mean(dim=1).softmax(dim=-1)


def _importance_from_attn(attn: Union[torch.Tensor, Sequence[torch.Tensor]], direction: str) -> torch.Tensor:
    """Eq. 4 (``cls_to_patch``: log-probabilities averaged) or the official code's column-0 variant
    (``patch_to_cls``) from attention probabilities ``[B, heads, 1 + N, 1 + N]`` (or a list)."""
    maps = [attn] if isinstance(attn, torch.Tensor) else list(attn)
    if not maps:
        raise ValueError("attn is an empty list")
    for i, a in enumerate(maps):
        if a.dim() != 4 or a.shape[-1] != a.shape[-2] or a.shape != maps[0].shape:
            raise ValueError(
                f"attn[{i}] must be [B, heads, 1 + N, 1 + N] like attn[0], got {tuple(a.shape)}"
            )
    if direction == "cls_to_patch":
        logit = torch.stack([a[:, :, 0, 1:].float().clamp_min(_TINY).log() for a in maps])
        return logit.mean(dim=(0, 2)).softmax(dim=-1)  # mean over layers & heads
    total = torch.stack([a[:, :, 1:, 0].float().mean(dim=1) for a in maps]).sum(dim=0)
    return total.softmax(dim=-1)


@register_mask_generator("importance")
class ImportanceMaskGenerator(RowMaskGenerator):
    """Importance-sampled mask (ccMIM Eq. 5–6) from ``scores`` = importance ``[B, N]``.

    The masked set is a sample *without replacement* from the importance distribution, so that
    high-importance patches are masked more often but not deterministically (the remaining
    visible set keeps some context, §3.2). Exactly ``k`` tokens per row are masked, with the
    same count conventions as ``hpm``: per time slice ``int(γ·H'·W')`` for video with
    ``per_frame=True``; over all tokens ``N − int(N·(1−γ))`` for images or ``per_frame=False``
    (ccMIM's ``vis_nums = int(L·(1−γ))``).

    Samplers (one ``topk`` over keys per row):

    - ``"gumbel"`` (default, Eq. 5–6): keys ``log s / temperature + Gumbel(0, 1)``; the top-k is an
      exact draw of k patches without replacement with probabilities ∝ ``s^(1/temperature)``
      (Gumbel-top-k = sequential importance sampling). ``temperature`` → 0 gives plain top-k.
    - ``"official"`` (ccMIM code): keys ``s / softmax(u)``, ``u ~ U[0, 1)``; as the softmax
      normalizer is a per-row constant this ranks by ``log s − u`` — importance minus uniform
      noise, a bounded perturbation, so it is much closer to top-k than ``"gumbel"``.

    ``scores`` should be positive importances such as :func:`cls_attention_importance` output
    (any positive scale: only ``log s`` differences matter); values ≤ 0 are clamped to 1e-20.

    Args:
        mask_ratio: γ ∈ (0, 1).
        sampler: ``"gumbel"`` or ``"official"``.
        temperature: > 0, sharpness of the ``"gumbel"`` sampler (ignored by ``"official"``).
        per_frame: for video, select independently within each time slice (default False:
            ccMIM is an image method and selects over all patches).
    """

    needs_scores = True

    def __init__(
        self,
        mask_ratio: float = 0.75,
        sampler: str = "gumbel",
        temperature: float = 1.0,
        per_frame: bool = False,
    ) -> None:
        super().__init__(mask_ratio)
        if sampler not in _SAMPLERS:
            raise ValueError(f"sampler must be one of {list(_SAMPLERS)}, got {sampler!r}")
        self.sampler = sampler
        t = float(temperature)
        if not t > 0 or t != t or t == float("inf"):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = t
        self.per_frame = check_per_frame(per_frame)

    def _generate(self, grid: Grid, *, scores, progress, device, generator) -> torch.Tensor:
        if scores is None:
            raise ValueError("importance mask generator needs scores [B, N] (patch importance)")
        B, T, H, W = grid
        rows, n = self._rows(grid)
        s = check_scores(scores, grid).to(device).reshape(rows, n).float()
        log_s = s.clamp_min(_TINY).log()
        u = uniform_noise((rows, n), device, generator)  # [rows, n] in [0, 1)
        if self.sampler == "gumbel":
            gumbel = -(-u.clamp_min(_TINY).log()).log()  # Gumbel(0, 1) = −log(−log U)
            keys = log_s / self.temperature + gumbel
        else:
            keys = log_s - u
        return topk_mask(keys, self.num_masked_per_row(grid)).view(B, T * H * W)

    def extra_repr(self) -> str:
        return (
            f"mask_ratio={self.mask_ratio}, sampler={self.sampler!r}, "
            f"temperature={self.temperature}, per_frame={self.per_frame}"
        )
