"""Supervised fine-tuning recipe: classifier + Mixup/CutMix + soft-target / label-smoothed CE.

The recipe of the supplement's Table S2 and VideoMAE's fine-tuning: mixup 0.8, cutmix 1.0,
label smoothing 0.1 (timm's `Mixup` with `SoftTargetCrossEntropy`), drop path 0.1 (a model
keyword), layer-wise lr decay (an optimizer setting), optional model EMA.

Same interface as the pre-training recipes: `forward(batch, progress) -> {"loss", "acc"}` and
`on_step_end()`. For validation the engine calls `predict(video) -> {name: logits}` on the
`eval_split`; the EMA model, when enabled, is evaluated too (key "ema").

The model EMA is HPM's teacher object (`videohpm.methods.base.EmaTeacher`, `self.ema`; its copy
is `self.teacher`): fp32 and *not* a registered submodule, so DeepSpeed neither casts it to bf16
(an EMA with decay 0.9999 underflows there) nor partitions it; it gathers ZeRO-3 parameters for
its update, and the engine moves it and checkpoints it through `teacher_state_dict()` /
`load_teacher_state_dict()`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from videohpm.methods.base import EmaTeacher, Recipe
from videohpm.models.probe_head import load_probe_head

__all__ = ["Classification"]


class Classification(Recipe):
    """Fine-tuning recipe around a `VideoClassifier`.

    Args:
        model: classifier, `model(x: [B, C, T, H, W]) -> logits [B, num_classes]`.
        mask_generator: must be None (`mask.name: none`); accepted for the common factory.
        mixup: mixup α (0 disables mixup).
        cutmix: cutmix α (0 disables cutmix).
        cutmix_minmax: optional [min, max] box ratio for cutmix (overrides `cutmix` α).
        mixup_prob: probability of mixing a batch at all.
        mixup_switch_prob: probability of cutmix instead of mixup when both are on.
        mixup_mode: "batch", "pair" or "elem" (timm).
        label_smoothing: ε of the smoothed targets (with or without mixup).
        model_ema: keep an EMA of the weights and evaluate it too.
        model_ema_decay: EMA decay per optimizer step.
        num_classes: defaults to `model.num_classes`.
        probe_head: a probe head file (`tools/probe.py`, :mod:`videohpm.models.probe_head`)
            copied into the model's head before training (LP-FT; needs `time_pooling`), so that
            step 0 predicts exactly as the fitted linear probe.

    With mixup/cutmix the per-rank micro-batch must be even (pairs are mixed by flipping it).
    """

    train_split = "train"
    eval_split = "val"
    classifier = True

    def __init__(
        self,
        model: nn.Module,
        mask_generator: Any = None,
        *,
        mixup: float = 0.8,
        cutmix: float = 1.0,
        cutmix_minmax: Optional[list] = None,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        label_smoothing: float = 0.1,
        model_ema: bool = False,
        model_ema_decay: float = 0.9999,
        num_classes: Optional[int] = None,
        probe_head: Optional[str] = None,
    ) -> None:
        super().__init__()
        if mask_generator is not None:
            raise ValueError("method=classification uses no mask: set mask.name=none")
        num_classes = int(num_classes if num_classes is not None else getattr(model, "num_classes", 0))
        if num_classes <= 0:
            raise ValueError("method=classification needs a model with num_classes > 0 (model.kwargs.num_classes)")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"method.label_smoothing must be in [0, 1), got {label_smoothing}")
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"method.mixup / method.cutmix must be >= 0, got {mixup} / {cutmix}")
        if not 0.0 <= model_ema_decay <= 1.0:
            raise ValueError(f"method.model_ema_decay must be in [0, 1], got {model_ema_decay}")
        self.model = model
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.model_ema_decay = float(model_ema_decay)
        use_mix = (mixup > 0 or cutmix > 0 or cutmix_minmax is not None) and mixup_prob > 0
        self.mixup: Optional[Mixup] = None
        if use_mix:
            self.mixup = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix,
                cutmix_minmax=list(cutmix_minmax) if cutmix_minmax is not None else None,
                prob=mixup_prob, switch_prob=mixup_switch_prob, mode=mixup_mode,
                label_smoothing=label_smoothing, num_classes=num_classes,
            )
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=label_smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()
        # the fitted probe as the head, before the EMA copy is taken (LP-FT; last of the head's set-up)
        self.probe_head = load_probe_head(model, probe_head) if probe_head else None
        if model_ema:
            self.ema = EmaTeacher(model)  # unregistered on purpose (module docstring)

    # ------------------------------------------------------------------ training
    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/CutMix on clips `x: [B, C, T, H, W]`, labels `y: [B]` → (x, soft targets [B, K]).

        timm's Mixup cuts boxes from the last two dims of a 4-d batch; the clip is viewed as
        `[B, C·T, H, W]` so every frame gets the same box (VideoMAE's video mixup). timm mixes in
        place, so a copy is mixed and the caller's batch is left untouched.
        """
        if x.shape[0] % 2:
            raise ValueError(f"mixup/cutmix need an even micro-batch, got {x.shape[0]} clips (train.batch_size)")
        shape = x.shape
        x4 = x.reshape(shape[0], -1, shape[-2], shape[-1]).clone()
        x4, target = self.mixup(x4, y)
        return x4.view(shape), target

    def forward(self, batch: Dict[str, torch.Tensor], progress: float = 0.0) -> Dict[str, torch.Tensor]:
        """`batch["video"]: [B, C, T, H, W]`, `batch["label"]: [B]` → {"loss", "acc"}.

        `acc` is the top-1 accuracy against the un-mixed labels (a rough training signal when
        mixup is on). `progress` is unused (fine-tuning has no curriculum).
        """
        x, y = batch["video"], batch["label"]
        if self.training and self.mixup is not None:
            x, target = self.mix(x, y)
        else:
            target = y
        logits = self.model(x)
        loss = self.criterion(logits.float(), target)
        with torch.no_grad():
            acc = (logits.argmax(dim=-1) == y).float().mean()
        return {"loss": loss, "acc": acc}

    @torch.no_grad()
    def predict(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Logits of the student ("") and, with model EMA, of the EMA ("ema"): `[B, K]` each."""
        out = {"": self.model(video)}
        if self.ema is not None:
            teacher = self.ema.follow(video.device)
            with torch.autocast(device_type=video.device.type, enabled=False):
                out["ema"] = teacher(video.float())
        return out

    # ------------------------------------------------------------------ EMA
    def on_step_end(self) -> None:
        """Model EMA `θ_ema ← d·θ_ema + (1 − d)·θ` after each optimizer step (no-op without EMA).

        Student parameters may be bf16/fp16 under DeepSpeed; they are upcast before the lerp
        (`EmaTeacher.update`).
        """
        if self.ema is not None:
            self.ema.update(self.model, self.model_ema_decay)
