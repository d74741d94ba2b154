"""The model of a run config with a checkpoint's weights, every key checked, as the tasks need
it: a classifier (`x -> logits`, the test and prediction), an encoder (frozen features, k-NN), the
whole model (export). Checkpoints are read by `videohpm.engine.checkpoint.read_checkpoint` and
converted by `videohpm.models.load_pretrained`; what a recipe keeps outside its model is said by
its class attributes (`videohpm.methods.base.Recipe`), never by its name.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import nn

from videohpm.engine.build import build_model, build_recipe_from_config
from videohpm.engine.checkpoint import read_checkpoint, strip_prefix
from videohpm.methods import available_recipes, recipe_class
from videohpm.models import load_pretrained
from videohpm.precision import autocast_dtype, emulated_bf16_warning

__all__ = ["RecipeLogits", "load_classifier", "eval_amp_dtype", "load_encoder", "load_for_export"]

log = logging.getLogger(__name__)


class RecipeLogits(nn.Module):
    """`x -> logits` of a recipe whose classifier lives outside its model (`head_outside_model`:
    linear probing), for testing, prediction and FLOPs."""

    def __init__(self, recipe: nn.Module) -> None:
        super().__init__()
        self.recipe = recipe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.recipe.logits(x)


def load_classifier(cfg: DictConfig, checkpoint: str, ema: bool = False) -> nn.Module:
    """The classifier of a fine-tuning (`method.name: classification`) or linear-probing
    (`linear_probe`) config with the checkpoint's weights, in eval mode: `x -> logits`.

    Args:
        ema: evaluate the model EMA saved next to the weights (classification with `model_ema`).
    Raises:
        ValueError naming `checkpoint=` when weights are missing or do not fit the model.
    """
    method = str(cfg.method.name)
    kind = recipe_class(method)
    if not kind.classifier:
        classifiers = [n for n in available_recipes() if recipe_class(n).classifier]
        raise ValueError(f"method.name: tools/test.py evaluates classifiers ({', '.join(classifiers)}), "
                         f"got {method!r}")
    weights = read_checkpoint(checkpoint, prefer_full_recipe=kind.weights_outside_model())
    model = build_model(cfg)
    if kind.head_outside_model:
        recipe = build_recipe_from_config(cfg, model, None)
        missing, unexpected = recipe.load_state_dict(strip_prefix(weights.model, "module."), strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint={weights.source}: does not fit the linear probe (missing {missing[:6]}, "
                             f"unexpected {unexpected[:6]}); pass a checkpoint folder of the linear-probing run")
        net: nn.Module = RecipeLogits(recipe)
    else:
        sd = weights.teacher if ema else weights.model
        if sd is None:
            raise ValueError(f"checkpoint={weights.source}: no model EMA saved (train with method.kwargs.model_ema=true)")
        sd = strip_prefix(sd, "model.")  # recipe-level keys of a DeepSpeed checkpoint
        report = load_pretrained(model, sd, strict=False)
        if not report.ok:
            raise ValueError(f"checkpoint={weights.source}: does not fit model {cfg.model.name}:\n{report}")
        net = model
    log.info("loaded %s (%s)", weights.source, ", ".join(f"{k} {v}" for k, v in weights.meta.items()) or "weights")
    return net.eval()


_warn_bf16_emulated = emulated_bf16_warning(log, "train.precision", "evaluation runs in fp32 instead")


def eval_amp_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The evaluation forward's autocast dtype for `train.precision` (None: fp32), by
    `videohpm.precision.autocast_dtype`: bf16 on a CPU only where native."""
    return autocast_dtype(precision, device, _warn_bf16_emulated)


def load_encoder(cfg: DictConfig, checkpoint: Optional[str], teacher: bool = False) -> nn.Module:
    """The model of `cfg` (pre-training or fine-tuning config) with a checkpoint's encoder, in
    eval mode, for frozen-feature evaluation; `checkpoint=None` keeps the random initialisation
    (seeded by `train.seed`: the baseline row of a k-NN table).

    Args:
        teacher: read the EMA teacher saved with the checkpoint (HPM's `θ_t`, Eq. 1) instead of
            the student.
    Raises:
        ValueError naming `checkpoint=` when an encoder weight is missing, unexpected or of
            another shape (decoders, loss predictor and classifier head may be absent).
    """
    torch.manual_seed(int(cfg.train.seed))
    model = build_model(cfg)
    if checkpoint is None:
        log.info("random initialisation (train.seed=%d): no checkpoint", int(cfg.train.seed))
        return model.eval()
    weights = read_checkpoint(checkpoint)
    sd = weights.teacher if teacher else weights.model
    if sd is None:
        raise ValueError(f"checkpoint={weights.source}: no EMA teacher saved (an HPM or ema_features run has one)")
    report = load_pretrained(model, strip_prefix(sd, "model."), strict=False)
    bad = ([k for k in report.missing if k.startswith("encoder.")] + report.unexpected
           + [m[0] for m in report.mismatched])
    if bad:
        raise ValueError(f"checkpoint={weights.source}: its encoder does not fit model {cfg.model.name} "
                         f"(first problems: {bad[:6]}):\n{report}")
    log.info("loaded the %s encoder of %s (%s)", "teacher" if teacher else "student", weights.source,
             ", ".join(f"{k} {v}" for k, v in weights.meta.items()) or "weights")
    return model.eval()


def load_for_export(cfg: DictConfig, checkpoint: str, teacher: bool = False) -> nn.Module:
    """The model of `cfg` with the weights of `checkpoint` (the student, or with `teacher` the
    EMA teacher), in eval mode.

    Every model key must come from the checkpoint and every checkpoint key must land in the
    model (an export of half-random weights would be worse than none); a linear probe's
    recipe-level weights (its BatchNorm + head live outside the model) and a time-pooling head
    (LP-FT's) are refused.

    Raises:
        ValueError naming `checkpoint=` and the keys.
    """
    weights = read_checkpoint(checkpoint)
    sd = weights.teacher if teacher else weights.model
    if sd is None:
        raise ValueError(f"checkpoint={weights.source}: no EMA teacher saved (an HPM or ema_features run has one)")
    if recipe_class(str(cfg.method.name)).head_outside_model:
        raise ValueError(f"method.name={cfg.method.name}: its BatchNorm + head live outside the model and have no slot "
                         "in the export formats; export the pre-trained encoder instead")
    if cfg.model.kwargs.get("time_pooling"):
        raise ValueError("model.kwargs.time_pooling: its head (per-slice features, feat_norm, [C, T'·D]) has no slot "
                         "in the export formats; export the pre-trained encoder instead")
    model = build_model(cfg)
    try:
        report = load_pretrained(model, strip_prefix(sd, "model."), strict=True)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"checkpoint={weights.source}: does not fit model {cfg.model.name} "
                         f"(model.kwargs as in the run's config?):\n{e}") from None
    log.info("loaded %s into %s (%d tensors)", weights.source, cfg.model.name, len(report.loaded))
    return model.eval()
