"""Model registry: ``create_model(name, **overrides)``.

One short function per model, registered with :func:`register_model`. Overrides are checked
against the model class's constructor: a misspelt keyword (``decoder_dept=7``) raises
``TypeError`` naming it instead of being swallowed; an unknown model name raises ``ValueError``.

Sizes (encoder width / depth / heads) and VideoMAE decoder defaults (width / heads; depth 4):
=======  ==================  =================
size     encoder             video decoder
=======  ==================  =================
tiny     192 / 12 / 3        128 / 2 heads (*)
small    384 / 12 / 6        192 / 3 heads
base     768 / 12 / 12       384 / 6 heads
large    1024 / 24 / 16      512 / 8 heads
huge     1280 / 32 / 16      640 / 8 heads
=======  ==================  =================

(*) VideoMAE has no tiny pre-training model; we keep its 64-d attention heads with 2 heads. Image
models (``pretrain_mae_*``: ``num_frames=1, tubelet_size=1``) use MAE's 8 × 512-d, 16-head decoder.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Any, Callable

from torch import nn

from .autoencoder import MaskedAutoencoder
from .classifier import VideoClassifier

__all__ = ["register_model", "create_model", "list_models", "MODEL_SIZES", "VIDEO_DECODERS", "FOREIGN_KWARGS"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16),
}
VIDEO_DECODERS: dict[str, dict[str, int]] = {
    "tiny": dict(decoder_embed_dim=128, decoder_num_heads=2),
    "small": dict(decoder_embed_dim=192, decoder_num_heads=3),
    "base": dict(decoder_embed_dim=384, decoder_num_heads=6),
    "large": dict(decoder_embed_dim=512, decoder_num_heads=8),
    "huge": dict(decoder_embed_dim=640, decoder_num_heads=8),
}
_VIDEO = dict(img_size=224, patch_size=16, num_frames=16, tubelet_size=2)
_IMAGE = dict(img_size=224, patch_size=16, num_frames=1, tubelet_size=1)


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its ``__name__``."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("pretrain_videomae_small_patch16_224",
    num_frames=8, loss_predictor=True)``.

    Raises:
        ValueError: unknown ``name`` (with close matches).
        TypeError: an override the model's constructor does not take (naming it).
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (available: {list_models()})")
    return _REGISTRY[name](**overrides)


# Keyword arguments of the peers' model code (VideoMAE V1/V2, MAE, timm) -> our (VideoMAE V1)
# name for the same thing. They are refused with a "did you mean" naming ours, as timm refuses
# an unknown kwarg, rather than accepted under two names: a config then has one spelling per
# setting, so two runs of the same model never differ in their saved config (and resume digest)
# by a synonym alone, and nothing of the peers' meaning is silently reinterpreted.
FOREIGN_KWARGS: dict[str, str] = {
    "with_cp": "use_checkpoint",              # VideoMAE V2
    "grad_checkpointing": "use_checkpoint",   # timm
    "head_drop_rate": "fc_drop_rate",         # VideoMAE V2
    "all_frames": "num_frames",               # VideoMAE V1/V2 fine-tuning
    "encoder_embed_dim": "embed_dim",         # VideoMAE pre-training (PretrainVisionTransformer)
    "encoder_depth": "depth",
    "encoder_num_heads": "num_heads",
    "encoder_in_chans": "in_chans",
    "decoder_num_classes": "target_dim",
    "drop_path": "drop_path_rate",
    "proj_drop_rate": "drop_rate",            # timm
    "layer_scale_init_value": "init_values",  # BEiT / ConvNeXt spelling of layer scale
    "layer_scale_init_values": "init_values",
    "layerscale_init": "init_values",
    "init_value": "init_values",
    "class_token": "cls_token",               # timm
    "use_cls_token": "cls_token",
    "global_pool": "use_mean_pooling",        # timm: 'avg' is use_mean_pooling=True
    "use_abs_pos_emb": "use_learnable_pos_emb",
    "norm_pix": "norm_pix_loss",
}


def _build(cls: type, name: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> nn.Module:
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        hints = {}
        for u in unknown:
            ours = FOREIGN_KWARGS.get(u)
            if ours is not None and ours in valid:
                hints[u] = f"{u!r} (did you mean {ours!r}? that is the VideoMAE name used here)"
            elif ours is not None:
                hints[u] = f"{u!r} (another code base's name for {ours!r}, which {cls.__name__} does not take)"
            else:
                close = difflib.get_close_matches(u, valid, n=1)
                hints[u] = f"{u!r} (did you mean {close[0]!r}?)" if close else repr(u)
        raise TypeError(f"{name}: unknown argument(s) {'; '.join(hints[u] for u in unknown)}. Valid: {valid}")
    return cls(**{**defaults, **overrides})


def _pretrain_video(size: str, name: str, overrides: dict[str, Any]) -> nn.Module:
    defaults = {**_VIDEO, **MODEL_SIZES[size], **VIDEO_DECODERS[size], "decoder_depth": 4, "norm_pix_loss": True}
    return _build(MaskedAutoencoder, name, defaults, overrides)


def _pretrain_image(size: str, name: str, overrides: dict[str, Any]) -> nn.Module:
    defaults = {**_IMAGE, **MODEL_SIZES[size], "decoder_embed_dim": 512, "decoder_depth": 8,
                "decoder_num_heads": 16, "norm_pix_loss": True}
    return _build(MaskedAutoencoder, name, defaults, overrides)


def _classifier(size: str, name: str, overrides: dict[str, Any]) -> nn.Module:
    return _build(VideoClassifier, name, {**_VIDEO, **MODEL_SIZES[size]}, overrides)


# --- video pre-training (VideoMAE) ------------------------------------------------------------
@register_model
def pretrain_videomae_tiny_patch16_224(**overrides: Any) -> nn.Module:
    return _pretrain_video("tiny", "pretrain_videomae_tiny_patch16_224", overrides)


@register_model
def pretrain_videomae_small_patch16_224(**overrides: Any) -> nn.Module:
    return _pretrain_video("small", "pretrain_videomae_small_patch16_224", overrides)


@register_model
def pretrain_videomae_base_patch16_224(**overrides: Any) -> nn.Module:
    return _pretrain_video("base", "pretrain_videomae_base_patch16_224", overrides)


@register_model
def pretrain_videomae_large_patch16_224(**overrides: Any) -> nn.Module:
    return _pretrain_video("large", "pretrain_videomae_large_patch16_224", overrides)


@register_model
def pretrain_videomae_huge_patch16_224(**overrides: Any) -> nn.Module:
    return _pretrain_video("huge", "pretrain_videomae_huge_patch16_224", overrides)


# --- image pre-training (MAE / HPM image, T = 1) -----------------------------------------------
@register_model
def pretrain_mae_base_patch16_224(**overrides: Any) -> nn.Module:
    return _pretrain_image("base", "pretrain_mae_base_patch16_224", overrides)


@register_model
def pretrain_mae_large_patch16_224(**overrides: Any) -> nn.Module:
    return _pretrain_image("large", "pretrain_mae_large_patch16_224", overrides)


# --- fine-tuning classifiers -------------------------------------------------------------------
@register_model
def vit_tiny_patch16_224(**overrides: Any) -> nn.Module:
    return _classifier("tiny", "vit_tiny_patch16_224", overrides)


@register_model
def vit_small_patch16_224(**overrides: Any) -> nn.Module:
    return _classifier("small", "vit_small_patch16_224", overrides)


@register_model
def vit_base_patch16_224(**overrides: Any) -> nn.Module:
    return _classifier("base", "vit_base_patch16_224", overrides)


@register_model
def vit_large_patch16_224(**overrides: Any) -> nn.Module:
    return _classifier("large", "vit_large_patch16_224", overrides)


@register_model
def vit_huge_patch16_224(**overrides: Any) -> nn.Module:
    return _classifier("huge", "vit_huge_patch16_224", overrides)
