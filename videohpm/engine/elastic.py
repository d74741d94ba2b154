"""Resuming a run on a different number of ranks (an "elastic" resume).

A checkpoint written by W₀ ranks with `train.batch_size` b₀ and `train.accum_steps` a₀ can be
continued by W₁ ranks when the **global batch is kept**: b₀·W₀·a₀ = b₁·W₁·a₁. Then the peak lr,
the steps per epoch, the lr / wd schedules and DeepSpeed's `train_batch_size` are unchanged, and
the rest of the epoch is exactly the samples not yet seen: rank r of W reads positions r, r + W, …
of the epoch's permutation (`ResumableDistributedSampler`), so the new ranks start at
k₁ = k₀·W₀ / W₁. Augmentations are seeded by global position; mask and dropout generators are
re-seeded (their states belong to the old ranks).

Optimizer state: DeepSpeed refuses to load ZeRO optimizer shards into another data-parallel size;
its answer is the *universal checkpoint* (`ds_to_universal`: one file per parameter with fp32
weights and Adam moments). `prepare_load()` converts once (rank 0, into
`<output_dir>/checkpoints/.universal/<tag>/`, reused later) and the trainer builds DeepSpeed with
`load_universal`. Without ZeRO the optimizer state is whole in the module file.

When the global batch would change, the resume fails before any step with a message naming the
`train.accum_steps` that keeps it (or to resume on the original rank count).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional

from videohpm import distributed as vdist
from videohpm.config import ConfigError
from videohpm.engine import checkpoint as ckpt

__all__ = ["ResumePlan", "plan_resume", "prepare_load", "UNIVERSAL_DIR"]

log = logging.getLogger(__name__)

UNIVERSAL_DIR = ".universal"


@dataclass(frozen=True)
class ResumePlan:
    """What the trainer must do differently to resume `info` on this run's ranks."""

    info: ckpt.CheckpointInfo
    saved_world: int
    world: int
    micro: int  # the position in the epoch (this run's micro-batches per rank)
    universal: bool  # load through DeepSpeed's universal checkpoint (ZeRO >= 1)


def _saved_layout(info: ckpt.CheckpointInfo) -> Dict[str, Any]:
    with open(os.path.join(info.path, ckpt.COMPLETE_MARKER)) as f:
        marker = json.load(f)
    state = ckpt.read_trainer_state(info.path)
    return {"world": marker.get("world_size"), "state": state}


def _num_sample(cfg: Dict[str, Any], split: str) -> int:
    return int(cfg.get("data", {}).get("num_sample", 1) or 1) if split in ("pretrain", "train") else 1


def plan_resume(spec: str, ckpt_root: str, *, world: int, batch_size: int, accum_steps: int, num_sample: int,
                steps_per_epoch: int, train_split: str, zero_stage: int) -> Optional[ResumePlan]:
    """Check `train.resume=spec` against this run's ranks before DeepSpeed is built.

    Returns None when there is nothing to resume or the rank count is unchanged (the ordinary
    resume), a `ResumePlan` when the checkpoint can be continued on `world` ranks, and raises
    `ConfigError` (before any work) when the global batch or the epoch length would change.
    """
    if not spec:
        return None
    info = ckpt.find_latest(ckpt_root) if spec == "auto" else ckpt.checkpoint_info(spec)
    if info is None:
        return None
    saved = _saved_layout(info)
    w0 = saved["world"]
    if w0 is None or int(w0) == world:
        return None
    w0 = int(w0)
    state = saved["state"]
    cfg = state.get("config", {})
    b0 = int(cfg["train"]["batch_size"])
    a0 = int(cfg["train"]["accum_steps"])
    n0 = _num_sample(cfg, train_split)
    g0, g1 = b0 * n0 * w0 * a0, batch_size * num_sample * world * accum_steps
    where = f"train.resume: checkpoint {info.path} was written by {w0} rank(s)"
    if g0 != g1:
        keep = b0 * n0 * w0 * a0
        per = batch_size * num_sample * world
        hint = (f"set train.accum_steps={keep // per} to keep it" if keep % per == 0 else
                f"no integer train.accum_steps keeps it with train.batch_size={batch_size}; change train.batch_size "
                f"or the rank count so that batch_size × ranks × accum_steps = {b0 * w0 * a0}")
        raise ConfigError(
            f"{where} with train.batch_size={b0} × train.accum_steps={a0} (global batch {g0} clips); this run has "
            f"{world} rank(s) × train.batch_size={batch_size} × train.accum_steps={accum_steps} = {g1} clips. "
            f"Resuming must keep the global batch (the lr rule and the schedules depend on it): {hint}, or resume "
            f"on {w0} rank(s).")
    saved_steps = int(state["micro_per_epoch"]) // a0
    if saved_steps != steps_per_epoch:
        raise ConfigError(f"{where} with {saved_steps} optimizer steps per epoch, this run has {steps_per_epoch}: "
                          f"the data list changed (or drop_last differs for {world} ranks); resume on {w0} rank(s)")
    consumed = int(state["micro_step"]) * b0 * w0  # samples of the epoch read by all ranks together
    per_micro = batch_size * world
    if consumed % per_micro or (consumed // per_micro) % accum_steps:
        raise ConfigError(f"{where} at micro-step {state['micro_step']} of its epoch ({consumed} samples), which is "
                          f"not an optimizer-step boundary for {world} rank(s) × train.batch_size={batch_size} × "
                          f"train.accum_steps={accum_steps}; resume on {w0} rank(s) or from an epoch checkpoint")
    return ResumePlan(info=info, saved_world=w0, world=world, micro=consumed // per_micro,
                      universal=int(zero_stage) != 0)


_SAFE_CONVERT = (
    "import sys\n"
    "from deepspeed.checkpoint import ds_to_universal as m\n"
    "from videohpm.engine.checkpoint import deepspeed_safe_globals\n"
    "from videohpm.models.formats import weights_only_loads\n"
    "sys.argv = ['ds_to_universal', *sys.argv[1:]]\n"
    "with weights_only_loads(deepspeed_safe_globals()):\n"
    "    m.main(m.parse_arguments())\n"
)


def _convert(src: ckpt.CheckpointInfo, dst: str) -> None:
    """`ds_to_universal` of `src` into `dst` (atomic: written to `dst.tmp`, then renamed)."""
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    # DeepSpeed's converter asks torch.load to unpickle (weights_only=False); run it with every
    # load routed through the project's one reader (weights_only, DeepSpeed's four classes only).
    cmd = [sys.executable, "-c", _SAFE_CONVERT, "--input_folder", src.path,
           "--output_folder", tmp, "--inject_missing_state", "--num_extract_workers", "1", "--num_merge_workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"converting {src.path} to a DeepSpeed universal checkpoint failed ({' '.join(cmd)}):\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}\nResume on the checkpoint's rank count instead.")
    shutil.rmtree(os.path.join(tmp, "tmp"), ignore_errors=True)
    shutil.copy2(os.path.join(src.path, ckpt.TRAINER_STATE), tmp)
    shutil.copy2(os.path.join(src.path, ckpt.COMPLETE_MARKER), tmp)  # last: the folder is complete
    shutil.rmtree(dst, ignore_errors=True)
    os.rename(tmp, dst)


def prepare_load(plan: Optional[ResumePlan], info: ckpt.CheckpointInfo, ckpt_root: str) -> ckpt.CheckpointInfo:
    """The checkpoint folder to hand to DeepSpeed: `info` itself, or (ZeRO, another rank count)
    its universal conversion under `<ckpt_root>/.universal/<tag>` (rank 0 converts; collective)."""
    if plan is None or not plan.universal or plan.info.path != info.path:
        return info
    dst = os.path.join(ckpt_root, UNIVERSAL_DIR, info.tag)
    if vdist.get_rank() == 0 and not os.path.isfile(os.path.join(dst, ckpt.COMPLETE_MARKER)):
        log.info("checkpoint %s: %d rank(s) → %d: converting to a DeepSpeed universal checkpoint in %s", info.path,
                 plan.saved_world, plan.world, dst)
        _convert(info, dst)
    vdist.barrier()
    return ckpt.CheckpointInfo(dst, info.tag, info.global_step, info.epoch, info.kind)
