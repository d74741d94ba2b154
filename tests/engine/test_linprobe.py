"""Linear probing through the engine (supplement Table S3): SGD with momentum over the BN + head
only, the encoder frozen, and a `model_final.pth` that keeps the whole probe.

The run uses the shipped `configs/finetune/ssv2_vit_b_linprobe.yaml` with a tiny encoder and the
demo clips, starting from a "pre-trained" checkpoint; the SGD update is checked step by step
against the heavy-ball rule written out here from the per-step gradients.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from tests.engine.conftest import REPO, read_log
from videohpm.config import ConfigError, load_config
from videohpm.engine import Trainer
from videohpm.engine.optim import build_optimizer, build_param_groups

LINPROBE_CFG = REPO / "configs" / "finetune" / "ssv2_vit_b_linprobe.yaml"
TINY_NAME = "pretrain_videomae_tiny_patch16_224"
TINY_KW = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=64, depth=2, num_heads=2,
               decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
TINY_MODEL = [f"model.name={TINY_NAME}", *(f"model.kwargs.{k}={v}" for k, v in TINY_KW.items()),
              "method.kwargs.num_classes=8"]
MOMENTUM = 0.9  # the config's value (Table S3)
BATCH = 4
STEPS = 2 * 16 // BATCH  # 2 epochs of the 16 demo training clips



pytestmark = pytest.mark.usefixtures("one_thread")

def _overrides(demo: Dict[str, str], out: Path, pretrained: Path) -> List[str]:
    return [*TINY_MODEL, f"model.pretrained={pretrained}", f"data.train={demo['train']}", f"data.val={demo['val']}",
            f"data.test={demo['val']}", f"data.data_root={demo['root']}", "data.num_classes=8", "data.num_frames=4",
            "data.input_size=32", "data.short_side_size=32", "data.num_workers=0", "train.epochs=2",
            f"train.batch_size={BATCH}", "train.accum_steps=1", "optim.warmup_epochs=1",
            # Table S3's base lr 1e-3 moves a 4-clip batch's head by ~1e-5 per step; a larger one
            # makes the update rule check below meaningful. The rule itself is the config's.
            "optim.base_lr=1.0", "train.precision=fp32", "train.tensorboard=false", "train.progress_bar=false",
            "train.log_every=1", "train.save_every=1", f"train.output_dir={out}"]


@pytest.fixture(scope="module")
def probe_run(demo, tmp_path_factory) -> Dict:
    """Two epochs of linear probing; records the head and its gradient at every optimizer step."""
    tmp = tmp_path_factory.mktemp("linprobe")
    from videohpm.models import create_model

    torch.manual_seed(123)  # "pre-trained" weights: a differently seeded model, saved as ours
    source = create_model(TINY_NAME, **TINY_KW)
    pretrained = tmp / "pretrained.pth"
    torch.save({"model": source.state_dict()}, pretrained)
    out = tmp / "run"
    cfg = load_config(str(LINPROBE_CFG), _overrides(demo, out, pretrained))
    tr = Trainer(cfg)
    rec = tr.recipe
    snap = {
        "encoder": {k: v.clone() for k, v in rec.encoder.state_dict().items()},
        "bn": {k: v.clone() for k, v in rec.bn.state_dict().items()},
        "head": [rec.head.weight.detach().clone()],
        "grads": [],
        "lrs": [],
    }
    # The gradient reaching the head at each backward (1 rank, no accumulation, fp32, no clipping:
    # exactly what the optimizer sees), and the head after every applied optimizer step.
    rec.head.weight.register_hook(lambda g: snap["grads"].append(g.detach().clone()))
    on_step_end = rec.on_step_end

    def record_step() -> None:
        snap["head"].append(rec.head.weight.detach().clone())
        on_step_end()

    rec.on_step_end = record_step
    base_opt = getattr(tr.optimizer, "optimizer", tr.optimizer)  # ZeRO wraps the client optimizer
    try:
        record = tr.fit()
        snap["lrs"] = [tr.lr_schedule(s) for s in range(STEPS)]
        from videohpm.data import build_dataset

        batch = torch.utils.data.default_collate([build_dataset(cfg.data, "val")[i] for i in range(4)])
        rec.eval()
        with torch.no_grad():
            logits = rec.logits(batch["video"])
    finally:
        tr.close()
    return dict(tr=tr, cfg=cfg, out=out, record=record, snap=snap, base_opt=base_opt, batch=batch, logits=logits,
                source=source.state_dict())


def test_linear_probe_trains_head_with_sgd_and_keeps_encoder_frozen(probe_run):
    tr, snap, opt = probe_run["tr"], probe_run["snap"], probe_run["base_opt"]
    # The optimizer really is SGD with the configured momentum (no Nesterov, no weight decay),
    # under DeepSpeed ZeRO-1 (which needs its untested-optimizer flag for it).
    assert type(opt) is torch.optim.SGD
    assert {(g["momentum"], g["nesterov"], g["dampening"], g["weight_decay"]) for g in opt.param_groups} == \
        {(MOMENTUM, False, 0, 0.0)}
    assert tr.zero_stage == 1 and tr.ds_config["zero_allow_untested_optimizer"] is True
    assert tr.peak_lr == pytest.approx(1.0 * BATCH / 256)  # linear scaling rule on base_lr
    # Only the head trains: the frozen encoder holds the pre-trained weights before and after.
    trainable = sorted(n for n, p in tr.recipe.named_parameters() if p.requires_grad)
    assert trainable == ["head.bias", "head.weight"]
    src = probe_run["source"]
    assert snap["encoder"] and all(torch.equal(v, src[f"encoder.{k}"]) for k, v in snap["encoder"].items())
    for k, v in tr.recipe.encoder.state_dict().items():
        assert torch.equal(v, snap["encoder"][k]), f"frozen encoder weight {k} changed"
    assert not torch.equal(tr.recipe.head.weight, snap["head"][0])
    assert not torch.equal(tr.recipe.bn.running_mean, snap["bn"]["running_mean"])  # BN statistics follow
    # Heavy-ball SGD step by step: b_k = μ b_{k-1} + g_k, θ_k = θ_{k-1} − lr_{k-1} b_k.
    assert len(snap["grads"]) == STEPS and len(snap["head"]) == STEPS + 1
    buf = torch.zeros_like(snap["head"][0])
    for k in range(1, STEPS + 1):
        buf = MOMENTUM * buf + snap["grads"][k - 1]
        expected = snap["head"][k - 1] - snap["lrs"][k - 1] * buf
        torch.testing.assert_close(snap["head"][k], expected, rtol=1e-5, atol=1e-7, msg=f"step {k}")
    assert snap["lrs"][0] == 0.0 and snap["lrs"][STEPS // 2] == pytest.approx(tr.peak_lr)  # warm-up from 0


def test_linear_probe_logs_and_validates(probe_run):
    records = read_log(probe_run["out"])
    steps = [r for r in records if r.get("type") == "step"]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and 0.0 <= r["acc1"] <= 1.0 for r in steps)
    epochs = [r for r in records if r.get("type") == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    for r in epochs:
        assert 0.0 <= r["val_acc1"] <= r["val_acc5"] <= 100.0
    assert (probe_run["out"] / "checkpoints" / "epoch-0001" / "COMPLETE").exists()


def test_model_final_keeps_bn_and_head(probe_run):
    """`model_final.pth` of a linear probe is the whole probe: tools/test.py's loader gives the
    trained run's logits from it (and from the run's DeepSpeed checkpoint)."""
    from videohpm.tasks.weights import load_classifier

    path = probe_run["out"] / "model_final.pth"
    final = torch.load(path, map_location="cpu", weights_only=False)
    assert final["weights"] == "recipe"
    keys = set(final["model"])
    assert {"bn.running_mean", "bn.running_var", "head.weight", "head.bias"} <= keys
    assert not any(k.startswith(("decoder.", "loss_predictor.")) for k in keys)
    assert torch.equal(final["model"]["head.weight"], probe_run["tr"].recipe.head.weight.detach())
    for checkpoint in (path, probe_run["out"]):
        net = load_classifier(probe_run["cfg"], str(checkpoint))
        with torch.no_grad():
            got = net(probe_run["batch"]["video"])
        torch.testing.assert_close(got, probe_run["logits"], rtol=1e-5, atol=1e-6)


def test_sgd_shares_the_param_groups_and_bad_names_fail():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = build_param_groups(model, 0.05)
    sgd = build_optimizer("SGD", groups, lr=0.1, weight_decay=0.05, momentum=0.8)
    assert type(sgd) is torch.optim.SGD
    # no decay on the bias and the norm, decay on the matrix: the same groups as AdamW's
    assert sorted((g["weight_decay"], len(g["params"])) for g in sgd.param_groups) == [(0.0, 3), (0.05, 1)]
    assert {g["momentum"] for g in sgd.param_groups} == {0.8} and not sgd.param_groups[0]["nesterov"]
    adamw = build_optimizer("adamw", build_param_groups(model, 0.05), lr=0.1, weight_decay=0.05)
    assert type(adamw) is torch.optim.AdamW
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer("lars", groups, lr=0.1, weight_decay=0.0)
    with pytest.raises(ConfigError, match=r"optim\.name"):
        load_config(str(LINPROBE_CFG), ["optim.name=lars"])
