"""Real processes through every launch path the README documents (gloo on CPU):

* `torchrun --nproc_per_node 2 tools/train.py` (replicas bit-identical after every step) and
  `torchrun --nproc_per_node 2 tools/test.py` (the same predictions as one process);
* the example `tools/slurm/train.sbatch`, run by bash with a stand-in `srun` that starts two
  `python tools/train.py` tasks with the variables srun sets (`SLURM_PROCID`, `SLURM_NTASKS`,
  `SLURM_LOCALID`, `SLURM_NODELIST`, `SLURM_JOB_ID` → the documented port);
* a two-node `deepspeed` launch simulated on one machine: two launchers with `--no_ssh
  --node_rank 0|1` on 127.0.0.1 and a two-host hostfile;
* resuming the SLURM run's 2-rank ZeRO-1 checkpoint on 1 rank: with the global batch kept
  (`train.accum_steps=2`, DeepSpeed's universal checkpoint) it continues exactly where it
  stopped; with the global batch changed it fails before any step, saying which accum_steps to set.

Every process runs in its own session and is killed with its group on timeout, so no stray
processes are left behind; ports are picked free.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from tests.engine.conftest import FINETUNE_CFG, PRETRAIN_CFG, PYTHON, REPO, data_overrides, read_log, subprocess_env

TORCHRUN = str(Path(PYTHON).with_name("torchrun"))
DEEPSPEED = str(Path(PYTHON).with_name("deepspeed"))
TIMEOUT = 600  # generous: one launch takes ~40 s on an idle 2-core machine, up to ~400 s when it is shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _run_all(jobs: Sequence[Tuple[List[str], Dict[str, str]]], timeout: float = TIMEOUT) -> List[subprocess.CompletedProcess]:
    """Start all `(cmd, extra_env)` jobs at once, wait for all; kill every group on timeout or
    when one fails (its peers would wait for it forever)."""
    procs = []
    for cmd, extra in jobs:
        env = subprocess_env()
        env.update(extra)
        procs.append((cmd, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            text=True, start_new_session=True)))
    results = []
    try:
        for cmd, p in procs:
            out, _ = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(cmd, p.returncode, out, ""))
            if p.returncode != 0:
                break
    except subprocess.TimeoutExpired:
        pass
    finally:
        for _, p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.communicate()
    for r in results:
        if r.returncode != 0:
            pytest.fail(f"{' '.join(r.args)} exited with {r.returncode}:\n{r.stdout[-6000:]}")
    if len(results) != len(procs):
        pytest.fail(f"timeout after {timeout} s: {[' '.join(c) for c, _ in procs]}")
    return results


def _steps(out: Path) -> List[dict]:
    return [r for r in read_log(out) if r.get("type") == "step"]


def _train(*args: str) -> List[str]:
    return [str(REPO / "tools" / "train.py"), *args]


def _assert_two_ranks_in_sync(out: Path, steps: int) -> None:
    recs = _steps(out)
    assert [r["step"] for r in recs] == list(range(1, steps + 1))
    assert all(r["replica_max_diff"] == 0.0 for r in recs), [r["replica_max_diff"] for r in recs]
    # both ranks wrote their part of the last checkpoint, and the group had two members
    last = sorted(p for p in (out / "checkpoints").iterdir() if (p / "COMPLETE").exists())[-1]
    assert (last / "rng_rank0.pt").exists() and (last / "rng_rank1.pt").exists()
    assert json.loads((last / "COMPLETE").read_text())["world_size"] == 2


# --------------------------------------------------------------------------- torchrun
@pytest.fixture(scope="module")
def torchrun_finetune(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torchrun_ft")
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           *_train("--config", str(FINETUNE_CFG), *data_overrides(demo, val=True), f"train.output_dir={out}",
                   "train.epochs=1", "optim.warmup_epochs=0", "train.check_replicas_every=1")]
    _run_all([(cmd, {})])
    return out


@pytest.mark.distributed
def test_torchrun_two_ranks_train(torchrun_finetune):
    _assert_two_ranks_in_sync(torchrun_finetune, steps=4)  # 16 videos / (2 ranks × 2)
    assert (torchrun_finetune / "model_final.pth").exists()


@pytest.mark.distributed
def test_torchrun_two_ranks_test_matches_one_process(torchrun_finetune, tmp_path):
    model = torchrun_finetune / "model_final.pth"
    cfg = torchrun_finetune / "config.yaml"
    common = ["--config", str(cfg), f"checkpoint={model}", "--no-flops", "data.test_num_clips=1",
              "data.test_num_crops=2"]
    two, one = tmp_path / "two", tmp_path / "one"
    _run_all([([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                str(_free_port()), str(REPO / "tools" / "test.py"), *common, "--output-dir", str(two)], {}),
              ([PYTHON, str(REPO / "tools" / "test.py"), *common, "--output-dir", str(one)], {})])

    def preds(d: Path):
        with open(d / "predictions.csv") as f:
            return sorted(tuple(r.values()) for r in csv.DictReader(f))

    p1, p2 = preds(one), preds(two)
    assert len(p1) == 8 and p1 == p2  # every video once, the same logits-derived rows
    m1, m2 = json.loads((one / "metrics.json").read_text()), json.loads((two / "metrics.json").read_text())
    assert m1["top1"] == m2["top1"] and m1["num_videos"] == m2["num_videos"] == 8


# --------------------------------------------------------------------------- SLURM variables
def _slurm_port_job_id() -> Tuple[int, int]:
    """A SLURM_JOB_ID whose documented port (15000 + id % 10000) is free right now."""
    for job in range(4321, 4321 + 10000, 97):
        port = 15000 + job % 10000
        if _port_is_free(port):
            return job, port
    raise RuntimeError("no free port in 15000-24999")


_FAKE_SRUN = """#!{python}
# Stands in for srun on a machine without SLURM: starts $SLURM_NTASKS copies of the command on this
# node with the per-task variables srun sets (SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID,
# SLURM_STEP_NUM_TASKS); the allocation's variables (SLURM_NTASKS, SLURM_NODELIST, SLURM_JOB_ID)
# come from the caller, as sbatch sets them.
import os, subprocess, sys
args = [a for a in sys.argv[1:] if not a.startswith("--kill-on-bad-exit")]
n = int(os.environ["SLURM_NTASKS"])
procs = [subprocess.Popen(args, env=dict(os.environ, SLURM_PROCID=str(r), SLURM_LOCALID=str(r), SLURM_NODEID="0",
                                         SLURM_STEP_NUM_TASKS=str(n))) for r in range(n)]
sys.exit(max(p.wait() for p in procs))
"""


@pytest.fixture(scope="module")
def slurm_pretrain(demo, tmp_path_factory) -> Path:
    """`sbatch tools/slurm/train.sbatch CONFIG ...` run by bash with a fake `srun` that starts 2
    tasks on this node: each is a plain `python tools/train.py` that finds its rank, world size,
    local rank, master host (SLURM_NODELIST) and port (from SLURM_JOB_ID) by itself.
    2 of 8 steps, then stop (max_steps) for the resume test."""
    out = tmp_path_factory.mktemp("slurm_pre")
    bindir = tmp_path_factory.mktemp("fake_srun")
    (bindir / "srun").write_text(_FAKE_SRUN.format(python=PYTHON))
    (bindir / "srun").chmod(0o755)
    job, _ = _slurm_port_job_id()
    env = {"PATH": f"{bindir}:{Path(PYTHON).parent}:{os.environ['PATH']}", "SLURM_NTASKS": "2",
           "SLURM_NODELIST": "localhost", "SLURM_JOB_ID": str(job), "SLURM_TASKS_PER_NODE": "2(x1)",
           "SLURM_CPUS_PER_TASK": "1"}
    cmd = ["bash", str(REPO / "tools" / "slurm" / "train.sbatch"), str(PRETRAIN_CFG), *data_overrides(demo),
           f"train.output_dir={out}", "train.epochs=2", "train.max_steps=2", "train.check_replicas_every=1",
           "train.tensorboard=true"]
    _run_all([(cmd, env)])
    return out


@pytest.mark.distributed
def test_slurm_variables_two_processes(slurm_pretrain):
    _assert_two_ranks_in_sync(slurm_pretrain, steps=2)
    assert (slurm_pretrain / "checkpoints" / "latest-00000002" / "COMPLETE").exists()
    assert (slurm_pretrain / "model_final.pth").exists()  # a train.max_steps run ends with its model
    log = (slurm_pretrain / "train.log").read_text()
    assert "2 videos × 1 samples × 2 ranks × 1 accum" in log  # the global batch line of rank 0


@pytest.mark.distributed
def test_resume_on_one_rank_keeps_the_global_batch(slurm_pretrain, demo, tmp_path):
    """The 2-rank checkpoint at step 2 of 8 (epoch 0, 4 steps/epoch) on 1 rank:
    accum_steps=1 would halve the global batch → refused before any step, naming accum_steps=2;
    with accum_steps=2 the run goes on from step 3 to 8 through the universal checkpoint."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(slurm_pretrain, out)
    base = ["--config", str(PRETRAIN_CFG), *data_overrides(demo), f"train.output_dir={out}", "train.epochs=2",
            "train.resume=auto"]
    env = subprocess_env()
    bad = subprocess.run([PYTHON, *_train(*base)], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert "train.accum_steps=2" in bad.stderr and "global batch 4 clips" in bad.stderr, bad.stderr[-3000:]
    assert [r["step"] for r in _steps(out)] == [1, 2]  # nothing trained
    _run_all([([PYTHON, *_train(*base, "train.accum_steps=2")], {})])
    recs = _steps(out)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert (out / "checkpoints" / ".universal" / "latest-00000002" / "COMPLETE").exists()
    resume = [r for r in read_log(out) if r.get("type") == "resume"]
    assert resume and resume[-1]["step"] == 2 and resume[-1]["micro_step"] == 4  # 2 steps × accum 2
    epochs = [r for r in read_log(out) if r.get("type") == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    # the lr schedule continues as one run's: peak lr and the cosine are functions of the step only
    from omegaconf import OmegaConf

    from videohpm.engine.optim import scaled_lr
    from videohpm.schedules import CosineSchedule

    o = OmegaConf.load(PRETRAIN_CFG).optim
    sched = CosineSchedule(scaled_lr(o.base_lr, 4), o.min_lr, 8, 4, o.warmup_lr)
    for r in recs:
        assert abs(r["lr"] - sched(r["step"] - 1)) <= 1e-12 + 1e-9 * sched(r["step"] - 1), r
    assert (out / "model_final.pth").exists()


# --------------------------------------------------------------------------- deepspeed, 2 nodes
@pytest.mark.distributed
def test_deepspeed_two_nodes_without_ssh(demo, tmp_path):
    """`deepspeed --hostfile H --no_ssh --node_rank R --num_nodes 2 --num_gpus 1` on both
    "nodes" (127.0.0.1): DeepSpeed's multi-node path (CROSS_RANK, world info) with real ranks."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    out = tmp_path / "run"
    port = _free_port()
    jobs = []
    for node in (0, 1):
        cmd = [DEEPSPEED, "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node), "--num_nodes", "2",
               "--num_gpus", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
               *_train("--config", str(PRETRAIN_CFG), *data_overrides(demo), f"train.output_dir={out}",
                       "train.epochs=1", "train.max_steps=2", "train.check_replicas_every=1")]
        jobs.append((cmd, {}))
    results = _run_all(jobs)
    _assert_two_ranks_in_sync(out, steps=2)
    assert (out / "model_final.pth").exists()  # train.max_steps=2 ends with the final model
    assert "node_rank=1" in results[1].stdout or "CROSS_RANK=1" in results[1].stdout
