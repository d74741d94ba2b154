"""Everything about "which process am I" in one place.

The DeepSpeed launcher (`deepspeed [--hostfile H] tools/train.py ...`), `torchrun` and a plain
`python tools/train.py ...` describe the job through environment variables (none for the
plain run: a one-process job); this module reads them through typed getters, initialises the
process group (NCCL on GPUs, gloo on CPUs; an in-memory store for one process) and sets up
rank-filtered `logging` (rank 0 speaks at INFO, the others only at WARNING and above). It never
replaces `print`.

Environment read (as the DeepSpeed launcher and torchrun set it):
    RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_SIZE / LOCAL_WORLD_SIZE, CROSS_RANK / GROUP_RANK,
    MASTER_ADDR, MASTER_PORT.
"""
from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from typing import Any, List, Optional

import torch
import torch.distributed as dist

__all__ = [
    "env_int",
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "get_local_world_size",
    "get_node_rank",
    "is_main_process",
    "is_distributed",
    "launched_by_launcher",
    "init_distributed",
    "get_device",
    "barrier",
    "all_reduce",
    "broadcast_object",
    "all_gather_object",
    "setup_logging",
]

_LOG_FORMAT = "[%(asctime)s][rank %(rank)s][%(name)s] %(levelname)s: %(message)s"


# --------------------------------------------------------------------------- typed getters
def env_int(name: str, default: int) -> int:
    """Integer environment variable `name`, or `default` when unset; a bad value names the key."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from e


def get_rank() -> int:
    """Global rank: the process group's when initialised, else `$RANK` (0 for one process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return env_int("RANK", 0)


def get_world_size() -> int:
    """Number of processes in the job (1 for a plain `python tools/train.py`)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return env_int("WORLD_SIZE", 1)


def get_local_rank() -> int:
    """Rank within the node; picks the GPU. The DeepSpeed launcher sets `$LOCAL_RANK`."""
    return env_int("LOCAL_RANK", 0)


def get_local_world_size() -> int:
    """Processes on this node (`$LOCAL_SIZE` from DeepSpeed, `$LOCAL_WORLD_SIZE` from torchrun)."""
    return env_int("LOCAL_SIZE", env_int("LOCAL_WORLD_SIZE", 1 if get_world_size() == 1 else get_world_size()))


def get_node_rank() -> int:
    """Index of this node (`$CROSS_RANK` from DeepSpeed, `$GROUP_RANK` from torchrun)."""
    return env_int("CROSS_RANK", env_int("GROUP_RANK", 0))


def is_main_process() -> bool:
    """True on global rank 0, the only rank that writes logs, TensorBoard and shared files."""
    return get_rank() == 0


def is_distributed() -> bool:
    """True when more than one process takes part and the process group is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launched_by_launcher() -> bool:
    """True when a launcher (deepspeed, torchrun, mpirun via DeepSpeed) set the rendezvous env."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


# --------------------------------------------------------------------------- setup
def default_backend() -> str:
    """`nccl` when this process drives a CUDA GPU, `gloo` otherwise (CPU runs, CI)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def get_device() -> torch.device:
    """The device of this rank: `cuda:<local rank>` when GPUs exist, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", get_local_rank() % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def init_distributed(backend: Optional[str] = None, timeout_minutes: float = 30.0) -> torch.device:
    """Initialise the process group (once) and DeepSpeed's communication layer; return this
    rank's device.

    Args:
        backend: "nccl", "gloo" or None for `default_backend()`.
        timeout_minutes: collective timeout; long enough for a slow checkpoint write on rank 0.

    Without launcher variables the job is a single process: its one-rank group uses an in-memory
    store (no port to pick or to collide on, nothing written to `os.environ` that subprocesses
    would inherit) — except `LOCAL_RANK=0`, which DeepSpeed insists on reading.
    """
    device = get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return device
    backend = backend or default_backend()
    timeout = timedelta(minutes=timeout_minutes)
    if not launched_by_launcher():
        os.environ.setdefault("LOCAL_RANK", "0")
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    import deepspeed  # imported here: importing it is slow and probes the accelerator

    # Adopts an existing torch group, or initialises one from the launcher's environment.
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False, timeout=timeout)
    return device


# --------------------------------------------------------------------------- collectives
def barrier() -> None:
    """Synchronise all ranks (no-op for one process)."""
    if is_distributed():
        dist.barrier()


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce of `t` ("sum", "max", "min" or "mean"); returns `t`."""
    if not is_distributed():
        return t
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "mean": dist.ReduceOp.SUM}
    if op not in ops:
        raise ValueError(f"all_reduce: unknown op {op!r}; use one of {sorted(ops)}")
    dist.all_reduce(t, op=ops[op])
    if op == "mean":
        t /= dist.get_world_size()
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every rank (pickled; for small values such as a checkpoint tag)."""
    if not is_distributed():
        return obj
    box: List[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> List[Any]:
    """List of every rank's `obj`, indexed by rank."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------- logging
class _RankFilter(logging.Filter):
    """Stamps the rank on each record and lets only rank 0 through below `min_level_others`."""

    def __init__(self, min_level_others: int) -> None:
        super().__init__()
        self.min_level_others = min_level_others

    def filter(self, record: logging.LogRecord) -> bool:
        rank = get_rank()
        record.rank = rank
        return rank == 0 or record.levelno >= self.min_level_others


def setup_logging(
    log_file: Optional[str] = None, level: int = logging.INFO, others_level: int = logging.WARNING
) -> None:
    """Configure the root logger: rank 0 at `level`, other ranks at `others_level` and above.

    Args:
        log_file: if given, rank 0 also appends its records there (e.g. `<output_dir>/train.log`);
            other ranks append to `<log_file>.rank<r>` only when they have something to say.
    Idempotent: handlers installed by a previous call are replaced. DeepSpeed's own logger is
    turned down to WARNING, its per-step INFO lines would bury ours.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_videohpm", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S")
    handlers: List[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        rank = get_rank()
        path = log_file if rank == 0 else f"{log_file}.rank{rank}"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handlers.append(logging.FileHandler(path, delay=True))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_RankFilter(others_level))
        h._videohpm = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(min(level, others_level))
    try:
        from deepspeed.utils import logger as ds_logger

        ds_logger.setLevel(logging.WARNING)
    except Exception:  # pragma: no cover - deepspeed missing is reported where it is needed
        pass
