"""Pre-training recipes: which mask strategy, which objectives, teacher or not.

A recipe is an `nn.Module` with `forward(batch, progress) -> {"loss": ..., parts...}` and
`on_step_end()` (called after every optimizer step). The engine knows nothing else about it.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict

from torch import nn

from videohpm.methods.hpm import HPM
from videohpm.methods.mae import MAE

_RECIPES: Dict[str, Callable[..., nn.Module]] = {"mae": MAE, "hpm": HPM}


def register_recipe(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a recipe under `name` (one file + one config key per method)."""
    if name in _RECIPES:
        raise ValueError(f"recipe {name!r} is already registered")
    _RECIPES[name] = factory


def available_recipes() -> list:
    return sorted(_RECIPES)


def build_recipe(name: str, model: nn.Module, mask_generator: Any = None, **kwargs: Any) -> nn.Module:
    """Build the recipe `name` around `model`; unknown names and keyword arguments raise.

    Example: `build_recipe("hpm", create_model("pretrain_videomae_small_patch16_224",
    loss_predictor=True), make_mask_generator("hpm", mask_ratio=0.9), loss_pred="relative")`.
    """
    if name not in _RECIPES:
        raise ValueError(f"method.name: unknown recipe {name!r}; available: {available_recipes()}")
    factory = _RECIPES[name]
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(k for k in kwargs if k not in params or k in ("model", "mask_generator"))
        if unknown:
            allowed = sorted(k for k in params if k not in ("self", "model", "mask_generator"))
            raise TypeError(f"method: unknown option(s) {unknown} for recipe {name!r}; allowed: {allowed}")
    if "mask_generator" in params:
        return factory(model, mask_generator, **kwargs)
    return factory(model, **kwargs)


__all__ = ["MAE", "HPM", "build_recipe", "register_recipe", "available_recipes"]
