"""Plain masked-autoencoder pre-training (MAE / VideoMAE) with a chosen mask strategy.

The recipe is the reference point of every ablation in the HPM journal version (Tables 10–12, row "random"):
the mask comes from a fixed strategy (random, tube, per-frame random) and the only objective is
the reconstruction loss of Eq. 3 on the masked patches.

Options shared with the HPM recipe (`target`, `feature_teacher`, `decoder_mask`): see
:mod:`videohpm.methods.target_mixin`. With ``target="ema_features"`` MAE keeps an EMA teacher
(`EmaTeacher`, BootMAE-like) that follows the student with ``momentum`` (Eq. 1).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from videohpm.methods.base import EmaTeacher, Recipe, clip_of, num_visible
from videohpm.methods.target_mixin import TargetMixin, take_tokens


class MAE(TargetMixin, Recipe):
    """VideoMAE/MAE recipe: `L = L_rec` (Eq. 3) with masks from `mask_generator`.

    Args:
        model: a `MaskedAutoencoder` (built without a loss predictor).
        mask_generator: any strategy of `videohpm.masking` that needs no scores.
        target: "pixel" | "ema_features" | "teacher_features" (module doc).
        feature_teacher: `{model, path, kwargs}` for "teacher_features".
        momentum: EMA coefficient (Eq. 1) of the teacher kept for "ema_features".
        decoder_mask, decoder_mask_ratio: VideoMAE V2 running-cell decoder masking.
    """

    def __init__(self, model: nn.Module, mask_generator: Any, *, target: str = "pixel",
                 feature_teacher: Optional[Mapping[str, Any]] = None, momentum: float = 0.999,
                 decoder_mask: bool = False, decoder_mask_ratio: float = 0.5) -> None:
        super().__init__()
        if getattr(mask_generator, "needs_scores", False):
            raise ValueError(
                "method=mae cannot use a score-driven mask strategy (it has no teacher); "
                "use method=hpm for mask=hpm"
            )
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"method.momentum must be in [0, 1], got {momentum}")
        self.model = model
        self.mask_generator = mask_generator
        self.momentum = momentum
        self._setup_targets(target, feature_teacher, decoder_mask, decoder_mask_ratio)
        if target == "ema_features":  # the target's EMA teacher (`EmaTeacher`: unregistered, fp32)
            self.ema = EmaTeacher(model)

    def forward(self, batch: Any, progress: float = 0.0) -> Dict[str, torch.Tensor]:
        x = clip_of(batch)
        grid = self.model.grid(x)
        full_grid = (x.shape[0], *grid)
        mask = self.mask_generator(full_grid, progress=progress, device=x.device)
        ids = self._decode_ids(mask, full_grid)
        ema = None
        if self.ema is not None:
            teacher = self.ema.follow(x.device)
            with torch.inference_mode():
                ema = teacher.patch_latents(teacher.encode(x.float()))
            ema = ema.clone()
        latent = self.model.encode(x, mask, num_visible=num_visible(self.mask_generator, full_grid))
        pred = self.model.decode(latent, mask, head="pixel", grid=grid, decode_ids=ids)
        with torch.no_grad():
            target = take_tokens(self._full_target(x, ema), mask, ids, count=pred.shape[1])
        loss = self._token_loss(pred, target).mean()
        return {"loss": loss, "loss_rec": loss.detach()}

    def on_step_end(self) -> None:
        """EMA update of the feature teacher (Eq. 1) with target=ema_features; else nothing."""
        if self.ema is not None:
            self.ema.update(self.model, self.momentum)
