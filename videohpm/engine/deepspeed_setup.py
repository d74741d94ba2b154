"""DeepSpeed configuration from our config, and ZeRO-aware access to full parameters.

The DeepSpeed JSON files (`configs/deepspeed/zero{0,1,2,3}.json`) hold only what is about
DeepSpeed itself (ZeRO stage, buckets, overlap). Everything that our config already says —
micro-batch per rank, accumulation, clipping, precision — is written by
`build_deepspeed_config` so it cannot disagree: a JSON that sets one of those keys is an error
naming the key to use instead. The optimizer is ours (torch AdamW or SGD, see `engine.optim`) and
the schedules are ours (per-step functions), so `optimizer` / `scheduler` sections are rejected too.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch
from torch import nn

# the DeepSpeed section is resolved and checked by the config layer (before any work starts)
from videohpm.config import OWNED_KEYS, load_deepspeed_json, resolve_deepspeed_dict

__all__ = [
    "OWNED_KEYS",
    "load_deepspeed_json",
    "resolve_deepspeed_dict",
    "build_deepspeed_config",
    "gathered_parameters",
    "full_state_dict",
]


def build_deepspeed_config(
    ds: Mapping[str, Any], micro_batch: int, accum_steps: int, world_size: int, precision: str,
    clip_grad: Optional[float], optimizer: str = "adamw",
) -> Dict[str, Any]:
    """The full dict passed to `deepspeed.initialize(config=...)`.

    Args:
        ds: `resolve_deepspeed_dict` output.
        micro_batch: clips per rank per forward (videos × repeated-augmentation samples).
        accum_steps: micro-batches per optimizer step.
        world_size: number of ranks (data-parallel degree).
        precision: "fp32", "bf16" or "fp16" (fp16 uses dynamic loss scaling, `loss_scale: 0`).
        clip_grad: global-norm clipping threshold; None/0 disables it.
        optimizer: `optim.name`. DeepSpeed's ZeRO wrappers whitelist only Adam-family optimizers
            and refuse others unless `zero_allow_untested_optimizer` is set; torch's SGD is safe
            under them (ZeRO hands it flat fp32 partitions and its momentum buffer is
            per-parameter state like Adam's moments), so the flag is set for "sgd".
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision must be fp32, bf16 or fp16, got {precision!r}")
    out = copy.deepcopy(dict(ds))
    out["train_micro_batch_size_per_gpu"] = int(micro_batch)
    out["gradient_accumulation_steps"] = int(accum_steps)
    out["train_batch_size"] = int(micro_batch) * int(accum_steps) * int(world_size)
    out["gradient_clipping"] = float(clip_grad) if clip_grad else 0.0
    if optimizer.lower() == "sgd":
        out.setdefault("zero_allow_untested_optimizer", True)
    bf16 = dict(out.get("bf16", {}))
    fp16 = dict(out.get("fp16", {}))
    bf16["enabled"] = precision == "bf16"
    fp16["enabled"] = precision == "fp16"
    if precision == "fp16":
        # Dynamic loss scale: start at 2^16, halve on overflow (those steps are skipped).
        fp16.setdefault("loss_scale", 0)
        fp16.setdefault("initial_scale_power", 16)
        fp16.setdefault("loss_scale_window", 1000)
        fp16.setdefault("hysteresis", 2)
        fp16.setdefault("min_loss_scale", 1)
    out["bf16"] = bf16
    out["fp16"] = fp16
    # DeepSpeed prints a throughput line every `steps_per_print` steps; ours is the progress bar.
    out.setdefault("steps_per_print", 10**9)
    out.setdefault("wall_clock_breakdown", False)
    return out


@contextlib.contextmanager
def gathered_parameters(module: nn.Module, zero_stage: int, modifier_rank: Optional[int] = None) -> Iterator[None]:
    """Make `module`'s full parameters visible on every rank for the duration of the block.

    Under ZeRO-3 each rank holds only a shard; `deepspeed.zero.GatheredParameters` all-gathers
    them (and, with `modifier_rank`, scatters that rank's edits back). Stages 0–2 keep full
    parameters on every rank, so this is a no-op there.
    """
    if zero_stage != 3:
        yield
        return
    import deepspeed  # lazy: slow to import; only ZeRO-3 runs get here, where it is loaded already

    params: List[nn.Parameter] = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield


def full_state_dict(module: nn.Module, zero_stage: int, dtype: Optional[torch.dtype] = torch.float32) -> Dict[str, torch.Tensor]:
    """A CPU copy of `module.state_dict()` with full (gathered) tensors, optionally cast.

    Collective under ZeRO-3: every rank must call it.
    """
    with gathered_parameters(module, zero_stage):
        out = {}
        for k, v in module.state_dict().items():
            t = v.detach().to("cpu", copy=True)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[k] = t
    return out
