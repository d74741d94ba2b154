"""Atomic, resumable training checkpoints around DeepSpeed's `save_checkpoint`, and reading
weights back from any checkpoint a run (or another code base) leaves.

Layout under `<output_dir>/checkpoints/`: `epoch-0009/` (kept milestones), `latest-00001234/`
(the rolling one), `latest` (text: the newest complete tag, as DeepSpeed's), `zero_to_fp32.py`
(DeepSpeed's script) and `.partial/<tag>/` (being written right now — never read). A folder holds
DeepSpeed's files, `trainer_state.pt` (epoch, position, global step, schedules, teacher / EMA
weights, non-finite counters, the resolved config), `rng_rank<r>.pt` and, written last, `COMPLETE`.

Atomicity: every rank writes into `.partial/<tag>/`; after a barrier rank 0 writes `COMPLETE`,
fsyncs and renames the folder into place, then rewrites `latest` with `os.replace`; `find_latest`
only considers folders with a valid `COMPLETE` marker. The output directory must be on a file
system shared by all nodes (as DeepSpeed's own checkpoints require).

`read_checkpoint` takes a file (`model_final.pth`, a VideoMAE / HF / HPM state dict), a DeepSpeed
tag folder (`mp_rank_00_model_states.pt` or ZeRO-3 shards, with the teacher of `trainer_state.pt`),
a run folder or a `checkpoints/` root; layouts are converted later by `models.load_pretrained`.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

from videohpm import distributed as vdist
from videohpm.models.formats import read_checkpoint_file, resolve_checkpoint_path, teacher_state_dict, \
    weights_only_loads

__all__ = [
    "COMPLETE_MARKER",
    "TRAINER_STATE",
    "CheckpointInfo",
    "list_checkpoints",
    "find_latest",
    "checkpoint_info",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "read_trainer_state",
    "deepspeed_safe_globals",
    "CheckpointWeights",
    "read_checkpoint",
    "read_deepspeed_folder",
    "strip_prefix",
]

log = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.pt"
PARTIAL_DIR = ".partial"
_TAG_RE = re.compile(r"^(epoch|latest)-(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint folder found on disk."""

    path: str
    tag: str
    global_step: int
    epoch: int
    kind: str  # "epoch" (kept) or "latest" (rolling)


def _read_marker(folder: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(folder, COMPLETE_MARKER)) as f:
            data = json.load(f)
        if isinstance(data, dict) and "global_step" in data:
            return data
    except (OSError, ValueError):
        pass
    return None


def list_checkpoints(root: str) -> List[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest first (by global step, then milestone last).

    Folders without a readable `COMPLETE` marker (a run killed while writing) are skipped with a
    warning; `.partial/` is never looked into.
    """
    out: List[CheckpointInfo] = []
    if not os.path.isdir(root):
        return out
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        m = _TAG_RE.match(name)
        if not m or not os.path.isdir(folder):
            continue
        marker = _read_marker(folder)
        if marker is None:
            log.warning("ignoring incomplete checkpoint folder %s (no valid %s marker)", folder, COMPLETE_MARKER)
            continue
        out.append(CheckpointInfo(folder, name, int(marker["global_step"]), int(marker.get("epoch", -1)), m.group(1)))
    out.sort(key=lambda c: (c.global_step, c.kind == "epoch"))
    return out


def checkpoint_info(path: str) -> CheckpointInfo:
    """`CheckpointInfo` of an explicit checkpoint folder (`train.resume=<folder>`); it must be
    complete (have a valid `COMPLETE` marker)."""
    path = os.path.abspath(path.rstrip("/"))
    name = os.path.basename(path)
    m = _TAG_RE.match(name)
    marker = _read_marker(path) if os.path.isdir(path) else None
    if not m or marker is None:
        raise FileNotFoundError(f"train.resume: {path} is not a complete checkpoint folder "
                                f"(epoch-XXXX / latest-XXXXXXXX with a {COMPLETE_MARKER} marker)")
    return CheckpointInfo(path, name, int(marker["global_step"]), int(marker.get("epoch", -1)), m.group(1))


def find_latest(root: str) -> Optional[CheckpointInfo]:
    """The newest complete checkpoint under `root` (what `train.resume=auto` continues from)."""
    cks = list_checkpoints(root)
    return cks[-1] if cks else None


# --------------------------------------------------------------------------- RNG
def capture_rng_state() -> Dict[str, Any]:
    """This process's generator states: Python, NumPy, torch CPU and (if any) all CUDA devices."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        # NumPy's key as a tensor: the file then needs no NumPy global to read back with
        # torch.load(weights_only=True).
        "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states are restored only if the device count matches)."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- save / load
def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    engine: Any, root: str, tag: str, trainer_state: Dict[str, Any], keep_rolling: int = 1,
) -> str:
    """Write checkpoint `tag` atomically; collective — every rank must call it.

    Args:
        engine: the `DeepSpeedEngine` (module + optimizer, ZeRO shards written per rank).
        root: `<output_dir>/checkpoints`.
        tag: `epoch-XXXX` (kept) or `latest-XXXXXXXX` (rolling).
        trainer_state: small picklable dict saved by rank 0; must hold "global_step" and "epoch".
        keep_rolling: number of rolling `latest-*` checkpoints to keep, the new one included
            (older ones are removed once the new one is complete; milestones are never removed).
    Returns:
        The final folder path.
    """
    if not _TAG_RE.match(tag):
        raise ValueError(f"checkpoint tag must look like epoch-0001 or latest-00000001, got {tag!r}")
    rank = vdist.get_rank()
    partial_root = os.path.join(root, PARTIAL_DIR)
    partial = os.path.join(partial_root, tag)
    final = os.path.join(root, tag)
    if rank == 0:
        if os.path.isdir(partial):  # left over from a killed run
            shutil.rmtree(partial)
        os.makedirs(partial_root, exist_ok=True)
    vdist.barrier()
    engine.save_checkpoint(partial_root, tag=tag, save_latest=False)
    os.makedirs(partial, exist_ok=True)  # under ZeRO-0 only rank 0 writes DeepSpeed files
    torch.save(capture_rng_state(), os.path.join(partial, f"rng_rank{rank}.pt"))
    if rank == 0:
        torch.save(trainer_state, os.path.join(partial, TRAINER_STATE))
    vdist.barrier()  # every rank's shards are on disk
    if rank == 0:
        marker = {"global_step": int(trainer_state["global_step"]), "epoch": int(trainer_state["epoch"]),
                  "world_size": vdist.get_world_size()}
        for key in ("config_digest", "run_id"):  # which run wrote it (train.resume=auto compares)
            if trainer_state.get(key):
                marker[key] = trainer_state[key]
        _write_atomic_text(os.path.join(partial, COMPLETE_MARKER), json.dumps(marker))
        _fsync_dir(partial)
        if os.path.exists(final):  # same tag written again after a resume: swap it out
            trash = os.path.join(partial_root, f"{tag}.old")
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(final, trash)
            os.rename(partial, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(partial, final)
        _fsync_dir(root)
        _write_atomic_text(os.path.join(root, "latest"), tag + "\n")
        for script in ("zero_to_fp32.py", "zero_to_torch.py"):  # DeepSpeed's consolidation tools
            if os.path.isfile(os.path.join(partial_root, script)):
                os.replace(os.path.join(partial_root, script), os.path.join(root, script))
        rolling = [c for c in list_checkpoints(root) if c.kind == "latest" and c.tag != tag]
        keep_others = keep_rolling - 1 if tag.startswith("latest-") else keep_rolling
        for old in rolling[: max(0, len(rolling) - keep_others)]:
            shutil.rmtree(old.path, ignore_errors=True)
    vdist.barrier()
    return final


def deepspeed_safe_globals() -> List[Any]:
    """The classes DeepSpeed pickles into its optimizer-state files (ZeRO 1–3, loss scaling)
    besides tensors and plain containers: allowed, with nothing else, when the engine resumes."""
    # lazy: DeepSpeed is slow to import (it probes the accelerator); only reading its files needs it
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def read_trainer_state(folder: str) -> Dict[str, Any]:
    """`trainer_state.pt` of a checkpoint folder (weights_only: plain containers and tensors)."""
    return read_checkpoint_file(os.path.join(folder, TRAINER_STATE))


def load_checkpoint(engine: Any, info: CheckpointInfo, restore_rng: bool = True) -> Dict[str, Any]:
    """Load `info` into `engine` (module + optimizer) and return the trainer state.

    Restores this rank's RNG states when the checkpoint was written with the same world size;
    otherwise (elastic resume) generators keep their fresh seeds and a warning says so.
    """
    with weights_only_loads(deepspeed_safe_globals()):  # DeepSpeed's reader would unpickle
        load_path, _ = engine.load_checkpoint(
            os.path.dirname(info.path), tag=info.tag, load_optimizer_states=True, load_lr_scheduler_states=False
        )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {info.path}")
    state = read_trainer_state(info.path)
    rng_file = os.path.join(info.path, f"rng_rank{vdist.get_rank()}.pt")
    marker = _read_marker(info.path) or {}
    if restore_rng:
        if marker.get("world_size", vdist.get_world_size()) == vdist.get_world_size() and os.path.isfile(rng_file):
            restore_rng_state(read_checkpoint_file(rng_file))
        else:
            log.warning("checkpoint %s was written by %s ranks, now %d: RNG states not restored",
                        info.path, marker.get("world_size"), vdist.get_world_size())
    return state


@dataclass
class CheckpointWeights:
    """Weights read from a checkpoint. `model`: state dict (recipe- or model-level keys);
    `teacher`: the EMA teacher / model EMA state dict, if saved; `source`: the file(s) read."""

    model: Dict[str, torch.Tensor]
    teacher: Optional[Dict[str, torch.Tensor]] = None
    source: str = ""
    meta: Dict[str, Any] = field(default_factory=dict)


def _tensors(d: Any) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in d.items() if isinstance(v, torch.Tensor)} if isinstance(d, Mapping) else {}


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """`sd` without `prefix` when every key has it (recipe-level keys `model.…` → model-level),
    else unchanged."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def read_deepspeed_folder(folder: str) -> CheckpointWeights:
    """One DeepSpeed tag folder (as :func:`save_checkpoint` writes it). Every file is read by the
    one checkpoint reader (`videohpm.models.formats.read_checkpoint_file`: weights_only, never
    a full unpickle; a refused file raises `CheckpointRefusedError`, a ValueError that says what
    it holds)."""
    full = os.path.join(folder, "mp_rank_00_model_states.pt")
    if os.path.isfile(full):
        sd = _tensors(read_checkpoint_file(full).get("module"))
        source = full
    elif glob.glob(os.path.join(folder, "zero_pp_rank_*_mp_rank_00_model_states.pt")):
        # lazy: DeepSpeed is slow to import; only ZeRO-3 shard folders need its zero_to_fp32
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        parent, tag = os.path.split(os.path.abspath(folder))
        with weights_only_loads(deepspeed_safe_globals()):  # zero_to_fp32 would unpickle the shards
            sd = dict(get_fp32_state_dict_from_zero_checkpoint(parent, tag=tag))
        source = f"{folder} (ZeRO-3 shards)"
    else:
        raise FileNotFoundError(f"checkpoint={folder}: no mp_rank_00_model_states.pt or ZeRO shards in this folder")
    if not sd:
        raise ValueError(f"checkpoint={source}: no module weights inside")
    teacher, meta = None, {}
    if os.path.isfile(os.path.join(folder, TRAINER_STATE)):
        state = read_trainer_state(folder)
        teacher = _tensors(state.get("teacher")) or None
        meta = {k: state.get(k) for k in ("epoch", "global_step") if k in state}
    return CheckpointWeights(sd, teacher, source, meta)


def _read_run_folder(path: str, prefer_full_recipe: bool) -> CheckpointWeights:
    """A run folder, a `checkpoints/` root, a tag folder, or another code base's folder."""
    final = os.path.join(path, "model_final.pth")
    if os.path.isfile(final) and not prefer_full_recipe:
        return read_checkpoint(final)
    for root in (os.path.join(path, "checkpoints"), path):
        latest = os.path.join(root, "latest")
        if os.path.isfile(latest):
            with open(latest) as f:
                return read_deepspeed_folder(os.path.join(root, f.read().strip()))
    if os.path.isfile(final):
        return read_checkpoint(final)
    if os.path.isfile(os.path.join(path, "mp_rank_00_model_states.pt")) or glob.glob(
            os.path.join(path, "zero_pp_rank_*")):
        return read_deepspeed_folder(path)
    # a Hugging Face save_pretrained() folder, or a DeepSpeed save root / tag folder of
    # another code base (VideoMAE's `checkpoint-N/`): the one reader resolves them
    source = resolve_checkpoint_path(path)
    obj = read_checkpoint_file(source)
    if source.endswith("mp_rank_00_model_states.pt") and isinstance(obj, Mapping) and isinstance(obj.get("module"), Mapping):
        obj = obj["module"]
    return CheckpointWeights(dict(obj), None, source)


def read_checkpoint(path: str, prefer_full_recipe: bool = False) -> CheckpointWeights:
    """Read weights from any checkpoint of the module docstring.

    Args:
        prefer_full_recipe: in a run folder, read the newest DeepSpeed checkpoint (the whole
            recipe, e.g. a linear probe's BatchNorm and head) rather than `model_final.pth`
            (the model only).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint={path}: no such file or folder")
    if os.path.isdir(path):
        return _read_run_folder(path, prefer_full_recipe)
    obj = read_checkpoint_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) and "config" in obj:
        return CheckpointWeights(_tensors(obj["model"]), _tensors(obj.get("teacher")) or None, path,
                                 {k: obj.get(k) for k in ("epoch", "global_step")})
    # VideoMAE / HF / HPM / plain state dict: unwrapped later; HPM's official files keep their EMA teacher
    return CheckpointWeights(dict(obj), teacher_state_dict(obj), path)
