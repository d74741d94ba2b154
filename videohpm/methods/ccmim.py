"""ccMIM: contrasting-aided contextual masked modeling (ccMIM paper §3.2, Fig. 1, Eq. 4–10).

One step:

1. Importance (Eq. 4): the [CLS] query's attention over the patch keys, from a full-token
   encoder pass without a graph (the official code also uses a separate no-grad pass).
2. Mask (Eq. 5–6): the ``importance`` strategy samples the masked set M so that important
   patches tend to be hidden (any random strategy gives the "random dividing" ablation, Tab. 5;
   then step 1 is skipped).
3. Two encoder passes with the shared [CLS]: on the visible set V (with grad) and on the masked
   set M (the teacher branch: everything from it is behind a stop-gradient, Eq. 7–8, so it runs
   without a graph).
4. ``L = L_rec + λ·L_NCE`` (Eq. 10, negatives form, the paper's default) or
   ``L_rec + λ·L_align`` (asymmetric form with a SimSiam predictor), with ``h = g([CLS])`` from
   the projector g; L_rec is Eq. 3/9 on the decoder output of the visible pass.

The model hooks it needs are listed on `CCMIM`. The decoder gets the patch tokens only: the
recipe drops the [CLS] token (``vis[:, 1:]``), so ``model.decode`` keeps the base contract. For
video, the ``importance`` mask generator's ``per_frame: true`` selects independently within each
time slice (config ``mask.kwargs``).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Optional

import torch
from torch import nn

from videohpm.masking.importance import cls_attention_importance
from videohpm.methods.base import Recipe, clip_of, num_visible
from videohpm.objectives.contrastive import align_loss, nce_loss
from videohpm.objectives.reconstruction import reconstruction_loss, select_masked

__all__ = ["CCMIM", "projector_head", "predictor_head"]

_CONTRASTS = ("nce", "align")
_LAYERS = ("last", "all")


def projector_head(in_dim: int, out_dim: int = 256, hidden_dim: Optional[int] = None) -> nn.Sequential:
    """Projector g (ccMIM paper §3.1: two-layer MLP): Linear-BN-ReLU-Linear-BN(no affine).

    Same layout as the official ccMIM code; BatchNorm needs ≥ 2 samples per device in training.
    """
    hidden = in_dim if hidden_dim is None else hidden_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim, bias=False),
        nn.BatchNorm1d(out_dim, affine=False),
    )


def predictor_head(dim: int = 256, hidden_dim: int = 512) -> nn.Sequential:
    """Predictor p of Eq. 8 (SimSiam's bottleneck MLP): Linear-BN-ReLU-Linear."""
    return nn.Sequential(
        nn.Linear(dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, dim),
    )


class CCMIM(Recipe):
    """ccMIM recipe (ccMIM paper Eq. 4–10).

    Model hooks required — :class:`~videohpm.models.autoencoder.MaskedAutoencoder` built with
    ``cls_token=True`` (``create_model(..., cls_token=True)``, config ``model.kwargs.cls_token: true``)
    provides them; VideoMAE has no [CLS] token, so it is off by default:

    - ``model.encode(x, mask, cls=True) -> [B, 1 + n, D]``: the tokens *not* hidden by ``mask``
      with a learned [CLS] token prepended (its own position embedding), after the final norm;
    - ``model.encode(x, None, cls=True, return_cls_logits=True) -> (tokens, logits)`` where
      ``logits`` is a list over encoder blocks of ``[B, heads, N]`` [CLS]-row attention logits
      ``q_0 · k_j / √d_h`` (cheap: one ``[1 × N]`` product per head, SDPA needs no full map);
    - ``model.embed_dim`` (width of the [CLS] token);
    - ``model.has_cls_token`` (optional; False makes construction fail early with the config key).

    Args:
        model: a masked autoencoder with the [CLS] hooks listed above.
        mask_generator: ``importance`` (the method) or a random strategy (ablation).
        contrast: ``"nce"`` (Eq. 7, default as in the paper's main runs) or ``"align"`` (Eq. 8).
        weight: λ of Eq. 10 (0.2, the best value of the paper's λ sweep, §4.3).
        temperature: τ of Eq. 7 (0.5 as the official code).
        visible_negatives: keep the visible-vs-visible negatives of Eq. 7 (False: official code).
        gather_grad: ``"local"`` / ``"all"`` gradient of gathered negatives
            (:func:`videohpm.objectives.contrastive.gather_batch`).
        proj_dim / proj_hidden: projector g output / hidden width (256 / encoder width).
        pred_hidden: hidden width of the predictor p (``contrast="align"`` only).
        importance_layers: ``"last"`` block's [CLS] logits (Eq. 4) or ``"all"`` blocks averaged
            (closer to the official code, which accumulates attention over all blocks).
    """

    def __init__(
        self,
        model: nn.Module,
        mask_generator: Any,
        *,
        contrast: str = "nce",
        weight: float = 0.2,
        temperature: float = 0.5,
        visible_negatives: bool = True,
        gather_grad: str = "local",
        proj_dim: int = 256,
        proj_hidden: Optional[int] = None,
        pred_hidden: int = 512,
        importance_layers: str = "last",
    ) -> None:
        super().__init__()
        if contrast not in _CONTRASTS:
            raise ValueError(f"method.contrast must be one of {list(_CONTRASTS)}, got {contrast!r}")
        if importance_layers not in _LAYERS:
            raise ValueError(f"method.importance_layers must be one of {list(_LAYERS)}, got {importance_layers!r}")
        if not temperature > 0:
            raise ValueError(f"method.temperature must be > 0, got {temperature!r}")
        params = inspect.signature(model.encode).parameters
        missing = [k for k in ("cls", "return_cls_logits") if k not in params]
        dim = getattr(model, "embed_dim", None)
        if dim is None:
            missing.append("embed_dim")
        if not getattr(model, "has_cls_token", True):  # MaskedAutoencoder built without one
            missing.append("a [CLS] token (model.kwargs.cls_token: true)")
        if missing:
            raise ValueError(
                "method=ccmim needs a model with a [CLS] token: encode(x, mask, cls=True, "
                f"return_cls_logits=...) and embed_dim (missing: {missing})"
            )
        self.model = model
        self.mask_generator = mask_generator
        self.contrast = contrast
        self.weight = float(weight)
        self.temperature = float(temperature)
        self.visible_negatives = visible_negatives
        self.gather_grad = gather_grad
        self.importance_layers = importance_layers
        self.projector = projector_head(int(dim), proj_dim, proj_hidden)
        self.predictor = predictor_head(proj_dim, pred_hidden) if contrast == "align" else None

    @torch.no_grad()
    def importance(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4 importance ``[B, N]`` from a no-graph full-token pass with the [CLS] token."""
        _, logits = self.model.encode(x, None, cls=True, return_cls_logits=True)
        if isinstance(logits, torch.Tensor):
            logits = [logits]
        chosen = list(logits) if self.importance_layers == "all" else [logits[-1]]
        return cls_attention_importance(cls_logits=chosen)

    def forward(self, batch: Any, progress: float = 0.0) -> Dict[str, torch.Tensor]:
        """One ccMIM step on ``batch["video"]: [B, C, T, H, W]``."""
        x = clip_of(batch)
        grid = self.model.grid(x)
        full = (x.shape[0], *grid)
        if getattr(self.mask_generator, "needs_scores", False):
            mask = self.mask_generator(full, scores=self.importance(x), progress=progress, device=x.device)
        else:
            mask = self.mask_generator(full, progress=progress, device=x.device)

        n_vis = num_visible(self.mask_generator, full)  # known counts: no device→host sync
        n_msk = None if n_vis is None else math.prod(full[1:]) - n_vis
        vis = self.model.encode(x, mask, cls=True, num_visible=n_vis)  # [B, 1 + Nv, D]: visible set V
        with torch.no_grad():  # masked set M: the teacher branch, SG in Eq. 7–8
            msk = self.model.encode(x, ~mask, cls=True, num_visible=n_msk)  # [B, 1 + Nm, D]
            target = select_masked(self.model.target(x), mask, key="target", count=n_msk)
        pred = self.model.decode(vis[:, 1:], mask, head="pixel", grid=grid, cls=False)  # [B, Nm, P]
        loss_rec = reconstruction_loss(pred, target).loss  # Eq. 9

        h_v = self.projector(vis[:, 0])
        with torch.no_grad():
            h_m = self.projector(msk[:, 0])
        if self.contrast == "nce":
            loss_c = nce_loss(h_v, h_m, self.temperature, visible_negatives=self.visible_negatives,
                              gather_grad=self.gather_grad)  # Eq. 7
        else:
            loss_c = align_loss(self.predictor(h_v), h_m)  # Eq. 8
        loss = loss_rec + self.weight * loss_c  # Eq. 10
        return {"loss": loss, "loss_rec": loss_rec.detach(), "loss_contrast": loss_c.detach()}

    def on_step_end(self) -> None:
        """Nothing after an optimizer step (no EMA teacher: the masked branch is the teacher)."""
