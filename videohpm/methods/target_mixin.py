"""Target choice and decoder masking shared by the MAE and HPM recipes (`TargetMixin`).

- ``target``: ``pixel`` (default), ``ema_features`` (the encoder features of an EMA copy of the
  model, HPM journal Table 1 "EMA features"; the recipe keeps an `EmaTeacher`), or
  ``teacher_features`` (a frozen pre-trained teacher from a local file,
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
from typing import Any, Mapping, Optional, Tuple

import torch
from torch import nn

from videohpm.masking.running_cell import RunningCellMaskGenerator, decoder_token_ids, num_decoded
from videohpm.models.targets import TARGETS, load_feature_teacher, normalized_feature_loss
from videohpm.objectives.reconstruction import reconstruction_loss, select_masked

__all__ = ["TargetMixin", "take_tokens"]


def take_tokens(x: torch.Tensor, mask: torch.Tensor, ids: Optional[torch.Tensor],
                count: Optional[int] = None) -> torch.Tensor:
    """Per-token values ``x: [B, N, ...]`` of the reconstructed tokens: the masked ones
    (``x[mask]``, ascending) or, with decoder masking, those at ``ids: [B, K]`` (ascending).
    ``count``: masked tokens per sample (the prediction's length), so the step needs no
    device→host sync (:func:`~videohpm.objectives.reconstruction.select_masked`)."""
    if ids is None:
        return select_masked(x, mask, key="target", count=count)
    return torch.gather(x, 1, ids.view(*ids.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


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
