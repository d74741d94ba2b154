"""Optimizer (AdamW or SGD), parameter groups, the linear lr scaling rule and the per-step lr /
weight-decay update.

Paper settings (supplement Tables S1–S2, VideoMAE): AdamW, weight decay 0.05 with *no* decay on
norms, biases, position tables and tokens; β = (0.9, 0.95) for pre-training and (0.9, 0.999) for
fine-tuning; `lr = base_lr × global_batch / 256` (supplement §A.1, "linear scaling rule");
layer-wise lr decay (1.0 pre-training, 0.75 VideoMAE fine-tuning / 0.8 image fine-tuning).
Linear probing (supplement Table S3, MoCo v3's protocol) uses SGD with momentum 0.9 (no Nesterov)
and no weight decay; the groups, the scaling rule and the schedules are the same code.

Groups carry two extra keys that DeepSpeed's ZeRO optimizers keep untouched: `lr_scale`
(layer decay) and `wd_scale` (1 = decayed, 0 = not). `apply_schedules` writes
`lr = schedule(step) · lr_scale` and `weight_decay = wd_schedule(step) · wd_scale` into every
group before each optimizer step.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "NO_DECAY_PATTERNS",
    "is_no_decay",
    "default_layer_id",
    "build_param_groups",
    "scaled_lr",
    "apply_schedules",
    "build_optimizer",
]

# Names (last component, or anywhere for tokens) that never get weight decay.
NO_DECAY_PATTERNS: Tuple[str, ...] = ("pos_embed", "pos_table", "position", "cls_token", "mask_token", "token")


def is_no_decay(name: str, param: torch.Tensor, extra: Iterable[str] = ()) -> bool:
    """True for parameters that weight decay must skip: 1-d tensors (norm weights, biases),
    `*.bias`, position tables and learned tokens, and anything matching an `extra` pattern
    (a substring of the full name, e.g. a model's `no_weight_decay()` entries)."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    last = name.rsplit(".", 1)[-1]
    if any(p in last for p in NO_DECAY_PATTERNS):
        return True
    return any(e and (name == e or name.endswith("." + e) or e in name) for e in extra)


_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def default_layer_id(name: str, num_layers: int) -> int:
    """Layer index for layer-wise lr decay (BEiT/VideoMAE convention; MAE's `lr_decay.py` and
    timm's `param_groups_layer_decay` also put the class token, the position table and the patch
    embedding in layer 0).

    0: patch embedding, position table, tokens; i + 1: encoder block i; `num_layers + 1`:
    everything after the blocks (final norm, fc_norm, head). Decoder blocks (`decoder.blocks.*`)
    count as the top layer, like the head: they are only trained in pre-training, where the
    decay is 1. Names may carry any prefix (`model.` under a recipe).

    The one copy: `models.classifier.param_groups_layer_decay` (used only by a test) was merged
    here. It matched names from the classifier's root only (`encoder.cls_token`), so under a
    recipe (`model.encoder.cls_token`) it put the class token, the embeddings and the blocks in
    the top layer; this rule is the one the trainer always used.
    """
    if "decoder" in name:
        return num_layers + 1
    m = _BLOCK_RE.search(name)
    if m:
        return int(m.group(1)) + 1
    if any(k in name for k in ("patch_embed", "pos_embed", "cls_token", "mask_token", "pos_table")):
        return 0
    return num_layers + 1


def _num_encoder_layers(module: nn.Module) -> int:
    ids = [int(m.group(1)) for n, _ in module.named_parameters() if "decoder" not in n and (m := _BLOCK_RE.search(n))]
    return max(ids) + 1 if ids else 0


def build_param_groups(
    module: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    no_weight_decay: Sequence[str] = (),
    layer_id_fn: Optional[Callable[[str], int]] = None,
    num_layers: Optional[int] = None,
) -> List[Dict]:
    """Optimizer groups (AdamW or SGD) of `module`'s trainable parameters.

    Args:
        module: the recipe (names like `model.encoder.blocks.3.attn.qkv.weight`).
        weight_decay: decay for matrices; decay-free params get 0 (module docstring).
        layer_decay: lr multiplier per layer below the top, `lr_scale = layer_decay^(L+1−id)`;
            1.0 disables it.
        no_weight_decay: extra name patterns without decay; the `no_weight_decay()` sets of all
            submodules that define it are added automatically (names made relative to `module`).
        layer_id_fn: maps a parameter name to its layer id; defaults to `default_layer_id`.
        num_layers: encoder depth L; inferred from `blocks.<i>.` names when None.
    Returns:
        Non-empty groups with keys `params`, `weight_decay`, `wd_scale`, `lr_scale`, `name`,
        `layer_id` (0 for every group when `layer_decay` is 1) and `param_names`.
    """
    extra = set(no_weight_decay)
    for prefix, sub in module.named_modules():
        fn = getattr(sub, "no_weight_decay", None)
        if callable(fn) and not isinstance(sub, torch.optim.Optimizer):
            try:
                names = fn()
            except TypeError:
                continue
            extra.update(f"{prefix}.{n}" if prefix else n for n in names)
    if num_layers is None:
        num_layers = _num_encoder_layers(module)
    layer_of = layer_id_fn or (lambda n: default_layer_id(n, num_layers))
    groups: Dict[Tuple[int, bool], Dict] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = is_no_decay(name, p, extra)
        layer = layer_of(name) if layer_decay != 1.0 else 0
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - layer) if layer_decay != 1.0 else 1.0
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "wd_scale": 0.0 if no_decay else 1.0,
                "lr_scale": float(scale),
                "name": f"layer{layer}_{'no_decay' if no_decay else 'decay'}",
                "layer_id": layer,
                "param_names": [],
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return [groups[k] for k in sorted(groups)]


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule `lr = base_lr × global_batch / 256` (supplement §A.1)."""
    return base_lr * global_batch / 256.0


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, weight_decay: Optional[float] = None) -> None:
    """Write this step's lr (× each group's `lr_scale`) and weight decay (× `wd_scale`) into the
    optimizer's groups. Works on DeepSpeed's ZeRO wrappers, whose `param_groups` are the client
    optimizer's groups."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        if weight_decay is not None:
            g["weight_decay"] = weight_decay * g.get("wd_scale", 1.0)


def build_optimizer(
    name: str,
    groups: Sequence[Dict],
    lr: float,
    weight_decay: float,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """The client optimizer handed to DeepSpeed, over `build_param_groups` groups.

    Args:
        name: "adamw" (`torch.optim.AdamW`, decoupled weight decay; Tables S1–S2) or "sgd"
            (`torch.optim.SGD` with heavy-ball `momentum`, Nesterov off; Table S3).
        groups: parameter groups (their `weight_decay` / `lr_scale` / `wd_scale` are kept; the
            per-step values are written by `apply_schedules`).
        lr: initial lr (overwritten by `apply_schedules` before the first step).
        weight_decay: default decay for groups without one.
        betas, eps: AdamW only.
        momentum: SGD only.
    Raises:
        ValueError naming `optim.name` for an unknown optimizer.
    """
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=float(eps),
                                 weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(momentum), nesterov=False, weight_decay=weight_decay)
    raise ValueError(f"optim.name: unknown optimizer {name!r}; expected 'adamw' or 'sgd'")
