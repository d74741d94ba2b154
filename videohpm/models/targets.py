"""Reconstruction targets beyond pixels: feature distillation (HPM journal §4.1.1, Table 1).

The HPM journal version compares four targets for the same recipe: raw/normalized RGB pixels
(MAE), and the features of an EMA teacher, of DINO and of CLIP. "For knowledge distillation
cases, we first apply ℓ2 normalization to the features output from the teacher and the student,
and then minimize their MSE distances" — :func:`normalized_feature_loss`. HPM's loss predictor then
learns to rank *this* per-token loss (it is L_rec of Eq. 3 with the feature target, so Eq. 4–7
apply unchanged).

Targets (``method.kwargs.target``):

- ``pixel`` (default): :meth:`MaskedAutoencoder.target`.
- ``ema_features``: the EMA teacher's encoder output over all N tokens (after its final norm).
  The recipes read it from the teacher forward HPM runs anyway (no second pass).
- ``teacher_features``: a frozen pre-trained :class:`FeatureTeacher` loaded from a local file
  (:func:`load_feature_teacher`).

The student's pixel decoder d_φ predicts the target: a model built with
``target_dim = D_teacher`` (``model.kwargs.target_dim``) has a ``D_teacher``-wide head; the
recipes check that it matches and say which value to set.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from .loading import load_pretrained
from .formats import read_checkpoint_file, unwrap_state_dict
from .patches import IMAGENET_MEAN, IMAGENET_STD
from .registry import create_model, list_models
from .vit import token_grid

__all__ = [
    "TARGETS",
    "normalized_feature_loss",
    "resample_tokens",
    "FeatureTeacher",
    "load_feature_teacher",
]

TARGETS = ("pixel", "ema_features", "teacher_features")
Grid3 = Tuple[int, int, int]


def normalized_feature_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-token feature-distillation loss of HPM journal Table 1: MSE of ℓ2-normalized features.

    ``ℓ_i = mean_d (p̂_id − t̂_id)²`` with ``p̂ = p/‖p‖₂``, ``t̂ = t/‖t‖₂``; equal to
    ``(2 − 2·cos(p_i, t_i)) / D``, so minimizing it maximizes the cosine similarity.

    Args:
        pred: ``[B, K, D]`` the decoder's prediction for K tokens.
        target: ``[B, K, D]`` teacher features of the same tokens (detached here).
    Returns:
        ``[B, K]`` float32 (computed in fp32 even under autocast: it is also the ground truth
        of HPM's loss predictor, Eq. 4–7).
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"feature loss: pred and target must both be [B, K, D], got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    p = F.normalize(pred.float(), dim=-1, eps=eps)
    t = F.normalize(target.detach().float(), dim=-1, eps=eps)
    return (p - t).pow(2).mean(dim=-1)


def resample_tokens(tokens: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]) -> torch.Tensor:
    """Resample per-token features from one token grid to another.

    How a per-token target is formed for a teacher whose token grid differs from the student's
    (:func:`resample_tokens`): the teacher's tokens are laid out on their grid ``[D, T_t, H_t, W_t]``
    and resampled to the student's ``(T', H', W')``: by area averaging when every student cell
    covers a whole number of teacher cells (e.g. a 2-frame tubelet over 2 per-frame teacher maps,
    or a 14×14 teacher map onto 7×7), otherwise by trilinear interpolation. A 2-D image teacher
    (timm ViT: DINO, CLIP, ...) on video is run on every frame separately (frames folded into the
    batch); its per-frame maps form ``T_t = T`` slices, so the target of a tubelet is the average of
    its ``t`` frames' features at that spatial cell.

    Args:
        tokens: ``[B, N_src, D]`` time-major on ``src_grid = (T_s, H_s, W_s)``.
        dst_grid: ``(T', H', W')``.
    Returns:
        ``[B, N_dst, D]`` time-major on ``dst_grid``; the same tensor if the grids are equal.
        Area averaging (``adaptive_avg_pool3d``) when each source size is a multiple of the
        destination size (every student token covers whole teacher tokens), else trilinear
        interpolation (``align_corners=False``).
    """
    src = tuple(int(g) for g in src_grid)
    dst = tuple(int(g) for g in dst_grid)
    b, n, d = tokens.shape
    if n != math.prod(src):
        raise ValueError(f"resample_tokens: {n} tokens do not fill the source grid {src}")
    if src == dst:
        return tokens
    x = tokens.transpose(1, 2).reshape(b, d, *src)
    if all(s % t == 0 for s, t in zip(src, dst)):
        x = F.adaptive_avg_pool3d(x.float(), dst)
    else:
        x = F.interpolate(x.float(), size=dst, mode="trilinear", align_corners=False)
    return x.to(tokens.dtype).flatten(2).transpose(1, 2)


class FeatureTeacher(nn.Module):
    """A frozen pre-trained network giving one feature vector per student token.

    ``kind="video"``: one of our models (``MaskedAutoencoder`` / ``VideoClassifier``; weights
    from our checkpoints, VideoMAE V1/V2 or HF VideoMAE via :func:`load_pretrained`): its encoder
    runs on the clip, tokens ``[B, N_t, D]`` on its own grid. ``kind="image"``: a timm ViT run on
    every frame, patch tokens (prefix tokens such as [CLS] dropped) after its final norm.

    Inputs arrive normalized for the *student* (``student_mean``/``student_std``); they are
    re-normalized with the teacher's own statistics (e.g. CLIP's) before the forward.
    Call it under ``torch.inference_mode()``; it is frozen (``requires_grad=False``, eval mode).
    """

    def __init__(self, net: nn.Module, kind: str, dim: int,
                 mean: Optional[Sequence[float]], std: Optional[Sequence[float]],
                 student_mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                 student_std: Optional[Sequence[float]] = IMAGENET_STD) -> None:
        super().__init__()
        if kind not in ("video", "image"):
            raise ValueError(f"FeatureTeacher kind must be 'video' or 'image', got {kind!r}")
        self.net = net.float().eval().requires_grad_(False)
        self.kind = kind
        self.dim = int(dim)
        # x_teacher = (x·σ_s + μ_s − μ_t)/σ_t = x·scale + shift, per channel; identity if equal
        s_mean, s_std = _stats(student_mean, 0.0), _stats(student_std, 1.0)
        t_mean, t_std = _stats(mean, 0.0), _stats(std, 1.0)
        self.register_buffer("scale", (s_std / t_std).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).view(1, 3, 1, 1, 1), persistent=False)
        self.renormalize = not (torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))

    def train(self, mode: bool = True) -> "FeatureTeacher":
        return super().train(False)  # always frozen: no dropout / drop-path

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """Features on the student's token grid.

        Args:
            x: ``[B, C, T, H, W]`` student-normalized clip (T = 1 for images).
            grid: the student's token grid ``(T', H', W')`` for ``x``.
        Returns:
            ``[B, T'·H'·W', D]`` (time-major).
        """
        if x.dim() != 5:
            raise ValueError(f"FeatureTeacher expects x: [B, C, T, H, W], got {tuple(x.shape)}")
        if self.renormalize:
            if x.shape[1] != 3:
                raise ValueError(f"re-normalizing for the teacher needs 3 channels, got x {tuple(x.shape)}")
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        b, c, t, h, w = x.shape
        if self.kind == "image":
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # teacher run per frame
            feats = self.net.forward_features(frames)[:, self.net.num_prefix_tokens:]  # [B·T, h·w, D]
            ph, pw = _timm_patch_grid(self.net, h, w)
            feats = feats.reshape(b, t * ph * pw, -1)  # time-major: frame, then row, then column
            src: Grid3 = (t, ph, pw)
        else:
            enc = self.net.encoder
            try:
                src = token_grid(x.shape, enc.tubelet_size, enc.patch_size)
            except ValueError as e:
                raise ValueError(f"teacher_features: the video teacher (tubelet {enc.tubelet_size}, patch "
                                 f"{enc.patch_size}) cannot tokenize the input {tuple(x.shape)}: {e}") from None
            feats = enc(x)
        return resample_tokens(feats, src, grid)


def _stats(v: Optional[Sequence[float]], fill: float) -> torch.Tensor:
    return torch.full((3,), fill) if v is None else torch.tensor([float(a) for a in v], dtype=torch.float32)


def _timm_patch_grid(net: nn.Module, h: int, w: int) -> Tuple[int, int]:
    pe = net.patch_embed
    if hasattr(pe, "dynamic_feat_size"):
        return tuple(pe.dynamic_feat_size((h, w)))  # type: ignore[return-value]
    ph, pw = pe.patch_size
    return h // ph, w // pw


def load_feature_teacher(
    path: str | os.PathLike,
    model: str,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    student_mean: Optional[Sequence[float]] = IMAGENET_MEAN,
    student_std: Optional[Sequence[float]] = IMAGENET_STD,
    key: str = "method.feature_teacher",
) -> FeatureTeacher:
    """Build a frozen :class:`FeatureTeacher` from a **local** file; nothing is downloaded.

    Args:
        path: checkpoint file (``.pth``/``.pt``/``.bin``/``.safetensors``) or HF folder.
        model: architecture. One of our registry names (``pretrain_videomae_base_patch16_224``,
            ``vit_base_patch16_224`` …; weights: ours, VideoMAE V1/V2 or HF VideoMAE, converted by
            :func:`load_pretrained`) or a timm model name (``vit_base_patch16_224.dino``,
            ``vit_base_patch16_clip_224.openai`` …) built with ``pretrained=False`` and loaded
            through timm's own ``checkpoint_filter_fn`` (original DINO/CLIP layouts, position
            table resampling). Names in both (``vit_base_patch16_224``) mean ours; write
            ``timm:<name>`` to force timm.
        model_kwargs: extra constructor arguments (``img_size``, ``depth`` …).
        student_mean, student_std: the statistics the student's input is normalized with.
        key: config key named in error messages.
    Raises:
        FileNotFoundError: ``path`` does not exist. ValueError: unknown architecture, or the
        file does not fit it (names the missing / unexpected keys).
    """
    kwargs = dict(model_kwargs or {})
    if path is None or not os.path.exists(os.fspath(path)):
        raise FileNotFoundError(f"{key}.path: teacher checkpoint not found: {path!r} (nothing is downloaded; "
                                "save the teacher's weights to a local file first)")
    force_timm = model.startswith("timm:")
    model = model[len("timm:"):] if force_timm else model
    if not force_timm and model in list_models():
        net = create_model(model, **kwargs)
        report = load_pretrained(net, os.fspath(path))
        bad = [k for k in report.missing if k.startswith("encoder.")] + \
              [m[0] for m in report.mismatched if m[0].startswith("encoder.")]
        if bad or not any(k.startswith("encoder.") for k in report.loaded):
            hint = f" (for timm's {model!r} write model: 'timm:{model}')" if _is_timm(model) else ""
            raise ValueError(f"{key}: {os.fspath(path)} does not fit our {model!r}{hint}: encoder keys "
                             f"missing or mismatched: {bad[:8]}\n{report}")
        return FeatureTeacher(net, "video", net.encoder.embed_dim,
                              getattr(net, "input_mean", IMAGENET_MEAN), getattr(net, "input_std", IMAGENET_STD),
                              student_mean, student_std)
    if not _is_timm(model):
        raise ValueError(f"{key}.model: {model!r} is neither one of our models nor a timm model")
    kwargs.setdefault("dynamic_img_size", True)  # any input resolution (pos table resampled)
    net = timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
    if not isinstance(net, VisionTransformer):
        raise ValueError(f"{key}.model: {model!r} is a {type(net).__name__}; a timm VisionTransformer is needed")
    sd = unwrap_state_dict(read_checkpoint_file(path))
    sd = checkpoint_filter_fn(sd, net)
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}  # a classifier head is unused
    result = net.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{key}: {os.fspath(path)} does not fit timm {model!r}: missing "
                         f"{result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}")
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    return FeatureTeacher(net, "image", net.num_features, cfg.get("mean"), cfg.get("std"),
                          student_mean, student_std)


def _is_timm(name: str) -> bool:
    return bool(timm.is_model(name))

