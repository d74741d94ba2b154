"""Plain masked-autoencoder pre-training (MAE / VideoMAE) with a chosen mask strategy.

The recipe is the reference point of every ablation in the HPM journal version (Tables 10–12, row "random"):
the mask comes from a fixed strategy (random, tube, per-frame random) and the only objective is
the reconstruction loss of Eq. 3 on the masked patches.

Options shared with the HPM recipe (helpers below):

- ``target``: ``pixel`` (default), ``ema_features`` (features of an EMA copy of the model,
  HPM journal Table 1 "EMA features"; BootMAE-like — MAE then keeps an EMA teacher with
  ``momentum``), ``teacher_features`` (a frozen pre-trained teacher from a local file,
  ``feature_teacher={"model": name, "path": file, "kwargs": {...}}``; Table 1 "DINO / CLIP
  features"). Feature targets use the ℓ2-normalized MSE of
  :func:`videohpm.models.targets.normalized_feature_loss`; the model's pixel head must be
  ``target_dim`` = the feature width.
- ``decoder_mask`` (VideoMAE V2): the decoder reconstructs only ``K = int(M·(1 − ρ_d))`` of the
  M masked tokens, chosen by the running cell (:mod:`videohpm.masking.running_cell`); the loss
  is on those K tokens (encoder-masked and decoder-visible).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from videohpm.masking.running_cell import RunningCellMaskGenerator, decoder_token_ids, num_decoded
from videohpm.models.targets import TARGETS, ema_copy, ema_update_, load_feature_teacher, normalized_feature_loss
from videohpm.objectives.reconstruction import reconstruction_loss, select_masked


def clip_of(batch: Any) -> torch.Tensor:
    """The clip tensor `[B, C, T, H, W]` of a batch (a dict with "video", or the tensor itself)."""
    if isinstance(batch, torch.Tensor):
        return batch
    try:
        return batch["video"]
    except (KeyError, TypeError) as e:
        raise KeyError("a pre-training batch must be a tensor or a dict with a 'video' entry") from e


def take_tokens(x: torch.Tensor, mask: torch.Tensor, ids: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-token values ``x: [B, N, ...]`` of the reconstructed tokens: the masked ones
    (``x[mask]``, ascending) or, with decoder masking, those at ``ids: [B, K]`` (ascending)."""
    if ids is None:
        return select_masked(x, mask, key="target")
    return torch.gather(x, 1, ids.view(*ids.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def num_visible(mask_generator: Any, grid: Any) -> Optional[int]:
    """Visible tokens per sample that `mask_generator` guarantees for `grid` (B, T', H', W').

    Handing it to `encode` keeps the training step free of a device→host sync; None (a custom
    callable without the method) falls back to reading the count from the mask.
    """
    count = getattr(mask_generator, "num_visible_per_sample", None)
    return None if count is None else int(count(grid))


class TargetMixin:
    """Target choice and decoder masking, shared by the MAE and HPM recipes (see module doc).

    Subclasses call :meth:`_setup_targets` in ``__init__`` and use :meth:`_decode_ids`,
    :meth:`_full_target` and :meth:`_token_loss` in ``forward``.
    """

    model: nn.Module
    mask_generator: Any

    def _setup_targets(self, target: str, feature_teacher: Optional[Mapping[str, Any]],
                       decoder_mask: bool, decoder_mask_ratio: float) -> None:
        if target not in TARGETS:
            raise ValueError(f"method.target must be one of {TARGETS}, got {target!r}")
        self.target = target
        teacher = None
        if target == "teacher_features":
            if not isinstance(feature_teacher, Mapping) or "path" not in feature_teacher or \
                    "model" not in feature_teacher:
                raise ValueError("method.target=teacher_features needs method.feature_teacher = "
                                 "{model: <our or timm model name>, path: <local checkpoint>, kwargs: {...}}")
            unknown = sorted(set(feature_teacher) - {"model", "path", "kwargs"})
            if unknown:
                raise TypeError(f"method.feature_teacher: unknown key(s) {unknown}; allowed: model, path, kwargs")
            teacher = load_feature_teacher(
                os.fspath(feature_teacher["path"]), str(feature_teacher["model"]),
                dict(feature_teacher.get("kwargs") or {}),
                getattr(self.model, "input_mean", None), getattr(self.model, "input_std", None))
        elif feature_teacher is not None:
            raise ValueError("method.feature_teacher is only used with method.target=teacher_features")
        # Frozen teacher kept out of the module tree (like HPM's EMA teacher): DeepSpeed must
        # neither cast nor partition it and it is not trained; it follows the input's device.
        self.__dict__["feature_teacher"] = teacher
        if target != "pixel":
            want = teacher.dim if teacher is not None else self.model.encoder.embed_dim
            have = getattr(self.model, "target_dim", None)
            if have != want:
                raise ValueError(f"method.target={target} needs the decoder head to output the {want}-d "
                                 f"features: build the model with model.kwargs.target_dim={want} (now {have})")
        self.decoder_mask = bool(decoder_mask)
        self.decoder_mask_ratio = float(decoder_mask_ratio)
        self.decoder_mask_generator = RunningCellMaskGenerator(decoder_mask_ratio) if decoder_mask else None

    def _decode_ids(self, mask: torch.Tensor, grid: Tuple[int, int, int, int]) -> Optional[torch.Tensor]:
        """``[B, K]`` ascending ids of the tokens the decoder reconstructs, or None (all masked)."""
        if self.decoder_mask_generator is None:
            return None
        k = num_decoded(self.mask_generator.num_masked_per_sample(grid), self.decoder_mask_ratio)
        dmask = self.decoder_mask_generator(grid, device=mask.device)
        return decoder_token_ids(mask, dmask, k)

    @torch.no_grad()
    def _full_target(self, x: torch.Tensor, ema_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Target for all N tokens: ``[B, N, P]`` pixels or ``[B, N, D]`` features."""
        if self.target == "pixel":
            return self.model.target(x)
        if self.target == "ema_features":
            if ema_features is None:
                raise RuntimeError("target=ema_features: the EMA teacher's features were not computed")
            return ema_features
        teacher = self.feature_teacher
        if teacher.scale.device != x.device:
            teacher.to(x.device)
        with torch.inference_mode():
            feats = teacher(x.float(), self.model.grid(x))
        return feats.clone()  # a normal tensor, usable in autograd-recorded ops

    def _token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-token L_rec ``[B, K]`` (Eq. 3 with M = MSE for pixels, ℓ2-normalized MSE for features)."""
        if self.target == "pixel":
            return reconstruction_loss(pred, target).per_patch
        return normalized_feature_loss(pred, target)


class MAE(TargetMixin, nn.Module):
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
        # EMA teacher only for target=ema_features; out of the module tree (see HPM).
        self.__dict__["teacher"] = ema_copy(model) if target == "ema_features" else None

    def forward(self, batch: Any, progress: float = 0.0) -> Dict[str, torch.Tensor]:
        x = clip_of(batch)
        grid = self.model.grid(x)
        full_grid = (x.shape[0], *grid)
        mask = self.mask_generator(full_grid, progress=progress, device=x.device)
        ids = self._decode_ids(mask, full_grid)
        ema = None
        if self.teacher is not None:
            if next(self.teacher.parameters()).device != x.device:
                self.teacher.to(x.device)
            with torch.inference_mode():
                ema = self.teacher.encode(x.float())
            ema = ema.clone()
        latent = self.model.encode(x, mask, num_visible=num_visible(self.mask_generator, full_grid))
        pred = self.model.decode(latent, mask, head="pixel", grid=grid, decode_ids=ids)
        with torch.no_grad():
            target = take_tokens(self._full_target(x, ema), mask, ids)
        loss = self._token_loss(pred, target).mean()
        return {"loss": loss, "loss_rec": loss.detach()}

    def on_step_end(self) -> None:
        """EMA update of the feature teacher (Eq. 1) with target=ema_features; else nothing."""
        if self.teacher is not None:
            ema_update_(self.teacher, self.model, self.momentum)

    def teacher_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        return None if self.teacher is None else self.teacher.state_dict()

    def load_teacher_state_dict(self, state: Optional[Dict[str, torch.Tensor]]) -> None:
        if self.teacher is not None and state is not None:
            self.teacher.load_state_dict(state)
