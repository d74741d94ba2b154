"""videohpm.distributed's SLURM translation: nodelist expansion and the variables `srun` sets."""
from __future__ import annotations

import os

import pytest

from videohpm import distributed as vdist

_SLURM = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_NODEID",
          "SLURM_NODELIST", "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_JOB_ID", "SLURM_JOBID",
          "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "VIDEOHPM_IGNORE_SLURM",
          "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    saved = dict(os.environ)  # apply_slurm_env writes os.environ itself: restore all of it after
    for k in _SLURM:
        monkeypatch.delenv(k, raising=False)
    # the getters prefer an initialised process group; an earlier in-process test of the session
    # may have left a 1-rank one, so these tests read the environment as a fresh process would
    monkeypatch.setattr(vdist.dist, "is_initialized", lambda: False)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("nodelist, hosts", [
    ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
    ("gpu-a[1-2],gpu-b3", ["gpu-a1", "gpu-a2", "gpu-b3"]),
    ("n1,n2", ["n1", "n2"]),
    ("localhost", ["localhost"]),
    ("127.0.0.1", ["127.0.0.1"]),
    ("node[008-011]", ["node008", "node009", "node010", "node011"]),
    ("node[8-11]", ["node8", "node9", "node10", "node11"]),
    ("node[09-10]", ["node09", "node10"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("a[3],b[1-2,5],c", ["a3", "b1", "b2", "b5", "c"]),
    ("cn-[100-101].cluster,login", ["cn-100.cluster", "cn-101.cluster", "login"]),
    ("n[1-2],n2", ["n1", "n2"]),  # duplicates once
])
def test_expand_nodelist(nodelist, hosts):
    assert vdist.expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["", "node[01-04", "node01-04]", "node[a-b]", "node[4-1]", "n1,,n2", "x[1-2]]"])
def test_expand_nodelist_rejects(bad):
    with pytest.raises(ValueError, match="nodelist"):
        vdist.expand_nodelist(bad)


def test_expand_tasks_per_node():
    assert vdist.expand_tasks_per_node("4(x2),2") == [4, 4, 2]
    assert vdist.expand_tasks_per_node("8") == [8]
    with pytest.raises(ValueError, match="tasks-per-node"):
        vdist.expand_tasks_per_node("4(y2)")


def test_slurm_env_of_a_two_node_job(clean_env):
    """Task 5 of `srun -N 2 --ntasks-per-node 4` on node[07-08]: node 1, local rank 1."""
    for k, v in dict(SLURM_PROCID="5", SLURM_NTASKS="8", SLURM_LOCALID="1", SLURM_NODEID="1",
                     SLURM_NODELIST="node[07-08]", SLURM_JOB_ID="123456", SLURM_TASKS_PER_NODE="4(x2)").items():
        clean_env.setenv(k, v)
    env = vdist.slurm_env()
    assert env == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                   "MASTER_ADDR": "node07", "MASTER_PORT": str(15000 + 123456 % 10000)}
    written = vdist.apply_slurm_env()
    assert written == env
    assert vdist.get_rank() == 5 and vdist.get_world_size() == 8 and vdist.get_local_rank() == 1
    assert vdist.get_node_rank() == 1 and vdist.get_local_world_size() == 4 and vdist.launched_by_launcher()
    assert vdist.apply_slurm_env() == {}  # idempotent


def test_exported_master_wins_and_step_variables(clean_env):
    for k, v in dict(SLURM_PROCID="0", SLURM_NTASKS="16", SLURM_STEP_NUM_TASKS="2", SLURM_LOCALID="0",
                     SLURM_JOB_NODELIST="gpu-a[1-2],gpu-b3", SLURM_STEP_NODELIST="gpu-b3", SLURM_JOB_ID="7",
                     MASTER_ADDR="10.0.0.9", MASTER_PORT="29511").items():
        clean_env.setenv(k, v)
    env = vdist.slurm_env()
    assert env["WORLD_SIZE"] == "2" and "MASTER_ADDR" not in env and "MASTER_PORT" not in env
    clean_env.delenv("MASTER_ADDR")
    assert vdist.slurm_env()["MASTER_ADDR"] == "gpu-b3"  # the step's own nodelist first


def test_no_slurm_and_opt_out_and_errors(clean_env):
    assert vdist.slurm_env() == {} and vdist.apply_slurm_env() == {}
    clean_env.setenv("SLURM_PROCID", "0")
    with pytest.raises(ValueError, match="SLURM_NTASKS"):
        vdist.slurm_env()
    clean_env.setenv("SLURM_NTASKS", "2")
    clean_env.setenv("SLURM_NODELIST", "n[1-2]")
    with pytest.raises(ValueError, match="MASTER_PORT"):
        vdist.slurm_env()  # neither MASTER_PORT nor SLURM_JOB_ID
    clean_env.setenv("SLURM_JOB_ID", "42")
    clean_env.setenv("SLURM_PROCID", "2")
    with pytest.raises(ValueError, match="SLURM_PROCID=2"):
        vdist.slurm_env()
    clean_env.setenv("VIDEOHPM_IGNORE_SLURM", "1")
    assert vdist.slurm_env() == {}
    clean_env.delenv("VIDEOHPM_IGNORE_SLURM")
    clean_env.setenv("SLURM_PROCID", "1")
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "1")  # another launcher (torchrun inside srun) already decided
    assert vdist.apply_slurm_env() == {}
