"""Nothing run, nothing lost, nothing silently wrong, through
`tools/train.py` in process: a reused `train.output_dir` is refused (or continued only by a run of
the same config), a launch that fails its checks writes nothing, data settings and labels are
checked against the model before any work, weights that do not fit stop the run, and a run that
skipped too many steps fails."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Dict

import pytest
import torch

from tests.engine.conftest import FINETUNE_CFG, PRETRAIN_CFG, REPO, data_overrides, read_log
from videohpm.config import load_config
from videohpm.engine import NonFiniteLossError, Trainer
from videohpm.engine.build import build_model
from videohpm.models import export_state_dict
from tests.engine.helpers import train_main

RUN_FILES = ("config.yaml", "model_final.pth", "log.jsonl", "checkpoints/latest", "checkpoints/epoch-0000/COMPLETE")


def _snapshot(out: Path) -> Dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in RUN_FILES}


def _pretrain_args(demo, out: Path, *extra) -> list:
    return ["--config", PRETRAIN_CFG, *data_overrides(demo), f"train.output_dir={out}", "train.epochs=1",
            "optim.warmup_epochs=0", *extra]


@pytest.fixture(scope="module")
def finished(demo, tmp_path_factory) -> Path:
    """A finished one-epoch HPM run (checkpoints + model_final.pth)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    tr = Trainer(load_config(str(PRETRAIN_CFG), [*data_overrides(demo), f"train.output_dir={out}", "train.epochs=1",
                                                 "optim.warmup_epochs=0"]))
    try:
        tr.fit()
    finally:
        tr.close()
    assert all((out / f).exists() for f in RUN_FILES)
    return out


def test_every_log_record_carries_the_run_id(finished):
    marker = json.loads((finished / "checkpoints" / "epoch-0000" / "COMPLETE").read_text())
    records = read_log(finished)
    assert len(records) > 8 and {r.get("run_id") for r in records} == {marker["run_id"]}
    assert marker["config_digest"] and records[-1]["type"] == "final" and records[-1]["status"] == "ok"


def test_a_new_run_refuses_a_finished_runs_folder_and_a_failed_launch_writes_nothing(demo, finished, capsys):
    before = _snapshot(finished)
    rc, err = train_main(_pretrain_args(demo, finished), capsys)
    assert rc == 2 and "train.output_dir" in err and "train.resume=auto" in err and "train.overwrite=true" in err
    assert "model_final.pth" in err
    # a launch that fails at start-up (a missing list) in the same folder: the old config.yaml stays
    rc, err = train_main(_pretrain_args(demo, finished, "train.resume=auto", "data.train=/nonexistent/list.csv"),
                          capsys)
    assert rc == 2 and "data.train" in err and "/nonexistent/list.csv" in err
    assert _snapshot(finished) == before


def test_resume_auto_continues_only_a_run_of_the_same_config(demo, finished, tmp_path, capsys):
    before = _snapshot(finished)
    rc, err = train_main(_pretrain_args(demo, finished, "train.resume=auto", "optim.base_lr=3e-4",
                                         "mask.kwargs.alpha_T=0.75"), capsys)
    assert rc == 2 and "optim.base_lr: 0.00015 -> 0.0003" in err and "mask.kwargs.alpha_T" in err
    assert "train.resume_force=true" in err
    assert _snapshot(finished) == before
    # the keys that do not change the run (where it lives, how it is logged) may differ
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    old_id = read_log(copy)[0]["run_id"]
    rc, err = train_main(_pretrain_args(demo, copy, "train.resume=auto", "train.log_every=4"), capsys)
    assert rc == 0, err[-3000:]
    resumed = [r for r in read_log(copy) if r["type"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["run_id"] == old_id
    # train.resume_force continues a run of another config
    rc, err = train_main(_pretrain_args(demo, copy, "train.resume=auto", "optim.base_lr=3e-4",
                                         "train.resume_force=true"), capsys)
    assert rc == 0, err[-3000:]
    assert len([r for r in read_log(copy) if r["type"] == "resume"]) == 2


def test_overwrite_replaces_the_old_run(demo, finished, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    old_id = read_log(copy)[0]["run_id"]
    rc, err = train_main(_pretrain_args(demo, copy, "train.overwrite=true", "train.max_steps=2"), capsys)
    assert rc == 0, err[-3000:]
    records = read_log(copy)
    assert {r["run_id"] for r in records} != {old_id} and len({r["run_id"] for r in records}) == 1
    assert [r["step"] for r in records if r["type"] == "step"] == [1, 2]  # not interleaved with the old run
    final = torch.load(copy / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["global_step"] == 2  # the old run's export is gone: this run's (max_steps=2) replaced it
    assert [p.name for p in (copy / "checkpoints").iterdir() if p.name.startswith(("epoch", "latest-"))] == [
        "latest-00000002"]


@pytest.mark.parametrize("override,key,words", [
    ("data.num_frames=5", "data.num_frames", "not a multiple of the tubelet size 2"),
    ("data.input_size=36", "data.input_size", "not a multiple of the patch size 8"),
    ("data.input_size=48", "data.input_size", "data.allow_resolution_change=true"),
])
def test_data_geometry_is_checked_against_the_model_before_any_work(demo, tmp_path, capsys, override, key, words):
    out = tmp_path / "run"
    rc, err = train_main(_pretrain_args(demo, out, override, "data.short_side_size=48"), capsys)
    assert rc == 2 and f"config error: {key}" in err and words in err, err[-2000:]
    assert not out.exists()


def test_allow_resolution_change_runs_the_model_at_another_size(demo, tmp_path):
    from videohpm.config import check_data_against_model

    cfg = load_config(str(PRETRAIN_CFG), ["data.input_size=48", "data.allow_resolution_change=true"])
    check_data_against_model(cfg, build_model(cfg))  # no error: asked for


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["malformed", "label_out_of_range", "empty", "labels_beyond_the_head"])
def test_list_and_label_errors_are_config_errors_before_any_folder(demo, tmp_path, capsys, case):
    train = Path(demo["train"]).read_text().splitlines()
    extra = []
    if case == "malformed":
        lst = _write(tmp_path / "bad.csv", "\n".join(train[:3] + ["video_with_no_label.webm"]) + "\n")
    elif case == "label_out_of_range":
        lst = _write(tmp_path / "bad.csv", "\n".join(train[:3] + [train[0].split(" ")[0] + " 8"]) + "\n")
    elif case == "empty":
        lst = _write(tmp_path / "bad.csv", "\n")
    else:  # data.num_classes=10 with the config's 8-class head
        lst, extra = Path(demo["train"]), ["data.num_classes=10"]
    out = tmp_path / "run"
    rc, err = train_main(["--config", FINETUNE_CFG, f"data.train={lst}", f"data.data_root={demo['root']}",
                           f"train.output_dir={out}", *extra], capsys)
    assert rc == 2 and "\nconfig error: data." in "\n" + err, err[-2000:]
    assert {"malformed": "bad.csv:4", "label_out_of_range": "outside [0, 8)", "empty": "empty",
            "labels_beyond_the_head": "data.num_classes: 10, but the model has 8 outputs"}[case] in err
    assert "Traceback" not in err and not out.exists()


def _layer_scale_checkpoint(path: Path) -> Path:
    """The fine-tuning config's classifier with layer scale (`gamma_1/2`), in VideoMAE V1 names."""
    cfg = load_config(str(FINETUNE_CFG), ["model.kwargs.init_values=0.1"])
    torch.save({"model": export_state_dict(build_model(cfg), "videomae")}, path)
    return path


def test_weights_that_do_not_fit_stop_the_run_unless_told(demo, tmp_path, capsys, caplog):
    ckpt = _layer_scale_checkpoint(tmp_path / "layer_scale.pth")
    base = ["--config", FINETUNE_CFG, *data_overrides(demo), f"model.pretrained={ckpt}"]
    rc, err = train_main(base + [f"train.output_dir={tmp_path / 'a'}"], capsys)
    assert rc == 2 and "model.pretrained" in err and "blocks.0.gamma_1" in err
    assert "model.pretrained_strict=false" in err and not (tmp_path / "a").exists()
    # another width: not one tensor fits — an error even when not strict
    wide = load_config(str(PRETRAIN_CFG), ["model.kwargs.embed_dim=48"])
    torch.save({"model": build_model(wide).state_dict()}, tmp_path / "wide.pth")
    rc, err = train_main(["--config", FINETUNE_CFG, *data_overrides(demo), f"model.pretrained={tmp_path / 'wide.pth'}",
                           "model.pretrained_strict=false", f"train.output_dir={tmp_path / 'b'}"], capsys)
    assert rc == 2 and "not one tensor" in err and not (tmp_path / "b").exists()
    # model.pretrained_strict=false: goes on, with a WARNING that lists the keys
    with caplog.at_level(logging.WARNING):
        tr = Trainer(load_config(str(FINETUNE_CFG), [*data_overrides(demo), f"model.pretrained={ckpt}",
                                                     "model.pretrained_strict=false",
                                                     f"train.output_dir={tmp_path / 'c'}"]))
        tr.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("pretrained_strict=false" in m and "blocks.1.gamma_2" in m for m in warned), warned
    # ... and a model with layer scale loads the same checkpoint exactly
    tr = Trainer(load_config(str(FINETUNE_CFG), [*data_overrides(demo), f"model.pretrained={ckpt}",
                                                 "model.kwargs.init_values=1e-5", f"train.output_dir={tmp_path / 'd'}"]))
    tr.close()
    report = json.loads((tmp_path / "d" / "pretrained_report.json").read_text())
    assert report["unexpected"] == report["mismatched"] == report["missing"] == [] and report["strict"] is True
    assert report["loaded"] == len(tr.model.state_dict())  # a fine-tuned checkpoint: every tensor, head included


def test_a_run_that_skipped_too_many_steps_fails(demo, tmp_path):
    tr = Trainer(load_config(str(PRETRAIN_CFG), [*data_overrides(demo), f"train.output_dir={tmp_path}",
                                                 "train.epochs=1", "optim.warmup_epochs=0"]))
    forward = tr.recipe.forward
    calls = {"n": 0}

    def flaky(batch, progress=0.0):
        calls["n"] += 1
        out = forward(batch, progress)
        if calls["n"] in (2, 5):  # 2 of 8 micro-steps, never 2 in a row (train.max_nonfinite=10)
            out["loss"] = out["loss"] * float("nan")
        return out

    tr.recipe.forward = flaky
    try:
        with pytest.raises(NonFiniteLossError, match=r"2 of 8 micro-steps \(25.0 %\).*max_nonfinite_fraction=0.1"):
            tr.fit()
    finally:
        tr.close()
    final = read_log(tmp_path)[-1]
    assert final["type"] == "final" and final["status"].startswith("failed") and final["skipped_nonfinite"] == 2
    assert final["nonfinite_fraction"] == 0.25
    assert not (tmp_path / "model_final.pth").exists() and (tmp_path / "checkpoints" / "epoch-0000").exists()


def test_train_py_exits_non_zero_when_the_run_fails(monkeypatch, capsys):
    import videohpm.tasks.train as engine  # tools/train.py runs its train (the engine's, with the eval hooks)

    def failing(cfg):
        raise NonFiniteLossError("6 of 8 micro-steps (75.0 %) were skipped")

    monkeypatch.setattr(engine, "train", failing)
    rc, err = train_main(["--config", PRETRAIN_CFG], capsys)
    assert rc == 1 and "6 of 8 micro-steps" in err
