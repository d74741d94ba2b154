"""Kill-and-resume: a run SIGKILLed mid-epoch — while it writes a checkpoint — and resumed with
`train.resume=auto` gives the same per-step losses as an uninterrupted run (CPU, one process, HPM
with its EMA teacher); partial checkpoint folders are ignored."""
from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.engine.conftest import (PRETRAIN_CFG, PYTHON, REPO, data_overrides, read_log, run_train, step_losses,
                                   subprocess_env)

COMMON = ["train.epochs=2", "train.save_every_steps=2", "train.log_every=1", "data.num_workers=0"]


_KILLER = """
import os, runpy, signal, sys
import videohpm.engine.checkpoint as ckpt
_write = ckpt._write_atomic_text
def _write_or_die(path, text):
    # SIGKILL at the worst moment: every rank's files of the step-{step} checkpoint are written,
    # its COMPLETE marker is not.
    if path.endswith(ckpt.COMPLETE_MARKER) and '"global_step": {step},' in text:
        os.kill(os.getpid(), signal.SIGKILL)
    _write(path, text)
ckpt._write_atomic_text = _write_or_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run_killed(args, tmp_path: Path, step: int) -> subprocess.CompletedProcess:
    """Run training under a wrapper that SIGKILLs it while it writes the step-`step` checkpoint."""
    wrapper = tmp_path / "kill_while_saving.py"
    wrapper.write_text(_KILLER.replace("{step}", str(step)))
    cmd = [PYTHON, str(wrapper), str(REPO / "tools" / "train.py")] + list(args)
    return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.distributed
def test_sigkill_then_resume_auto_gives_identical_losses(demo, tmp_path):
    base = ["--config", str(PRETRAIN_CFG), *data_overrides(demo), *COMMON]
    ref = tmp_path / "ref"
    run_train(base + [f"train.output_dir={ref}"])
    expected = step_losses(ref)
    assert sorted(expected) == list(range(1, 17))  # 16 videos / batch 2 = 8 steps × 2 epochs

    out = tmp_path / "killed"
    res = _run_killed(base + [f"train.output_dir={out}"], tmp_path, step=6)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    ckpts = out / "checkpoints"
    partial = ckpts / ".partial" / "latest-00000006"
    assert any(partial.glob("*optim_states.pt")) and not (partial / "COMPLETE").exists()
    assert not (ckpts / "latest-00000006").exists() and (ckpts / "latest-00000004" / "COMPLETE").exists()
    assert max(step_losses(out)) == 6  # steps 5–6 ran and were logged before the kill
    # A marker-less folder in place (a copy interrupted by hand, say) must be ignored as well.
    fake = ckpts / "latest-00000099"
    fake.mkdir()
    (fake / "mp_rank_00_model_states.pt").write_bytes(b"truncated")
    res = run_train(base + [f"train.output_dir={out}", "train.resume=auto"])
    resumed = [r for r in read_log(out) if r.get("type") == "resume"]
    assert len(resumed) == 1, res.stderr[-2000:]
    assert resumed[0]["checkpoint"] == str(ckpts / "latest-00000004") and resumed[0]["step"] == 4

    got = step_losses(out)
    assert sorted(got) == sorted(expected)
    for step in expected:  # exact: same data, masks, dropout, optimizer state and teacher
        assert got[step] == expected[step], f"step {step}: {got[step]} != {expected[step]}"
    alphas_ref, alphas = step_losses(ref, "alpha"), step_losses(out, "alpha")
    assert alphas == alphas_ref
    assert (out / "model_final.pth").exists()


def test_partial_and_unmarked_checkpoints_are_ignored(tmp_path):
    from videohpm.engine.checkpoint import COMPLETE_MARKER, checkpoint_info, find_latest, list_checkpoints

    root = tmp_path / "checkpoints"
    good = root / "latest-00000004"
    good.mkdir(parents=True)
    (good / COMPLETE_MARKER).write_text('{"global_step": 4, "epoch": 0}')
    milestone = root / "epoch-0000"
    milestone.mkdir()
    (milestone / COMPLETE_MARKER).write_text('{"global_step": 3, "epoch": 1}')
    (root / "latest-00000009").mkdir()  # killed while DeepSpeed wrote its files: no marker
    bad_marker = root / "latest-00000010"
    bad_marker.mkdir()
    (bad_marker / COMPLETE_MARKER).write_text("{not json")
    (root / ".partial" / "latest-00000011").mkdir(parents=True)
    assert [c.tag for c in list_checkpoints(str(root))] == ["epoch-0000", "latest-00000004"]
    latest = find_latest(str(root))
    assert latest is not None and latest.tag == "latest-00000004" and latest.global_step == 4
    assert checkpoint_info(str(good)).global_step == 4
    with pytest.raises(FileNotFoundError, match="train.resume"):
        checkpoint_info(str(root / "latest-00000009"))
    shutil.rmtree(good)
    assert find_latest(str(root)).tag == "epoch-0000"
    assert find_latest(str(tmp_path / "nothing")) is None
