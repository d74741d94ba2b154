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

SLURM (`srun python tools/train.py ...`, one task per GPU): `apply_slurm_env()` translates SLURM's
task variables into the names above (`slurm_env` lists the mapping).

DeepSpeed JIT-builds its CPU communication op on first use: `use_extension_cache()` points every
entry point at one build cache (`extension_cache_dir()`, the one `make setup` fills), and
`quiet_deepspeed()` keeps DeepSpeed's op probes off the console unless something fails.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from datetime import timedelta
from typing import Any, Dict, Iterator, List, Optional

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
    "expand_nodelist",
    "expand_tasks_per_node",
    "slurm_env",
    "apply_slurm_env",
    "init_distributed",
    "get_device",
    "barrier",
    "all_reduce",
    "broadcast_object",
    "all_gather_object",
    "setup_logging",
    "extension_cache_dir",
    "use_extension_cache",
    "comm_op_built",
    "build_comm_op",
    "quiet_deepspeed",
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


# --------------------------------------------------------------------------- SLURM
_HOSTLIST_GROUP = re.compile(r"\[([^\[\]]*)\]")


def _split_top_level(text: str) -> List[str]:
    """Split at commas outside brackets: "a[1-2],b3" → ["a[1-2]", "b3"]."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"SLURM nodelist {text!r}: unbalanced ']'")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"SLURM nodelist {text!r}: unbalanced '['")
    parts.append("".join(cur))
    return parts


def _expand_range_list(spec: str, whole: str) -> List[str]:
    """"01-04,07" → ["01", "02", "03", "04", "07"]; the width of the lower bound is kept."""
    out: List[str] = []
    for item in spec.split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise ValueError(f"SLURM nodelist {whole!r}: bad range {item!r} in [{spec}]")
        lo_s, hi_s = m.group(1), m.group(2)
        if hi_s is None:
            out.append(lo_s)
            continue
        lo, hi = int(lo_s), int(hi_s)
        if hi < lo:
            raise ValueError(f"SLURM nodelist {whole!r}: range {item!r} runs backwards")
        width = len(lo_s) if lo_s.startswith("0") else 0
        out.extend(str(i).zfill(width) for i in range(lo, hi + 1))
    return out


def expand_nodelist(nodelist: str) -> List[str]:
    """Host names of a SLURM hostlist expression, in order (what `scontrol show hostnames` prints).

    Handles comma lists (`n1,n2`), bracket ranges with zero padding (`node[01-04,07]` →
    node01 … node04, node07), several prefixes (`gpu-a[1-2],gpu-b3`) and several bracket groups
    in one name (`rack[1-2]-n[1-2]` → rack1-n1, rack1-n2, rack2-n1, rack2-n2). Duplicates are
    kept once. Raises `ValueError` naming the expression when it cannot be parsed.
    """
    text = (nodelist or "").strip()
    if not text:
        raise ValueError("SLURM nodelist is empty")
    hosts: List[str] = []
    for item in _split_top_level(text):
        item = item.strip()
        if not item:
            raise ValueError(f"SLURM nodelist {nodelist!r}: empty host name")
        names = [""]
        pos = 0
        for m in _HOSTLIST_GROUP.finditer(item):
            literal = item[pos:m.start()]
            values = _expand_range_list(m.group(1), nodelist)
            names = [n + literal + v for n in names for v in values]
            pos = m.end()
        tail = item[pos:]
        if "[" in tail or "]" in tail:
            raise ValueError(f"SLURM nodelist {nodelist!r}: unbalanced brackets in {item!r}")
        names = [n + tail for n in names]
        hosts.extend(n for n in names if n not in hosts)
    return hosts


def expand_tasks_per_node(spec: str) -> List[int]:
    """SLURM's compressed tasks-per-node list: "4(x2),2" → [4, 4, 2]."""
    out: List[int] = []
    for item in (spec or "").split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise ValueError(f"SLURM tasks-per-node {spec!r}: bad entry {item!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def _first_env(*names: str) -> Optional[str]:
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            return v
    return None


def slurm_env() -> Dict[str, str]:
    """The launcher variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
    MASTER_ADDR, MASTER_PORT) that this SLURM task implies; {} outside a SLURM task.
    `apply_slurm_env` writes only the missing ones, so `MASTER_ADDR` / `MASTER_PORT` exported in
    the batch script win:
        RANK        ← SLURM_PROCID
        WORLD_SIZE  ← SLURM_STEP_NUM_TASKS, else SLURM_NTASKS
        LOCAL_RANK  ← SLURM_LOCALID
        LOCAL_WORLD_SIZE ← this node's entry of SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE
                      (e.g. "4(x2),2"), else SLURM_NTASKS_PER_NODE
        GROUP_RANK  ← SLURM_NODEID
        MASTER_ADDR ← the first host of SLURM_STEP_NODELIST / SLURM_NODELIST / SLURM_JOB_NODELIST,
                      expanded in pure Python (`expand_nodelist`; no `scontrol` needed)
        MASTER_PORT ← kept if exported, else `15000 + SLURM_JOB_ID % 10000` (below Linux's ephemeral
                      range, the same on every task of a job, different for concurrent jobs)
    `VIDEOHPM_IGNORE_SLURM=1` turns the translation off (e.g. a plain `python` inside an `sbatch`
    script, whose environment describes the whole allocation).

    Raises `ValueError` naming the variable when one is malformed or missing.
    """
    if os.environ.get("VIDEOHPM_IGNORE_SLURM", "") not in ("", "0") or "SLURM_PROCID" not in os.environ:
        return {}
    world_raw = _first_env("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    if world_raw is None:
        raise ValueError("SLURM_PROCID is set but SLURM_NTASKS is not: start the job with srun (one task per GPU)")
    rank = env_int("SLURM_PROCID", 0)
    world = env_int("SLURM_STEP_NUM_TASKS", env_int("SLURM_NTASKS", 1))
    if not 0 <= rank < world:
        raise ValueError(f"SLURM_PROCID={rank} outside [0, {world}) (SLURM_NTASKS={world_raw})")
    env = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(env_int("SLURM_LOCALID", 0)),
           "GROUP_RANK": str(env_int("SLURM_NODEID", 0))}
    node_id = env_int("SLURM_NODEID", 0)
    tpn = _first_env("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    if tpn is not None:
        per_node = expand_tasks_per_node(tpn)
        if node_id < len(per_node):
            env["LOCAL_WORLD_SIZE"] = str(per_node[node_id])
    elif _first_env("SLURM_NTASKS_PER_NODE") is not None:
        env["LOCAL_WORLD_SIZE"] = str(env_int("SLURM_NTASKS_PER_NODE", 1))
    nodelist = _first_env("SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST")
    if _first_env("MASTER_ADDR") is None:
        if nodelist is None:
            raise ValueError("SLURM task without SLURM_NODELIST (and no MASTER_ADDR): cannot find the master host")
        env["MASTER_ADDR"] = expand_nodelist(nodelist)[0]
    if _first_env("MASTER_PORT") is None:
        job = _first_env("SLURM_JOB_ID", "SLURM_JOBID")
        if job is None:
            raise ValueError("SLURM task without SLURM_JOB_ID (and no MASTER_PORT): export MASTER_PORT")
        try:
            env["MASTER_PORT"] = str(15000 + int(job) % 10000)
        except ValueError as e:
            raise ValueError(f"SLURM_JOB_ID={job!r} is not an integer: export MASTER_PORT") from e
    return env


def apply_slurm_env() -> Dict[str, str]:
    """Inside `srun` (and not under another launcher): write `slurm_env()` into `os.environ`
    without overwriting what is already set; returns what was written. Idempotent."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun / deepspeed / a previous call
        return {}
    written = {k: v for k, v in slurm_env().items() if k not in os.environ}
    os.environ.update(written)
    return written


# --------------------------------------------------------------------------- DeepSpeed's CPU op
# DeepSpeed's ShareMemCommBuilder.NAME: the folder and library torch's JIT loader builds for it.
_COMM_OP = "deepspeed_shm_comm"
# What DeepSpeed prints while it probes and builds its ops, of no use when all goes well: the link
# tests of optional ops it will not use (libaio ...), torch's CUDA_HOME note on a CPU machine, the
# accelerator note, the build's success line.
_PROBE_NOISE = re.compile(r"cannot find -l\S+|collect2: error: ld returned|No CUDA runtime is found|"
                          r"deepspeed_shm_comm_op built successfully|Setting accelerator to CPU")


def extension_cache_dir() -> str:
    """Where torch builds JIT extensions (DeepSpeed's CPU communication op) for this project:
    `$TORCH_EXTENSIONS_DIR` when set, else the virtual environment's `torch_extensions/` (the one
    `make` uses), else `~/.cache/videohpm/torch_extensions`."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return os.environ["TORCH_EXTENSIONS_DIR"]
    if sys.prefix != sys.base_prefix:
        return os.path.join(sys.prefix, "torch_extensions")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "videohpm", "torch_extensions")


def use_extension_cache() -> str:
    """Set `$TORCH_EXTENSIONS_DIR` to `extension_cache_dir()` and put this interpreter's `ninja`
    (if it has one) first on `$PATH`: one cache per environment for every entry point, built and
    checked by one ninja (two ninja versions each take the other's build log as invalid and
    rebuild). Processes started afterwards inherit both. Returns the folder."""
    folder = extension_cache_dir()
    os.environ["TORCH_EXTENSIONS_DIR"] = folder
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    path = os.environ.get("PATH", "")
    if os.path.isfile(os.path.join(bin_dir, "ninja")) and path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
    return folder


def comm_op_built() -> bool:
    """Whether the extension cache holds DeepSpeed's built CPU communication op."""
    return os.path.isfile(os.path.join(extension_cache_dir(), _COMM_OP, f"{_COMM_OP}.so"))


def _comm_op_used() -> bool:
    """DeepSpeed builds its shared-memory communication op for CPU processes on Linux."""
    return sys.platform.startswith("linux") and not torch.cuda.is_available()


def _build_notice() -> None:
    """One line before a first build, so that a silent pause is not taken for a hang."""
    if _comm_op_used() and not comm_op_built() and get_local_rank() == 0:
        print(f"building DeepSpeed's CPU communication op once, a minute or two (cached in "
              f"{extension_cache_dir()})", file=sys.stderr, flush=True)


def build_comm_op() -> bool:
    """Build DeepSpeed's CPU communication op into the extension cache now (`make setup` does),
    so that no run pays for it; returns whether the cache holds it (False where it is not used:
    GPU machines, other systems)."""
    use_extension_cache()
    if not _comm_op_used():
        return False
    _build_notice()
    with quiet_deepspeed():
        import deepspeed.ops  # heavy: imported where the op is built
        from deepspeed.accelerator import get_accelerator

        builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
        if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
            return False
        builder.load()
    return comm_op_built()


@contextlib.contextmanager
def quiet_deepspeed() -> Iterator[None]:
    """Inside, whatever reaches stdout / stderr (file descriptors 1 and 2, so the compilers and
    linkers DeepSpeed starts too) is held back; on leaving, it is written out without the lines of
    DeepSpeed's op probes (`_PROBE_NOISE`) — or all of it when the block raises, so that a real
    failure keeps its whole story."""
    held = []
    for fd in (1, 2):
        try:
            keep = os.dup(fd)
        except OSError:  # a closed descriptor: nothing to hold back
            continue
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        tmp = tempfile.TemporaryFile()
        os.dup2(tmp.fileno(), fd)
        held.append((fd, keep, tmp))
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, keep, tmp in held:
            os.dup2(keep, fd)
            os.close(keep)
            tmp.seek(0)
            lines = tmp.read().decode(errors="replace").splitlines(keepends=True)
            tmp.close()
            out = "".join(ln for ln in lines if failed or not _PROBE_NOISE.search(ln))
            if out:
                os.write(fd, out.encode())


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

    SLURM variables (a task started by `srun`) are translated first (`apply_slurm_env`), and the
    extension cache is set (`use_extension_cache`; a first build of DeepSpeed's CPU op says so).
    Without launcher variables the job is a single process: its one-rank group uses an in-memory
    store (no port to pick or to collide on, nothing written to `os.environ` that subprocesses
    would inherit) — except `LOCAL_RANK=0`, which DeepSpeed insists on reading.
    """
    apply_slurm_env()
    use_extension_cache()
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
    _build_notice()
    with quiet_deepspeed():  # its op probes (and a first build of the CPU op) print nothing useful
        import deepspeed  # imported here: importing it is slow and probes the accelerator

        # Adopts an existing torch group, or initialises one from the launcher's environment.
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False, timeout=timeout)
    # DeepSpeed's ZeRO calls torch's deprecated name every step: a note about DeepSpeed's code
    warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor` is deprecated", category=FutureWarning)
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
        from deepspeed.utils import logger as ds_logger  # lazy: DeepSpeed is slow to import

        ds_logger.setLevel(logging.WARNING)
    except Exception:  # pragma: no cover - deepspeed missing is reported where it is needed
        pass
