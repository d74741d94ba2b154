"""Pre-training recipes: which mask strategy, which objectives, teacher or not.

A recipe is a `videohpm.methods.base.Recipe` (an `nn.Module`): `forward(batch, progress) ->
{"loss": ..., parts...}`, `on_step_end()` (called after every optimizer step), its EMA teacher
(`EmaTeacher`, or None), splits and `predict`. The engine knows nothing else about it.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict

from torch import nn

from videohpm.methods.adamae import AdaMAE
from videohpm.methods.base import EmaTeacher, Recipe
from videohpm.methods.ccmim import CCMIM
from videohpm.methods.classification import Classification
from videohpm.methods.hpm import HPM
from videohpm.methods.linear_probe import LinearProbe
from videohpm.methods.mae import MAE
from videohpm.methods.mto import enable_mto

_RECIPES: Dict[str, Callable[..., Recipe]] = {
    "mae": MAE,
    "hpm": HPM,
    "ccmim": CCMIM,
    "adamae": AdaMAE,  # learned token sampler (AdaMAE, CVPR 2023)
    "classification": Classification,  # fine-tuning
    "linear_probe": LinearProbe,  # frozen encoder, BN + linear head (supplement Table S3)
}


def register_recipe(name: str, factory: Callable[..., Recipe]) -> None:
    """Add a recipe under `name` (one file + one config key per method)."""
    if _RECIPES.get(name) is factory:
        return
    if name in _RECIPES:
        raise ValueError(f"recipe {name!r} is already registered")
    _RECIPES[name] = factory


def available_recipes() -> list:
    return sorted(_RECIPES)


def recipe_class(name: str) -> type:
    """The `Recipe` subclass registered as `name`, for its class attributes (`classifier`,
    `head_outside_model`, `learned_sampler`) before anything is built."""
    if name not in _RECIPES:
        raise ValueError(f"method.name: unknown recipe {name!r}; available: {available_recipes()}")
    factory = _RECIPES[name]
    if not (isinstance(factory, type) and issubclass(factory, Recipe)):
        raise TypeError(f"recipe {name!r} is registered as {factory!r}, not a Recipe subclass")
    return factory


def build_recipe(name: str, model: nn.Module, mask_generator: Any = None, *, mto: Any = None,
                 **kwargs: Any) -> Recipe:
    """Build the recipe `name` around `model`; unknown names and keyword arguments raise.

    Example: `build_recipe("hpm", create_model("pretrain_videomae_small_patch16_224",
    loss_predictor=True), make_mask_generator("hpm", mask_ratio=0.9), loss_pred="relative")`.

    `mto`: add MTO's decoder-token losses (MTO paper Alg. 1) to a recipe whose decoder sees mask
    tokens (mae, hpm, ccmim): `true` for the defaults or a dict of `enable_mto` options
    (`weight`, `w_spa`, `w_e`, `w_r`, `decoders`, ...). Computed from the decoder's own tokens
    (forward hooks), without a second pass.
    """
    recipe = _build(name, model, mask_generator, **kwargs)
    if mto:
        if name not in ("mae", "hpm", "ccmim"):
            raise ValueError(f"method.mto: recipe {name!r} has no decoder over mask tokens")
        opts = {} if mto is True else dict(mto)
        try:
            enable_mto(recipe, **opts)
        except TypeError as e:
            raise TypeError(f"method.mto: {e}") from None
    return recipe


def _build(name: str, model: nn.Module, mask_generator: Any, **kwargs: Any) -> Recipe:
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


__all__ = ["Recipe", "EmaTeacher", "MAE", "HPM", "CCMIM", "AdaMAE", "enable_mto", "build_recipe", "register_recipe", "available_recipes", "recipe_class"]
