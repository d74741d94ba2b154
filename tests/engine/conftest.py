"""Shared fixtures of the engine tests: a small demo data set and helpers to run training."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

import videohpm.data  # noqa: F401  (loads PyAV before decord, see videohpm/data/video.py)

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_CFG = REPO / "configs" / "test" / "pretrain_hpm_tiny.yaml"
FINETUNE_CFG = REPO / "configs" / "test" / "finetune_tiny.yaml"
PYTHON = sys.executable
DEEPSPEED = str(Path(PYTHON).with_name("deepspeed"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): on
    the small shared test machine two threads mostly wait for each other (~3× faster with one)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Dict[str, str]:
    """16 training and 8 validation SSv2-style webm clips (16 frames, 32×32, 8 classes)."""
    from videohpm.data import make_demo_data

    root = tmp_path_factory.mktemp("demo")
    d = make_demo_data(root, seed=0, train_per_class=2, val_per_class=1, num_frames=16, size=32,
                       formats=("ssv2",), images=False)
    lists = d.lists["ssv2"]
    return {"train": lists["train"], "val": lists["val"], "root": d.video_dirs["ssv2"]}


def data_overrides(demo: Dict[str, str], val: bool = False) -> List[str]:
    out = [f"data.train={demo['train']}", f"data.data_root={demo['root']}"]
    if val:
        out.append(f"data.val={demo['val']}")
    return out


def subprocess_env() -> Dict[str, str]:
    """One thread per process: the machine is small and shared, and a fixed thread count keeps
    CPU reductions bit-identical between runs (needed for the resume-equality test)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_SIZE"):
        env.pop(k, None)  # the in-process tests set these for their single-rank group
    return env


def run_train(args: Sequence[str], launcher: Optional[List[str]] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python tools/train.py ARGS` (or through `launcher`), failing the test with its output."""
    cmd = (launcher or [PYTHON]) + [str(REPO / "tools" / "train.py")] + list(args)
    res = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {res.returncode}:\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}")
    return res


def read_log(out_dir: Path) -> List[dict]:
    path = Path(out_dir) / "log.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by SIGKILL
            pass
    return records


def step_losses(out_dir: Path, key: str = "loss") -> Dict[int, float]:
    """Global step -> value of the *last* record of that step (a resumed run rewrites steps)."""
    return {r["step"]: r[key] for r in read_log(out_dir) if r.get("type") == "step"}
