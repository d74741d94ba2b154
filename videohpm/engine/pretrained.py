"""A fine-tuning model sized like the checkpoint it starts from.

`model_final.pth` stores the config of the run that wrote it. When `model.pretrained` names such a
file, `fit_model_to_pretrained(cfg)` compares the encoder sizes (`SIZE_KEYS`) of the configured
model with those of the checkpoint's model, both built on the meta device (no memory, no init):

- a size that `model.kwargs` leaves to the model name's default (`vit_base_patch16_224`: 768
  wide, 12 deep, …) is taken from the checkpoint and written into `model.kwargs`, so the run's
  saved `config.yaml` says what was built;
- a size that `model.kwargs` sets and the checkpoint contradicts is a `ConfigError` that names
  the checkpoint's sizes and the exact overrides that fit it.

Checkpoints without a stored config (VideoMAE's, Hugging Face's) are left to `load_pretrained`,
which names the keys that do not fit.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf
from torch import nn

from videohpm.config import ConfigError
from videohpm.engine.build import MetaDevice
from videohpm.models import create_model
from videohpm.models.formats import read_checkpoint_file

__all__ = ["SIZE_KEYS", "encoder_sizes", "stored_model_config", "fit_model_to_pretrained"]

log = logging.getLogger(__name__)

# The encoder's shape: what must agree for the pre-trained weights to load at all. (Input size
# and frames are not among them: the position table is interpolated.)
SIZE_KEYS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "tubelet_size")


def encoder_sizes(model: nn.Module) -> Dict[str, Any]:
    """`SIZE_KEYS` of a built model's encoder (a classifier's or a masked autoencoder's)."""
    enc = model.encoder
    block = enc.blocks[0]
    return {"embed_dim": int(enc.embed_dim), "depth": len(enc.blocks), "num_heads": int(block.attn.num_heads),
            "mlp_ratio": block.mlp.fc1.out_features / int(enc.embed_dim), "patch_size": int(enc.patch_size),
            "tubelet_size": int(enc.tubelet_size)}


def _sizes_of(name: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    with MetaDevice():
        return encoder_sizes(create_model(name, **kwargs))


def _same(a: Any, b: Any) -> bool:
    """Two sizes equal (`mlp_ratio` up to the rounding of the hidden width)."""
    try:
        return abs(float(a) - float(b)) <= 1e-3 * max(1.0, abs(float(b)))
    except (TypeError, ValueError):
        return False


def stored_model_config(path: str) -> Optional[Dict[str, Any]]:
    """The `model` section (`{"name", "kwargs"}`) of the config a checkpoint file stores (our
    `model_final.pth`), or None: no such file, not readable here, or no stored config."""
    if not os.path.isfile(path):
        return None
    try:
        obj = read_checkpoint_file(path)
    except (OSError, ValueError):  # refused or unreadable: the loader reports it, naming the file
        return None
    config = obj.get("config") if isinstance(obj, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return None
    return {"name": model["name"], "kwargs": dict(model.get("kwargs") or {})}


def fit_model_to_pretrained(cfg: DictConfig) -> Dict[str, Any]:
    """Size `cfg.model` like the checkpoint of `cfg.model.pretrained` (module doc); returns the
    `model.kwargs` entries taken from it ({} when nothing changed).

    Raises:
        ConfigError: a size set in `model.kwargs` contradicts the checkpoint's; the message names
            the checkpoint's sizes and the overrides that fit them.
    """
    path = cfg.model.pretrained
    stored = stored_model_config(str(path)) if path else None
    if stored is None:
        return {}
    kwargs = dict(OmegaConf.to_container(cfg.model.kwargs, resolve=True))
    unbuildable = (TypeError, ValueError, KeyError, AttributeError, IndexError)
    try:
        theirs = _sizes_of(stored["name"], stored["kwargs"])
    except unbuildable:  # a model of another kind
        return {}
    # the sizes the config sets are compared as given: the name's defaults of the others may not
    # even build with them (embed_dim=64 and ViT-B's 12 heads) until they are the checkpoint's
    conflicts = [k for k in SIZE_KEYS if k in kwargs and not _same(kwargs[k], theirs[k])]
    try:
        defaults = _sizes_of(str(cfg.model.name), {k: v for k, v in kwargs.items() if k not in SIZE_KEYS})
    except unbuildable:  # a model of another kind (or no model): `load_pretrained` names what does not fit
        defaults = None
    differ = [] if defaults is None else [k for k in SIZE_KEYS if k not in kwargs and not _same(defaults[k], theirs[k])]
    if conflicts:
        sizes = ", ".join(f"{k}={theirs[k]:g}" for k in SIZE_KEYS)
        fix = " ".join(f"model.kwargs.{k}={theirs[k]:g}" for k in conflicts)
        mine = ", ".join(f"{k}={kwargs[k]}" for k in conflicts)
        raise ConfigError(f"model.pretrained: {path} holds a {stored['name']} encoder with {sizes}, but model.kwargs "
                          f"sets {mine}: give {fix} to fine-tune it (or another model.pretrained)")
    adopted = {k: theirs[k] for k in differ}
    if adopted:
        with_flag = OmegaConf.is_readonly(cfg)
        OmegaConf.set_readonly(cfg, False)
        for k, v in adopted.items():
            cfg.model.kwargs[k] = int(v) if float(v).is_integer() else float(v)
        OmegaConf.set_readonly(cfg, with_flag)
        log.warning("model.kwargs: %s taken from %s (its stored config, %s; %s left them to its default)",
                    ", ".join(f"{k}={v:g}" for k, v in adopted.items()), path, stored["name"], cfg.model.name)
    return adopted
