"""Plain masked-autoencoder pre-training (MAE / VideoMAE) with a chosen mask strategy.

The recipe is the reference point of every ablation in seed 000 (Tables 10–12, row "random"):
the mask comes from a fixed strategy (random, tube, per-frame random) and the only objective is
the reconstruction loss of Eq. 3 on the masked patches.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from videohpm.objectives.reconstruction import reconstruction_loss, select_masked


def clip_of(batch: Any) -> torch.Tensor:
    """The clip tensor `[B, C, T, H, W]` of a batch (a dict with "video", or the tensor itself)."""
    if isinstance(batch, torch.Tensor):
        return batch
    try:
        return batch["video"]
    except (KeyError, TypeError) as e:
        raise KeyError("a pre-training batch must be a tensor or a dict with a 'video' entry") from e


class MAE(nn.Module):
    """VideoMAE/MAE recipe: `L = L_rec` (Eq. 3) with masks from `mask_generator`.

    Args:
        model: a `MaskedAutoencoder` (built without a loss predictor).
        mask_generator: any strategy of `videohpm.masking` that needs no scores.
    """

    def __init__(self, model: nn.Module, mask_generator: Any) -> None:
        super().__init__()
        if getattr(mask_generator, "needs_scores", False):
            raise ValueError(
                "method=mae cannot use a score-driven mask strategy (it has no teacher); "
                "use method=hpm for mask=hpm"
            )
        self.model = model
        self.mask_generator = mask_generator

    def forward(self, batch: Any, progress: float = 0.0) -> Dict[str, torch.Tensor]:
        x = clip_of(batch)
        grid = self.model.grid(x)
        mask = self.mask_generator((x.shape[0], *grid), progress=progress, device=x.device)
        latent = self.model.encode(x, mask)
        pred = self.model.decode(latent, mask, head="pixel", grid=grid)
        with torch.no_grad():
            target = select_masked(self.model.target(x), mask, key="target")
        loss = reconstruction_loss(pred, target).loss
        return {"loss": loss, "loss_rec": loss.detach()}

    def on_step_end(self) -> None:
        """Nothing to do after an optimizer step (no teacher)."""
