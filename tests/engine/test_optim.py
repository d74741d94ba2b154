"""Schedules, AdamW parameter groups, lr scaling and the DeepSpeed config builder."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from videohpm.engine.deepspeed_setup import OWNED_KEYS, build_deepspeed_config, resolve_deepspeed_dict
from videohpm.engine.optim import apply_schedules, build_param_groups, default_layer_id, scaled_lr
from videohpm.models import VideoClassifier
from videohpm.schedules import CosineSchedule

REPO = Path(__file__).resolve().parents[2]


def _videomae_cosine(base, final, epochs, niter, warmup_epochs, start_warmup):
    """VideoMAE's `utils.cosine_scheduler`, written out as a list (the reference)."""
    warmup = [start_warmup + (base - start_warmup) * i / (warmup_epochs * niter) for i in range(warmup_epochs * niter)]
    n = epochs * niter - warmup_epochs * niter
    rest = [final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / n)) for i in range(n)]
    return warmup + rest


def test_cosine_schedule_matches_videomae_per_iteration():
    ref = _videomae_cosine(1.2e-3, 1e-5, epochs=6, niter=7, warmup_epochs=2, start_warmup=1e-6)
    sched = CosineSchedule(1.2e-3, 1e-5, total_steps=42, warmup_steps=14, warmup_start=1e-6)
    got = [sched(s) for s in range(42)]
    assert got == pytest.approx(ref, rel=1e-12, abs=0)
    assert sched(42) == sched(10_000) == 1e-5  # past the end: the final value
    assert max(got) == pytest.approx(1.2e-3)
    # No hidden state: evaluating out of order (as a resumed run does) gives the same values.
    assert [sched(s) for s in reversed(range(42))] == list(reversed(got))
    assert CosineSchedule(**sched.state_dict()) == sched


def test_linear_scaling_rule():
    assert scaled_lr(1.5e-4, 2048) == pytest.approx(1.2e-3)   # VideoMAE pre-training
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)   # supplement Table S1
    assert scaled_lr(5e-4, 1024) == pytest.approx(2e-3)       # supplement Table S2


class _Toy(nn.Module):
    """A ViT-like module tree: embeddings, tokens, 3 blocks, a norm and a head."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.patch_embed = nn.Conv3d(3, 8, 2, 2)
        self.encoder.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.encoder.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.encoder.blocks = nn.ModuleList(
            nn.ModuleDict({"norm1": nn.LayerNorm(8), "fc": nn.Linear(8, 8)}) for _ in range(3))
        self.decoder = nn.Module()
        self.decoder.mask_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.decoder.blocks = nn.ModuleList([nn.ModuleDict({"fc": nn.Linear(8, 8)})])
        self.fc_norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)
        self.special = nn.Parameter(torch.zeros(2, 2))

    def no_weight_decay(self):
        return {"special"}


def test_param_groups_decay_and_layer_scales():
    recipe = nn.Module()
    recipe.model = _Toy()
    groups = build_param_groups(recipe, weight_decay=0.05, layer_decay=0.5)
    by_name = {}
    for g in groups:
        for n in g["param_names"]:
            by_name[n] = g
    assert "model.frozen" not in by_name  # not trainable
    decayed = {n for n, g in by_name.items() if g["weight_decay"] > 0}
    assert decayed == {"model.encoder.patch_embed.weight", "model.encoder.blocks.0.fc.weight",
                       "model.encoder.blocks.1.fc.weight", "model.encoder.blocks.2.fc.weight",
                       "model.decoder.blocks.0.fc.weight", "model.head.weight"}
    for n in ("model.encoder.pos_embed", "model.encoder.cls_token", "model.decoder.mask_token",
              "model.special", "model.fc_norm.weight", "model.head.bias", "model.encoder.blocks.1.norm1.weight"):
        assert by_name[n]["weight_decay"] == 0.0 and by_name[n]["wd_scale"] == 0.0, n
    # VideoMAE: scale = decay^(L + 1 − layer_id), L = 3 blocks; embeddings 0, block i → i + 1, head L + 1.
    L = 3
    expect = {"model.encoder.patch_embed.weight": 0, "model.encoder.pos_embed": 0, "model.encoder.blocks.0.fc.weight": 1,
              "model.encoder.blocks.2.norm1.bias": 3, "model.fc_norm.weight": 4, "model.head.weight": 4,
              "model.decoder.blocks.0.fc.weight": 4}
    for n, layer in expect.items():
        assert default_layer_id(n, L) == layer
        assert by_name[n]["lr_scale"] == pytest.approx(0.5 ** (L + 1 - layer)), n
    # Without layer decay: two groups, every scale 1.
    flat = build_param_groups(recipe, weight_decay=0.05)
    assert len(flat) == 2 and all(g["lr_scale"] == 1.0 for g in flat)


_CLASSIFIER = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=3, num_heads=2,
                   num_classes=5)


def test_layer_decay_groups():
    """The fine-tuning classifier's own names (moved from tests/models/test_classifier.py with the
    copy of the groups that lived in models/classifier.py)."""
    torch.manual_seed(0)
    model = VideoClassifier(**{**_CLASSIFIER, "use_learnable_pos_emb": True})
    groups = build_param_groups(model, weight_decay=0.05, layer_decay=0.5)
    name_of = {id(p): n for n, p in model.named_parameters()}
    depth = 3
    seen = set()
    for g in groups:
        for p in g["params"]:
            n = name_of[id(p)]
            seen.add(n)
            if n.startswith("encoder.blocks."):
                layer = int(n.split(".")[2]) + 1
            elif n.startswith(("encoder.patch_embed", "encoder.pos_embed")):
                layer = 0
            else:  # fc_norm, head
                layer = depth + 1
            assert g["lr_scale"] == pytest.approx(0.5 ** (depth + 1 - layer)), n
            no_wd = p.ndim <= 1 or n == "encoder.pos_embed"
            assert g["layer_id"] == layer, n
            assert g["weight_decay"] == (0.0 if no_wd else 0.05), n
    assert seen == set(name_of.values())
    assert model.no_weight_decay() == {"encoder.pos_embed"}


def test_layer_decay_class_token_and_embeddings_in_layer_0_under_a_recipe():
    """BEiT/VideoMAE/MAE (and timm): class token, position table and patch embedding are layer 0,
    also with the recipe's `model.` prefix (where the removed classifier copy put them on top)."""
    recipe = nn.Module()
    recipe.model = VideoClassifier(**{**_CLASSIFIER, "cls_token": True, "use_learnable_pos_emb": True})
    groups = build_param_groups(recipe, weight_decay=0.05, layer_decay=0.5)
    layer_of = {n: g["layer_id"] for g in groups for n in g["param_names"]}
    for n in ("model.encoder.cls_token", "model.encoder.pos_embed", "model.encoder.patch_embed.proj.weight"):
        assert layer_of[n] == 0, n
    assert layer_of["model.encoder.blocks.2.attn.qkv.weight"] == 3 and layer_of["model.head.weight"] == 4


def test_apply_schedules_writes_scaled_lr_and_wd():
    p1, p2 = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([{"params": [p1], "lr_scale": 0.25, "wd_scale": 0.0, "weight_decay": 0.0},
                             {"params": [p2], "lr_scale": 1.0, "wd_scale": 1.0, "weight_decay": 0.05}], lr=1.0)
    apply_schedules(opt, 0.1, 0.04)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.025, 0.1])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.04]


def test_deepspeed_config_owns_batch_clip_and_precision():
    ds = resolve_deepspeed_dict(str(REPO / "configs" / "deepspeed" / "zero2.json"))
    cfg = build_deepspeed_config(ds, micro_batch=6, accum_steps=4, world_size=8, precision="bf16", clip_grad=1.0)
    assert cfg["train_batch_size"] == 6 * 4 * 8 and cfg["train_micro_batch_size_per_gpu"] == 6
    assert cfg["gradient_accumulation_steps"] == 4 and cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    assert cfg["zero_optimization"]["stage"] == 2
    fp16 = build_deepspeed_config(ds, 1, 1, 1, "fp16", None)["fp16"]
    assert fp16["enabled"] and fp16["loss_scale"] == 0  # 0 = dynamic loss scaling
    assert resolve_deepspeed_dict(None, {"zero_optimization": {"stage": 1}}, zero_stage=3)["zero_optimization"] == {"stage": 3}
    for key in OWNED_KEYS:
        with pytest.raises(ValueError, match=key):
            resolve_deepspeed_dict(None, {key: 1})


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_shipped_deepspeed_files(stage):
    path = REPO / "configs" / "deepspeed" / f"zero{stage}.json"
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == stage
    assert resolve_deepspeed_dict(str(path))["zero_optimization"]["stage"] == stage
