"""Pure tensor objectives (docs/ARCHITECTURE.md, ``videohpm.objectives``).

Per-masked-token tensors are ``[B, N_masked, ...]`` in ascending token order
(``x[mask].view(B, -1, ...)``).

- ``reconstruction``: L_rec, HPM journal Eq. 3.
- ``loss_prediction``: L_pred relative BCE (Eq. 5–7) and absolute MSE (Eq. 4).
- ``contrastive``: ccMIM L_NCE / L_align (ccMIM paper Eq. 7–8).
- ``mto``: MTO heterogeneity regularizers (MTO paper Eq. 2–5).
"""
from .contrastive import align_loss, gather_batch, nce_loss
from .loss_prediction import (
    absolute_loss_prediction,
    loss_prediction_loss,
    relative_loss_prediction,
)
from .mto import heterogeneity, mto_losses, sparsity_loss
from .reconstruction import ReconstructionLoss, per_patch_mse, reconstruction_loss, select_masked

__all__ = [
    "ReconstructionLoss",
    "per_patch_mse",
    "reconstruction_loss",
    "select_masked",
    "relative_loss_prediction",
    "absolute_loss_prediction",
    "loss_prediction_loss",
    "nce_loss",
    "align_loss",
    "gather_batch",
    "heterogeneity",
    "sparsity_loss",
    "mto_losses",
]
