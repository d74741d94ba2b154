"""Fine-tuning from a checkpoint that stores its config: the sizes a config leaves to the model
name's default come from the checkpoint; sizes it sets and the checkpoint contradicts are refused
naming the checkpoint's sizes and the overrides; every settings problem of a launch comes in one
error; a `train.max_steps` run ends with its `model_final.pth`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.conftest import PRETRAIN_CFG, data_overrides
from videohpm.config import ConfigError, config_from_dict, load_config
from videohpm.engine import Trainer
from videohpm.engine.build import build_model
from videohpm.engine.pretrained import fit_model_to_pretrained
from videohpm.models import create_model, load_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

# the pre-training run's model (what its model_final.pth stores under "config")
STORED = {"name": "pretrain_videomae_tiny_patch16_224",
          "kwargs": {"img_size": 32, "patch_size": 8, "num_frames": 4, "embed_dim": 64, "depth": 2, "num_heads": 2,
                     "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}}


def _checkpoint(tmp_path: Path, with_config: bool = True) -> Path:
    torch.manual_seed(0)
    model = create_model(STORED["name"], **STORED["kwargs"])
    obj = {"model": model.state_dict(), "weights": "model"}
    if with_config:
        obj["config"] = {"model": STORED, "train": {"epochs": 1}}
    path = tmp_path / "model_final.pth"
    torch.save(obj, path)
    return path


def _finetune_cfg(pretrained: Path, **kwargs):
    """A ViT-B recipe's model section: sizes left to `vit_base_patch16_224`'s defaults."""
    return config_from_dict({
        "model": {"name": "vit_base_patch16_224", "pretrained": str(pretrained),
                  "kwargs": {"img_size": 32, "num_frames": 4, "tubelet_size": 2, "num_classes": 3, **kwargs}},
        "method": {"name": "classification"},
        "data": {"num_classes": 3, "num_frames": 4, "input_size": 32, "short_side_size": 32},
        "optim": {"warmup_epochs": 0}, "train": {"epochs": 1}})


def test_sizes_left_to_the_name_come_from_the_checkpoint(tmp_path):
    path = _checkpoint(tmp_path)
    cfg = _finetune_cfg(path)
    adopted = fit_model_to_pretrained(cfg)
    # vit_base: 768 / 12 / 12, patch 16 → the checkpoint's 64 / 2 / 2, patch 8; tubelet 2 agreed
    assert adopted == {"embed_dim": 64, "depth": 2, "num_heads": 2, "patch_size": 8}
    assert {k: cfg.model.kwargs[k] for k in adopted} == adopted
    report = load_pretrained(build_model(cfg), str(path), strict="parts")  # every encoder tensor fits
    assert report.mismatched == [] and report.unexpected == []
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert fit_model_to_pretrained(cfg) == {}  # sized now: nothing more to take


def test_sizes_set_against_the_checkpoint_name_the_overrides(tmp_path):
    cfg = _finetune_cfg(_checkpoint(tmp_path), embed_dim=96, depth=2)
    with pytest.raises(ConfigError) as e:
        fit_model_to_pretrained(cfg)
    msg = str(e.value)
    assert "pretrain_videomae_tiny_patch16_224 encoder with embed_dim=64, depth=2, num_heads=2" in msg
    assert "model.kwargs sets embed_dim=96" in msg and "give model.kwargs.embed_dim=64 " in msg
    assert cfg.model.kwargs.embed_dim == 96  # nothing changed


def test_checkpoint_without_stored_config_is_left_alone(tmp_path):
    cfg = _finetune_cfg(_checkpoint(tmp_path, with_config=False))
    assert fit_model_to_pretrained(cfg) == {} and "embed_dim" not in cfg.model.kwargs


def test_launch_reports_every_settings_problem_together(demo, tmp_path):
    """Sizes against the checkpoint and a batch the list cannot fill: one error naming both fixes,
    raised before the run folder exists."""
    cfg = _finetune_cfg(_checkpoint(tmp_path), embed_dim=96)
    cfg.data.dataset, cfg.data.train, cfg.data.data_root = "ssv2", demo["train"], demo["root"]
    cfg.data.num_classes = cfg.model.kwargs.num_classes = 8
    cfg.data.num_workers = 0
    cfg.train.output_dir, cfg.train.batch_size, cfg.train.accum_steps = str(tmp_path / "run"), 4, 8
    with pytest.raises(ConfigError) as e:
        Trainer(cfg)
    msg = str(e.value)
    assert msg.startswith("2 settings problems:\n")
    assert "give model.kwargs.embed_dim=64" in msg
    assert "data.train: 16 samples are too few" in msg and "set train.accum_steps=4" in msg
    assert not (tmp_path / "run").exists()


def test_max_steps_run_writes_its_final_model(demo, tmp_path):
    out = tmp_path / "run"
    tr = Trainer(load_config(str(PRETRAIN_CFG), [*data_overrides(demo), f"train.output_dir={out}",
                                                 "train.max_steps=3"]))
    try:
        tr.fit()
    finally:
        tr.close()
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["global_step"] == 3 and final["epoch"] == 0  # stopped in the first of 2 epochs
    assert (out / "checkpoints" / "latest-00000003" / "COMPLETE").exists()


def test_tiny_scaled_lr_and_whole_run_warmup_are_named_before_work(demo, tmp_path, caplog):
    """base_lr 1.5e-4 × global batch 2 / 256 = 1.2e-6, and 1 warm-up epoch of 1: both warned of
    when the trainer is built (before DeepSpeed and the first step), with the settings to use."""
    import logging

    cfg = load_config(str(PRETRAIN_CFG), [*data_overrides(demo), f"train.output_dir={tmp_path / 'run'}",
                                          "train.epochs=1"])
    with caplog.at_level(logging.WARNING, logger="videohpm.engine.trainer"):
        tr = Trainer(cfg)
        tr.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "peak lr 1.17e-06 (optim.base_lr=0.00015 × global batch 2 / 256) is below 1e-05" in text
    assert "optim.lr=0.00015" in text
    assert "optim.warmup_epochs=1 spans all train.epochs=1" in text and "set optim.warmup_epochs=0.1" in text
