"""Linear probing recipe (HPM journal Tables 1, 4, 5; supplement §A.1 and Table S3).

Protocol (MoCo v3 / MAE, as the papers state): the pre-trained encoder is frozen and kept in eval
mode; the feature is the encoder's tokens mean-pooled (supplement §A: "features globally averaged
from the encoder output"); a `BatchNorm1d` without affine parameters (MAE's trick: it normalizes
the feature scale so one learning rate fits every backbone) and a linear head are the only
trainable parts. Table S3: SGD, momentum 0.9, base lr 1e-3 (× batch / 256), no weight decay,
cosine schedule, 10 warm-up epochs, 100 epochs, RandomResizedCrop only (no mixup, cutmix, drop
path or colour jitter).

Same interface as every recipe: `forward(batch, progress) -> {"loss", "acc1"}` and
`on_step_end()`; `predict(video) -> {"": logits}` for the engine's validation and the multi-view
test (`tools/test.py`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from timm.layers import trunc_normal_
from torch import nn

from videohpm.methods.base import Recipe

__all__ = ["LinearProbe"]


class LinearProbe(Recipe):
    """Frozen encoder → mean pool → BatchNorm (no affine) → linear head.

    Args:
        model: a pre-trained `MaskedAutoencoder` (its `encoder`, with the final norm, is used;
            the decoders are dropped) or a `VideoClassifier` (its `encoder` and `fc_norm`; its
            own head is dropped). Load the pre-trained weights into it before building the
            recipe (`model.pretrained` in the config).
        mask_generator: must be None (`mask.name: none`); accepted for the common factory.
        num_classes: number of classes (default: `model.num_classes`).
        bn_eps: BatchNorm epsilon (1e-6 as MAE's linear probe).
        head_init_std: truncated-normal std of the head weights (0.01 as MAE / MoCo v3).

    Image mode is the same (clips with `T = 1`).
    """

    train_split = "train"
    eval_split = "val"
    classifier = True
    head_outside_model = True

    def __init__(
        self,
        model: nn.Module,
        mask_generator: Any = None,
        *,
        num_classes: Optional[int] = None,
        bn_eps: float = 1e-6,
        head_init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if mask_generator is not None:
            raise ValueError("method=linear_probe uses no mask: set mask.name=none")
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"method=linear_probe needs a model with an `encoder` (MaskedAutoencoder or "
                            f"VideoClassifier), got {type(model).__name__}")
        k = num_classes if num_classes is not None else getattr(model, "num_classes", None)
        if k is None or int(k) <= 0:
            raise ValueError("method.num_classes: must be set (> 0) for method=linear_probe")
        dim = int(getattr(encoder, "embed_dim"))
        self.num_classes = int(k)
        self.encoder = encoder
        # A classifier built for fine-tuning pools first and normalizes after (fc_norm); keep
        # that, frozen, so features match what its encoder was trained with.
        fc_norm = getattr(model, "fc_norm", None)
        self.pool_norm = fc_norm if isinstance(fc_norm, nn.Module) else nn.Identity()
        self.encoder.requires_grad_(False)
        self.pool_norm.requires_grad_(False)
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=bn_eps)
        self.head = nn.Linear(dim, self.num_classes)
        trunc_normal_(self.head.weight, std=head_init_std)
        nn.init.zeros_(self.head.bias)
        self.criterion = nn.CrossEntropyLoss()
        self.train(True)

    def train(self, mode: bool = True) -> "LinearProbe":
        """Only the BatchNorm follows `mode`; the frozen encoder stays in eval mode (no dropout or
        drop path, fixed features), whatever the engine asks."""
        super().train(mode)
        self.encoder.eval()
        self.pool_norm.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen feature `[B, D]` of `x: [B, C, T, H, W]` (mean of all tokens, no graph kept)."""
        tokens = self.encoder(x)  # [B, N, D]
        return self.pool_norm(tokens.mean(dim=1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, T, H, W]` → `[B, num_classes]`."""
        return self.head(self.bn(self.features(x)))

    def forward(self, batch: Dict[str, torch.Tensor], progress: float = 0.0) -> Dict[str, torch.Tensor]:
        """`batch["video"]: [B, C, T, H, W]`, `batch["label"]: [B]` → `{"loss", "acc1"}`.

        Only `bn` and `head` receive gradients; `progress` is unused.
        """
        if "video" not in batch or "label" not in batch:
            raise KeyError(f"linear_probe needs batches with 'video' and 'label' (got {sorted(batch)})")
        logits = self.logits(batch["video"])
        y = batch["label"]
        loss = self.criterion(logits.float(), y)
        with torch.no_grad():
            acc1 = (logits.argmax(dim=-1) == y).float().mean()
        return {"loss": loss, "acc1": acc1}

    @torch.no_grad()
    def predict(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Logits for validation / testing: `{"": [B, K]}` (call in eval mode: BN running stats)."""
        return {"": self.logits(video)}

    def on_step_end(self) -> None:
        """Nothing to do after an optimizer step (no EMA)."""
