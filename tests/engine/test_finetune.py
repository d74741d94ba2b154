"""Fine-tuning through the engine (in process, one rank): from our own pre-trained checkpoint and
from the same weights in VideoMAE V1's key layout; plus the non-finite-loss guard."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict

import pytest
import torch

from tests.engine.conftest import FINETUNE_CFG, PRETRAIN_CFG, data_overrides, read_log, step_losses
from videohpm.config import load_config
from videohpm.engine import NonFiniteLossError, Trainer


def _trainer(cfg_path: Path, overrides) -> Trainer:
    return Trainer(load_config(str(cfg_path), list(overrides)))


@pytest.fixture(scope="module")
def pretrained(demo, tmp_path_factory) -> Path:
    """A finished one-epoch HPM pre-training run; returns its `model_final.pth`."""
    out = tmp_path_factory.mktemp("pretrain")
    tr = _trainer(PRETRAIN_CFG, [*data_overrides(demo), f"train.output_dir={out}", "train.epochs=1",
                                 "optim.warmup_epochs=0", "train.log_every=4"])
    try:
        tr.fit()
    finally:
        tr.close()
    path = out / "model_final.pth"
    assert path.exists()
    return path


def _videomae_v1_layout(ours: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our pre-training weights under VideoMAE V1's names (`modeling_pretrain.py`): the encoder
    keeps `encoder.`, the decoder's input projection is `encoder_to_decoder`, its token is the
    top-level `mask_token`; V1 has no loss predictor."""
    v1 = {}
    for k, v in ours.items():
        if k.startswith("loss_predictor."):
            continue
        if k == "decoder.embed.weight":
            k = "encoder_to_decoder.weight"
        elif k == "decoder.mask_token":
            k = "mask_token"
        v1[k] = v.clone()
    return v1


def _finetune(demo, out: Path, pretrained_path: Path) -> Trainer:
    tr = _trainer(FINETUNE_CFG, [*data_overrides(demo, val=True), f"train.output_dir={out}",
                                 f"model.pretrained={pretrained_path}", "train.epochs=1", "optim.warmup_epochs=0"])
    return tr


_RUNS: Dict[str, Dict] = {}


def _run_layout(layout: str, demo, pretrained: Path, tmp_path_factory) -> Dict:
    """Fine-tune one epoch from `pretrained` given in `layout`; checks made before training are
    recorded in the result (the classifier's weights right after loading)."""
    if layout in _RUNS:
        return _RUNS[layout]
    tmp = tmp_path_factory.mktemp(f"finetune_{layout}")
    ours = torch.load(pretrained, map_location="cpu", weights_only=False)["model"]
    src = pretrained
    if layout == "videomae_v1":
        src = tmp / "videomae_v1_checkpoint.pth"
        torch.save({"model": _videomae_v1_layout(ours), "epoch": 799}, src)
    out = tmp / "run"
    tr = _finetune(demo, out, src)
    try:
        own = tr.model.state_dict()
        enc = [k for k in ours if k.startswith("encoder.") and not k.startswith("encoder.norm.")]
        not_loaded = [k for k in enc if not torch.equal(own[k], ours[k])]
        scales = sorted({round(g["lr_scale"], 6) for g in tr.optimizer.param_groups})
        batch = (tr.micro_clips, tr.global_batch, tr.peak_lr, tr.ds_config["train_micro_batch_size_per_gpu"])
        record = tr.fit()
        # The per-step schedule reached the optimizer DeepSpeed steps (scaled per layer).
        lr_now = tr.lr_schedule(tr.global_step)
        lr_ok = all(abs(g["lr"] - lr_now * g["lr_scale"]) <= 1e-12 for g in tr.optimizer.param_groups)
    finally:
        tr.close()
    _RUNS[layout] = dict(out=out, record=record, not_loaded=not_loaded, n_encoder=len(enc), scales=scales, lr_ok=lr_ok, batch=batch,
                         report=json.loads((out / "pretrained_report.json").read_text()), losses=step_losses(out))
    return _RUNS[layout]


@pytest.mark.parametrize("layout", ["ours", "videomae_v1"])
def test_finetune_from_pretrained(layout, demo, pretrained, tmp_path_factory):
    run = _run_layout(layout, demo, pretrained, tmp_path_factory)
    # The classifier's encoder holds the pre-trained encoder; fc_norm/head are new.
    assert run["n_encoder"] > 20 and run["not_loaded"] == []
    report = run["report"]
    assert report["format"] == ("videohpm" if layout == "ours" else "videomae")
    assert sorted(report["missing"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert report["unexpected"] == [] and report["mismatched"] == []
    assert any(k.startswith("decoder.") for k in report["ignored"])
    # Layer-wise lr decay 0.75 over 2 blocks: head 1, block 1 0.75, block 0 0.5625, embedding 0.42.
    assert run["scales"] == [round(0.75 ** 3, 6), round(0.75 ** 2, 6), 0.75, 1.0]
    assert run["lr_ok"]
    # Repeated augmentation (data.num_sample=2): 2 videos per rank give 4 clips, and the lr
    # scaling rule counts clips: 5e-4 × 4 / 256.
    assert run["batch"] == (4, 4, pytest.approx(5e-4 * 4 / 256), 4)
    record = run["record"]
    assert 0.0 <= record["val_acc1"] <= record["val_acc5"] <= 100.0
    assert 0.0 <= record["val_acc1_ema"] <= record["val_acc5_ema"] <= 100.0
    assert record["val_broken"] == 0
    losses = run["losses"]
    assert sorted(losses) == list(range(1, 9))  # 16 videos / batch 2
    assert all(math.isfinite(v) for v in losses.values())
    # Mixup/CutMix soft targets over 8 classes with ε = 0.1 keep the loss near ln 8 at the start.
    assert abs(losses[1] - math.log(8)) < 0.5
    assert (run["out"] / "checkpoints" / "epoch-0000" / "COMPLETE").exists()


def test_both_layouts_give_the_same_run(demo, pretrained, tmp_path_factory):
    """Same weights in two layouts → same initial classifier → the same loss at every step."""
    a = _run_layout("ours", demo, pretrained, tmp_path_factory)["losses"]
    b = _run_layout("videomae_v1", demo, pretrained, tmp_path_factory)["losses"]
    assert a == b


def test_nonfinite_losses_are_skipped_then_abort(demo, tmp_path):
    overrides = [*data_overrides(demo), "train.epochs=1", "optim.warmup_epochs=0", "train.max_nonfinite=3"]
    # 2 of 8 micro-steps skipped: under a 30 % limit the run ends normally
    tr = _trainer(PRETRAIN_CFG, overrides + [f"train.output_dir={tmp_path / 'a'}", "train.max_nonfinite_fraction=0.3"])
    forward = tr.recipe.forward
    calls = {"n": 0}

    def flaky(batch, progress=0.0):
        calls["n"] += 1
        out = forward(batch, progress)
        if calls["n"] in (3, 4):  # two bad micro-steps in a row: skipped, not fatal
            out["loss"] = out["loss"] * float("nan")
        return out

    tr.recipe.forward = flaky
    try:
        record = tr.fit()
    finally:
        tr.close()
    assert record["skipped_nonfinite"] == 2
    events = [r for r in read_log(tmp_path / "a") if r.get("type") == "nonfinite"]
    assert [e["micro_step"] for e in events] == [2, 3]
    assert tr.global_step == 6  # 8 micro-batches, 2 skipped
    for p in tr.recipe.parameters():
        assert torch.isfinite(p).all()

    tr = _trainer(PRETRAIN_CFG, overrides + [f"train.output_dir={tmp_path / 'b'}"])
    forward2 = tr.recipe.forward
    tr.recipe.forward = lambda batch, progress=0.0: {**forward2(batch, progress), "loss": torch.tensor(float("inf"))}
    try:
        with pytest.raises(NonFiniteLossError, match=r"3 micro-steps in a row .*train.max_nonfinite=3"):
            tr.fit()
    finally:
        tr.close()


def test_gradient_accumulation_counts_optimizer_steps(demo, tmp_path):
    """accum_steps=2: 8 micro-batches per epoch → 4 optimizer steps, schedules advance per
    optimizer step, the lr is scaled by the global batch of 2 videos × 2 micro-batches."""
    tr = _trainer(PRETRAIN_CFG, [*data_overrides(demo), f"train.output_dir={tmp_path}", "train.epochs=2",
                                 "train.accum_steps=2", "optim.warmup_epochs=1", "train.max_steps=6"])
    try:
        assert (tr.micro_per_epoch, tr.steps_per_epoch, tr.global_batch) == (8, 4, 4)
        assert tr.peak_lr == pytest.approx(1.5e-4 * 4 / 256)
        assert tr.ds_config["gradient_accumulation_steps"] == 2
        tr.fit()
        assert tr.engine.global_steps == tr.global_step == 6
        assert (tr.epoch, tr.micro) == (1, 4)  # stopped mid-epoch 2 after 2 of its 4 steps
    finally:
        tr.close()
    recs = [r for r in read_log(tmp_path) if r.get("type") == "step"]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    # progress of the last micro-batch of each optimizer step: (epoch + micro / 8) / 2
    assert [r["progress"] for r in recs] == [(1 / 8) / 2, (3 / 8) / 2, (5 / 8) / 2, (7 / 8) / 2,
                                            (1 + 1 / 8) / 2, (1 + 3 / 8) / 2]
    assert [r["lr"] for r in recs] == pytest.approx([tr.lr_schedule(s) for s in range(6)])
    assert (tmp_path / "checkpoints" / "latest-00000006" / "COMPLETE").exists()
