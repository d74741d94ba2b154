"""Fine-tuning from a checkpoint that stores its config: the sizes a config leaves to the model
name's default come from the checkpoint; sizes it sets and the checkpoint contradicts are refused
naming the checkpoint's sizes and the overrides; every settings problem of a launch comes in one
error; a `train.max_steps` run ends with its `model_final.pth`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.engine.conftest import PRETRAIN_CFG, REPO, data_overrides
from videohpm.config import ConfigError, config_from_dict, load_config
from videohpm.engine import Trainer
from videohpm.engine.build import build_model
from videohpm.engine.pretrained import fit_model_to_pretrained
from videohpm.models import create_model, load_pretrained
from tests.engine.helpers import train_main

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


def _finetune_dict(pretrained: Path, **kwargs) -> dict:
    """A ViT-B recipe's model section: sizes left to `vit_base_patch16_224`'s defaults."""
    return {"model": {"name": "vit_base_patch16_224", "pretrained": str(pretrained),
                      "kwargs": {"img_size": 32, "num_frames": 4, "tubelet_size": 2, "num_classes": 3, **kwargs}},
            "method": {"name": "classification"},
            "data": {"num_classes": 3, "num_frames": 4, "input_size": 32, "short_side_size": 32},
            "optim": {"warmup_epochs": 0}, "train": {"epochs": 1}}


def _finetune_cfg(pretrained: Path, **kwargs):
    return config_from_dict(_finetune_dict(pretrained, **kwargs))


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
    # the override it names is enough, although 64 wide with ViT-B's 12 heads alone would not build
    cfg = _finetune_cfg(_checkpoint(tmp_path), embed_dim=64, depth=2)
    assert fit_model_to_pretrained(cfg) == {"num_heads": 2, "patch_size": 8}
    build_model(cfg)


def test_checkpoint_without_stored_config_is_left_alone(tmp_path):
    cfg = _finetune_cfg(_checkpoint(tmp_path, with_config=False))
    assert fit_model_to_pretrained(cfg) == {} and "embed_dim" not in cfg.model.kwargs


def test_launch_reports_every_settings_problem_together(demo, tmp_path):
    """Sizes against the checkpoint, labels beyond the head and a batch the built training set
    cannot fill: one error naming every fix, raised before the run folder exists."""
    cfg = _finetune_cfg(_checkpoint(tmp_path), embed_dim=96)
    cfg.data.dataset, cfg.data.train, cfg.data.data_root = "ssv2", demo["train"], demo["root"]
    cfg.data.num_classes, cfg.data.num_workers = 8, 0  # the demo's 8 classes, the model's 3
    cfg.train.output_dir, cfg.train.batch_size, cfg.train.accum_steps = str(tmp_path / "run"), 4, 8
    with pytest.raises(ConfigError) as e:
        Trainer(cfg)
    lines = str(e.value).splitlines()
    assert lines[0] == "3 settings problems:"
    # the config's values first: the list counted before any data set is built
    assert lines[1] == ("  data.train: 16 videos are too few for one optimizer step with 1 rank(s) × "
                        "train.batch_size=4 × train.accum_steps=8; set train.accum_steps=4")
    assert lines[2].startswith("  model.pretrained: ") and "give model.kwargs.embed_dim=64" in lines[2]
    assert lines[3] == "  data.num_classes: 8, but the model has 3 outputs (model.kwargs.num_classes=3)"
    assert "samples are too few" not in str(e.value)  # the trainer's own count is not told twice
    assert len(lines) == 4 and not (tmp_path / "run").exists()


def test_train_py_reports_values_weights_and_data_in_one_error(demo, tmp_path, capsys):
    """`tools/train.py` with a bad optim value, a checkpoint of other sizes and a list too short for
    the batch: exit 2, one `config error:` naming all three (the values first), nothing written."""
    config = tmp_path / "finetune.yaml"
    config.write_text(yaml.safe_dump(_finetune_dict(_checkpoint(tmp_path), embed_dim=96)))
    out = tmp_path / "run"
    rc, err = train_main(["--config", config, "data.dataset=ssv2", f"data.train={demo['train']}",
                           f"data.data_root={demo['root']}", "data.num_classes=8", "model.kwargs.num_classes=8",
                           "data.num_workers=0", f"train.output_dir={out}", "train.batch_size=4",
                           "train.accum_steps=8", "optim.layer_decay=1.5"], capsys)
    assert rc == 2 and "config error: " in err, err[-3000:]
    lines = err[err.index("config error: "):].strip().splitlines()  # after the log lines of the checks
    assert lines[0] == "config error: 3 settings problems:", err[-3000:]
    assert lines[1] == "  optim.layer_decay: must be in (0, 1], got 1.5"
    assert lines[2].startswith("  data.train: 16 videos are too few") and lines[2].endswith("set train.accum_steps=4")
    assert lines[3].startswith(f"  model.pretrained: {tmp_path / 'model_final.pth'} holds a "
                               "pretrain_videomae_tiny_patch16_224 encoder with embed_dim=64")
    assert "give model.kwargs.embed_dim=64" in lines[3] and len(lines) == 4
    assert not out.exists() and "Traceback" not in err
    # the fixes it names are enough: the next launch passes every check
    cfg = load_config(str(config), [f"data.train={demo['train']}", f"data.data_root={demo['root']}", "data.dataset=ssv2",
                                    "data.num_classes=8", "model.kwargs.num_classes=8", "data.num_workers=0",
                                    f"train.output_dir={out}", "train.batch_size=4", "train.accum_steps=4",
                                    "model.kwargs.embed_dim=64"])
    Trainer(cfg).close()
    assert (out / "config.yaml").exists()


def test_a_value_that_other_checks_need_skips_them(demo, tmp_path):
    """`train.batch_size=0`: the batch cannot be fitted to the list, so only the value is told (no
    division by zero, no second line about the same list), with the checks that do not need it
    (the data geometry against the model)."""
    cfg = load_config(str(PRETRAIN_CFG), [*data_overrides(demo), f"train.output_dir={tmp_path / 'run'}",
                                          "train.batch_size=0", "data.num_frames=5"], check=False)
    with pytest.raises(ConfigError) as e:
        Trainer(cfg)
    assert str(e.value).splitlines() == [
        "2 settings problems:", "  train.batch_size: must be >= 1, got 0",
        "  data.num_frames: 5 frames are not a multiple of the tubelet size 2 of model "
        "pretrain_videomae_tiny_patch16_224 (model.kwargs.tubelet_size)"]
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
