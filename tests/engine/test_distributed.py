"""Two ranks through the deepspeed launcher (gloo on CPU): HPM pre-training with ZeRO-2 and
ZeRO-3, then fine-tuning with validation under ZeRO-3 from the ZeRO-3 run's exported weights.

Finite losses are not enough: after every optimizer step the ranks must hold bit-identical
student (and teacher) weights (`train.check_replicas_every=1` all-reduces max − min of every
parameter), and the EMA teacher saved at step k must equal
`m·teacher_{k−1} + (1 − m)·student_k` (Eq. 1) computed here by hand from the checkpoints — with
the student's weights reassembled from the ZeRO shards by DeepSpeed's own `zero_to_fp32`.
"""
from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Dict

import pytest
import torch

from tests.engine.conftest import DEEPSPEED, FINETUNE_CFG, PRETRAIN_CFG, data_overrides, read_log, run_train

MOMENTUM = 0.9  # m of Eq. 1; far from 1 so one step moves the teacher visibly
STEPS = 4  # 16 videos / (2 ranks × 2 per rank) = one epoch
_RUNS: Dict[str, Path] = {}


def _launcher():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [DEEPSPEED, "--num_gpus", "2", "--master_port", str(port)]


def _pretrain(stage: int, demo, tmp_path_factory) -> Path:
    key = f"pretrain{stage}"
    if key not in _RUNS:
        out = tmp_path_factory.mktemp(f"zero{stage}")
        run_train(["--config", str(PRETRAIN_CFG), *data_overrides(demo), f"train.output_dir={out}",
                   f"deepspeed.config=configs/deepspeed/zero{stage}.json", "train.epochs=1",
                   "train.save_every_steps=1", "train.keep_latest=3", "train.check_replicas_every=1",
                   "train.log_every=1", f"method.kwargs.momentum={MOMENTUM}"], launcher=_launcher(), timeout=400)
        _RUNS[key] = out
    return _RUNS[key]


def _student(ckpt_root: Path, tag: str) -> Dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    sd = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_root), tag=tag)
    return {k[len("model."):]: v.float() for k, v in sd.items() if k.startswith("model.")}


def _teacher(ckpt_root: Path, tag: str) -> Dict[str, torch.Tensor]:
    state = torch.load(ckpt_root / tag / "trainer_state.pt", map_location="cpu", weights_only=False)
    return state["teacher"]


def _steps(out: Path):
    return [r for r in read_log(out) if r.get("type") == "step"]


@pytest.mark.distributed
@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_hpm_replicas_in_sync_and_teacher_is_ema(stage, demo, tmp_path_factory):
    out = _pretrain(stage, demo, tmp_path_factory)
    steps = _steps(out)
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    for r in steps:
        assert math.isfinite(r["loss"]) and math.isfinite(r["loss_rec"]) and math.isfinite(r["loss_pred"])
        assert r["replica_max_diff"] == 0.0, f"ranks diverged at step {r['step']}"
    root = out / "checkpoints"
    tags = [f"latest-{k:08d}" for k in range(1, STEPS)] + ["epoch-0000"]  # the last step ends the epoch
    assert all((root / t / "COMPLETE").exists() for t in tags)
    assert all((root / t / "rng_rank1.pt").exists() for t in tags)  # every rank wrote its state
    for prev, cur in zip(tags, tags[1:]):
        t_prev, t_cur, s_cur, s_prev = _teacher(root, prev), _teacher(root, cur), _student(root, cur), _student(root, prev)
        assert set(t_cur) == set(s_cur)
        moved = 0
        for k, t in t_cur.items():
            assert t.dtype == torch.float32  # the teacher stays fp32
            expected = MOMENTUM * t_prev[k] + (1 - MOMENTUM) * s_cur[k]
            torch.testing.assert_close(t, expected, rtol=0, atol=1e-6, msg=f"{cur}: teacher {k} is not the EMA")
            moved += int(not torch.equal(s_cur[k], s_prev[k]))
        assert moved > len(t_cur) // 2, "the student barely changed: the optimizer did not step"
    # The exported weights (gathered from the shards under ZeRO-3) are the final student and teacher.
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    s_last, t_last = _student(root, tags[-1]), _teacher(root, tags[-1])
    assert set(final["model"]) == set(s_last)
    for k, v in s_last.items():
        assert torch.equal(final["model"][k], v), k
        assert torch.equal(final["teacher"][k], t_last[k]), k
    assert (out / "config.yaml").exists()


@pytest.mark.distributed
def test_zero2_and_zero3_compute_the_same_losses(demo, tmp_path_factory):
    """Same seeds and data: ZeRO-3's partitioned parameters give ZeRO-2's losses (up to the
    order of floating-point reductions)."""
    l2 = [r["loss"] for r in _steps(_pretrain(2, demo, tmp_path_factory))]
    l3 = [r["loss"] for r in _steps(_pretrain(3, demo, tmp_path_factory))]
    assert len(l2) == len(l3) == STEPS
    for a, b in zip(l2, l3):
        assert abs(a - b) <= 1e-4 * abs(a), (l2, l3)


@pytest.mark.distributed
def test_two_ranks_zero3_finetune_with_validation(demo, tmp_path_factory):
    """Fine-tuning from the ZeRO-3 export, itself under ZeRO-3: the validation forward passes are
    collective there, so the ranks must run as many of them (padded shards) — and the padding
    must not be counted: 8 validation videos → accuracies are multiples of 12.5%."""
    pre = _pretrain(3, demo, tmp_path_factory)
    out = tmp_path_factory.mktemp("finetune_zero3")
    run_train(["--config", str(FINETUNE_CFG), *data_overrides(demo, val=True), f"train.output_dir={out}",
               f"model.pretrained={pre / 'model_final.pth'}", "deepspeed.config=configs/deepspeed/zero3.json",
               "train.epochs=1", "optim.warmup_epochs=0", "train.check_replicas_every=1",
               "data.num_workers=0"], launcher=_launcher(), timeout=400)
    steps = _steps(out)
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert all(r["replica_max_diff"] == 0.0 for r in steps)
    epoch = [r for r in read_log(out) if r.get("type") == "epoch"][-1]
    for key in ("val_acc1", "val_acc5", "val_acc1_ema", "val_acc5_ema"):
        assert 0.0 <= epoch[key] <= 100.0 and (epoch[key] / 12.5).is_integer(), (key, epoch[key])
    assert epoch["val_acc1"] <= epoch["val_acc5"]
    assert (out / "model_final.pth").exists()
