"""Build the model, mask generator and recipe from a config — and check that they *can* be built
before any work starts.

`check_buildable(cfg)` constructs everything on PyTorch's `meta` device (no memory, no init
cost, even for ViT-H), so a misspelt model keyword (`model.kwargs.decoder_dept`), mask option or
recipe option fails in a second with the config key in the message, before the process group,
the data or DeepSpeed are touched.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from videohpm.config import ConfigError
from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe
from videohpm.models import create_model

__all__ = ["build_model", "build_mask_generator", "build_recipe_from_config", "build_all", "check_buildable", "MetaDevice"]

log = logging.getLogger(__name__)

NO_MASK = ("", "none", "null")


def _kwargs(node: Any) -> Dict[str, Any]:
    return dict(OmegaConf.to_container(node, resolve=True)) if isinstance(node, DictConfig) else dict(node or {})


@contextmanager
def _config_key(value_key: str, type_key: str, keep: Tuple[str, ...] = ()) -> Iterator[None]:
    """A factory's ``ValueError`` (a bad name or value) as a :class:`ConfigError` naming
    ``value_key``, its ``TypeError`` (a bad keyword) naming ``type_key``; a message that already
    starts with one of ``keep`` (it names its own key) is kept as it is."""
    try:
        yield
    except (TypeError, ValueError) as e:
        msg = str(e)
        if keep and msg.startswith(keep):
            raise ConfigError(msg) from e
        raise ConfigError(f"{value_key if isinstance(e, ValueError) else type_key}: {msg}") from e


def build_model(cfg: DictConfig) -> nn.Module:
    """`create_model(cfg.model.name, **cfg.model.kwargs)`; errors name `model.name` / `model.kwargs`."""
    with _config_key("model.name", "model.kwargs"):
        return create_model(cfg.model.name, **_kwargs(cfg.model.kwargs))


def build_mask_generator(cfg: DictConfig) -> Optional[Any]:
    """`make_mask_generator(cfg.mask.name, **cfg.mask.kwargs)`, or None for `mask.name: none`."""
    name = (cfg.mask.name or "").lower()
    if name in NO_MASK:
        if cfg.mask.kwargs:
            raise ConfigError(f"mask.kwargs: given {sorted(cfg.mask.kwargs)} but mask.name is {cfg.mask.name!r}")
        return None
    with _config_key("mask", "mask.kwargs"):
        return make_mask_generator(cfg.mask.name, **_kwargs(cfg.mask.kwargs))


def build_recipe_from_config(cfg: DictConfig, model: nn.Module, mask_generator: Optional[Any]) -> nn.Module:
    """`build_recipe(cfg.method.name, model, mask_generator, **cfg.method.kwargs)`."""
    with _config_key("method", "method.kwargs", keep=("method", "mask", "model")):
        return build_recipe(cfg.method.name, model, mask_generator, **_kwargs(cfg.method.kwargs))


def build_all(cfg: DictConfig) -> Tuple[nn.Module, Optional[Any], nn.Module]:
    """(model, mask generator, recipe) on the current default device."""
    model = build_model(cfg)
    mask = build_mask_generator(cfg)
    recipe = build_recipe_from_config(cfg, model, mask)
    return model, mask, recipe


class MetaDevice(TorchFunctionMode):
    """Like `with torch.device("meta")`, except for the small 1-d ranges (`linspace`, `arange`,
    `logspace`) that constructors turn into Python lists (stochastic-depth rates, position
    tables): those are made on the CPU, where they have values."""

    _ON_CPU = {torch.linspace, torch.arange, torch.logspace}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get("device") is None:
            kwargs["device"] = "cpu" if func in self._ON_CPU else "meta"
        return func(*args, **kwargs)


def check_buildable(cfg: DictConfig) -> None:
    """Build model, mask generator and recipe on the `meta` device; raise `ConfigError` on a bad
    name, keyword or combination. Cheap: no parameter memory is allocated, even for ViT-H."""
    with MetaDevice():
        build_all(cfg)
