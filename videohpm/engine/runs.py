"""Run folders: which run a `train.output_dir` holds, and whether a launch may write into it.

A launch decides before it writes anything (`plan_run`, read-only), and writes only once every
check of the run has passed (`prepare_run_folder`):

- `train.resume: ""` (a new run): refused when the folder holds another run's complete
  checkpoints or `model_final.pth` — unless `train.overwrite=true`, which removes that run's
  outputs and the tools' results of its model (`_RUN_OUTPUTS`) once the checks have passed.
- `train.resume: auto`: continues the newest complete checkpoint only if it was written with the
  same config — the same `config_digest` (everything but the keys of `RESUME_IGNORED_KEYS`:
  where the run and its data live, how it is launched and observed, and `train.max_steps`).
  Otherwise it stops naming the keys that differ; `train.resume_force=true` continues anyway. With
  no complete checkpoint it starts afresh, except in a folder with a `model_final.pth`.
- `train.resume: <checkpoint folder>`: continues that checkpoint (an explicit choice; a config
  that differs is logged as a warning).

Every run has a `run_id`, kept across resumes (it is saved in the checkpoints) and written into
every `log.jsonl` record, so that the records of two runs in one folder can be told apart.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from videohpm import distributed as vdist
from videohpm.config import ConfigError, save_config
from videohpm.engine import checkpoint as ckpt

__all__ = ["RESUME_IGNORED_KEYS", "RunPlan", "config_digest", "config_differences", "flatten_config", "plan_run",
           "prepare_run_folder", "rank_change_keeps_global_batch"]

log = logging.getLogger(__name__)

# Keys that do not change what a run computes: where it is written and resumed from, where its
# videos live, how it is launched, loaded and observed, and the smoke-test step cap. Every other
# key is part of the config digest that `train.resume=auto` compares.
RESUME_IGNORED_KEYS = (
    "train.resume", "train.resume_force", "train.overwrite", "train.max_steps", "train.output_dir",
    "data.data_root", "data.num_workers", "data.persistent_workers", "data.decode_threads",
    "train.pin_memory", "train.dist_backend", "train.progress_bar", "train.tensorboard", "train.log_every",
    "train.check_replicas_every",
)

# What the engine writes into a run folder, and the default result folders of the tools that
# read the run (tools/test.py, predict.py, knn.py, visualize.py): `train.overwrite=true` removes
# them all, so no result of the replaced model stays beside the new one.
_RUN_OUTPUTS = ("checkpoints", "model_final.pth", "config.yaml", "log.jsonl", "tb", "train.log",
                "pretrained_report.json", "test", "predict", "knn", "teacher_fidelity")


def flatten_config(d: Any, prefix: str = "") -> Dict[str, Any]:
    """A nested mapping as ``{"dotted.key": leaf value}`` (lists are leaves)."""
    out: Dict[str, Any] = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(flatten_config(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def _compared(config: Any) -> Dict[str, Any]:
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    return {k: v for k, v in flatten_config(config or {}).items() if k not in RESUME_IGNORED_KEYS}


def config_digest(config: Any) -> str:
    """SHA-256 (16 hex digits) of the resolved config without `RESUME_IGNORED_KEYS`."""
    text = json.dumps(_compared(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_differences(old: Any, new: Any) -> List[str]:
    """Dotted keys (outside `RESUME_IGNORED_KEYS`) whose values differ, `key: old -> new`."""
    a, b = _compared(old), _compared(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def rank_change_keeps_global_batch(old_config: Mapping[str, Any], info: ckpt.CheckpointInfo, cfg: DictConfig) -> bool:
    """True when resuming `info` (written with `old_config`) differs from this launch only in
    `train.batch_size` / `train.accum_steps`, on another number of ranks, with the same global
    batch b·a·W — the same run continued elastically (`plan_run` accepts it as such;
    `engine.elastic.plan_resume` then checks the position in the epoch)."""
    w0 = (ckpt._read_marker(info.path) or {}).get("world_size")
    w1 = vdist.get_world_size()
    if w0 is None or int(w0) == w1:
        return False
    old = copy.deepcopy(dict(old_config))
    new = OmegaConf.to_container(cfg, resolve=True)
    try:
        b0, a0 = int(old["train"]["batch_size"]), int(old["train"]["accum_steps"])
        b1, a1 = int(new["train"]["batch_size"]), int(new["train"]["accum_steps"])
    except (KeyError, TypeError, ValueError):
        return False
    if b0 * a0 * int(w0) != b1 * a1 * w1:
        return False
    for c in (old, new):
        c["train"] = dict(c["train"], batch_size=None, accum_steps=None)
    return config_digest(old) == config_digest(new)


@dataclass
class RunPlan:
    """What a launch will do in its folder (from `plan_run`)."""

    out: str
    run_id: str
    digest: str
    resume: Optional[ckpt.CheckpointInfo] = None  # the checkpoint to continue, None = a new run
    replace: bool = False  # train.overwrite: remove the old run's outputs first


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _checkpoint_meta(info: ckpt.CheckpointInfo) -> Dict[str, Any]:
    """`config_digest`, `run_id` and `config` of a checkpoint (marker first, then trainer state)."""
    marker = ckpt._read_marker(info.path) or {}
    try:
        state = ckpt.read_trainer_state(info.path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"train.resume: cannot read {info.path}/{ckpt.TRAINER_STATE}: {e}") from e
    config = state.get("config") or {}
    return {"digest": marker.get("config_digest") or state.get("config_digest") or config_digest(config),
            "run_id": marker.get("run_id") or state.get("run_id"), "config": config}


def plan_run(cfg: DictConfig) -> RunPlan:
    """Decide what this launch does in `train.output_dir`; reads only. Raises `ConfigError` (naming
    `train.output_dir` / `train.resume` and the way on) when the launch would mix or lose runs."""
    t = cfg.train
    out = os.path.abspath(t.output_dir)
    root = os.path.join(out, "checkpoints")
    digest = config_digest(cfg)
    if t.resume and t.resume != "auto":
        try:
            info = ckpt.checkpoint_info(t.resume)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from e
        meta = _checkpoint_meta(info)
        return RunPlan(out, meta["run_id"] or _new_run_id(), digest, resume=info)
    complete = ckpt.list_checkpoints(root)
    final = os.path.join(out, "model_final.pth")
    if t.resume == "auto" and complete:
        info = complete[-1]
        meta = _checkpoint_meta(info)
        # Another rank count with train.batch_size / accum_steps keeping the global batch is the same
        # run continued elastically (engine.elastic checks the rest before DeepSpeed is built).
        if meta["digest"] != digest and not rank_change_keeps_global_batch(meta["config"], info, cfg):
            diff = config_differences(meta["config"], cfg)
            if not t.resume_force:
                raise ConfigError(
                    f"train.resume=auto: the newest checkpoint in {root} ({info.tag}) belongs to a run of another "
                    f"config; differing keys: {'; '.join(diff[:12]) or '(digest only)'}"
                    f"{' …' if len(diff) > 12 else ''}. Use the same config, another train.output_dir, "
                    f"train.overwrite=true with train.resume='' to replace that run, or train.resume_force=true "
                    f"to continue it with this config")
            log.warning("train.resume_force: continuing %s although the config differs in: %s", info.path,
                        "; ".join(diff))
        return RunPlan(out, meta["run_id"] or _new_run_id(), digest, resume=info)
    held = [f"{len(complete)} checkpoint(s)"] if complete else []
    if os.path.isfile(final):
        held.append("model_final.pth")
    if held and not t.overwrite:
        how = ("it has no checkpoint to continue" if not complete else "continue it with train.resume=auto")
        raise ConfigError(
            f"train.output_dir: {out} holds another run ({', '.join(held)}); {how}, replace it with "
            f"train.overwrite=true, or choose another train.output_dir")
    return RunPlan(out, _new_run_id(), digest, replace=bool(held) and bool(t.overwrite))


def prepare_run_folder(plan: RunPlan, cfg: DictConfig) -> None:
    """Create the folder, remove the replaced run's outputs (`train.overwrite`) and write
    `config.yaml` (rank 0), then log into `train.log` (collective: every rank calls it; only
    after every check of the launch has passed)."""
    if vdist.get_rank() == 0:
        if plan.replace:
            for name in _RUN_OUTPUTS:
                p = os.path.join(plan.out, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
            log.warning("train.overwrite: removed the previous run's outputs in %s", plan.out)
        os.makedirs(plan.out, exist_ok=True)
        save_config(cfg, os.path.join(plan.out, "config.yaml"))
    vdist.barrier()
    vdist.setup_logging(os.path.join(plan.out, "train.log"))
