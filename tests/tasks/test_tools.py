"""tools/test.py and tools/visualize.py end to end on the real demo videos, and the checkpoint
layouts they read."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.evaluation.helpers import load_tool
from videohpm.config import load_config
from videohpm.engine.build import build_model, build_recipe_from_config
from videohpm.engine.checkpoint import read_checkpoint
from videohpm.tasks.weights import load_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FT = os.path.join(ROOT, "configs/test/finetune_tiny.yaml")
PRE = os.path.join(ROOT, "configs/test/pretrain_hpm_tiny.yaml")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from videohpm.data import make_demo_data

    root = tmp_path_factory.mktemp("demo")
    d = make_demo_data(str(root), tiny=True, formats=("k400",), images=False)
    # one undecodable video appended to the test list: reported, not counted
    vids = d.video_dirs["k400"]
    with open(os.path.join(vids, "broken.mp4"), "wb") as f:
        f.write(b"not a video" * 10)
    test_list = os.path.join(str(root), "test_with_broken.csv")
    with open(d.lists["k400"]["test"]) as f:
        lines = f.read().splitlines()
    with open(test_list, "w") as f:
        f.write("\n".join(lines + ["broken.mp4 3"]) + "\n")
    return {"root": str(root), "videos": vids, "test": test_list, "n": len(lines)}


_tool = load_tool


def _save_final(cfg, path):
    model = build_model(cfg)
    torch.save({"model": model.state_dict(), "teacher": model.state_dict(), "config": OmegaConf.to_container(cfg),
                "global_step": 1}, path)
    return model


def test_tools_test_py_on_demo_videos(demo, tmp_path):
    cfg = load_config(FT)
    _save_final(cfg, tmp_path / "model_final.pth")
    out = tmp_path / "test"
    cmd = [sys.executable, os.path.join(ROOT, "tools/test.py"), "--config", FT, f"checkpoint={tmp_path}",
           "--output-dir", str(out), "--videomae-txt", f"data.test={demo['test']}", f"data.data_root={demo['videos']}",
           "data.dataset=k400", "data.test_num_clips=2", "data.test_num_crops=3", "train.batch_size=3"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.load(open(out / "metrics.json"))
    assert m["num_videos"] == demo["n"] and m["num_broken"] == 1 and m["num_views"] == 6
    assert m["broken_videos"][0]["video_id"].startswith("broken")
    assert m["cost"]["views"].endswith("×2×3") and m["cost"]["gflops_per_view"] > 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == demo["n"] + 1 and sum(r["ok"] == "1" for r in rows) == demo["n"]
    assert abs(100 * sum(r["pred"] == r["label"] for r in rows if r["ok"] == "1") / demo["n"] - m["top1"]) < 1e-6
    assert len(open(out / "videomae" / "0.txt").read().splitlines()) == 1 + demo["n"] * 6
    assert "×2×3" in open(out / "summary.md").read()


def test_tools_test_py_errors(capsys):
    tool = _tool("test")

    assert tool.main(["--config", FT, "checkpoint=/nonexistent/model_final.pth"]) == 2
    assert "checkpoint=/nonexistent/model_final.pth: no such file" in capsys.readouterr().err
    assert tool.main(["--config", FT]) == 2
    assert tool.main(["--config", FT, "checkpoint=/tmp", "train.epochz=3"]) == 2
    assert "train.epochz" in capsys.readouterr().err


def test_read_engine_checkpoint_folders(tmp_path):
    """DeepSpeed tag folders as the engine writes them: recipe keys + teacher in trainer_state."""
    cfg = load_config(FT)
    model = build_model(cfg)
    recipe = build_recipe_from_config(cfg, model, None)
    folder = tmp_path / "checkpoints" / "epoch-0001"
    folder.mkdir(parents=True)
    torch.save({"module": recipe.state_dict(), "global_steps": 3}, folder / "mp_rank_00_model_states.pt")
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"teacher": ema, "epoch": 2, "global_step": 3}, folder / "trainer_state.pt")
    (tmp_path / "checkpoints" / "latest").write_text("epoch-0001\n")
    w = read_checkpoint(str(tmp_path))  # run folder → checkpoints/latest → epoch-0001
    assert all(k.startswith("model.") for k in w.model) and w.meta["global_step"] == 3
    net = load_classifier(cfg, str(tmp_path))
    x = torch.randn(2, 3, 4, 32, 32)
    assert torch.allclose(net(x), model.eval()(x))
    net_ema = load_classifier(cfg, str(folder), ema=True)
    assert torch.allclose(net_ema.head.bias, model.head.bias + 1.0)
    # linear probing: the recipe's own keys (encoder, bn, head) from a linear-probing run
    lp = OmegaConf.merge(cfg, {"method": {"name": "linear_probe"}})
    lp.method.kwargs = {"num_classes": 8}
    import videohpm.methods.linear_probe  # noqa: F401

    probe = build_recipe_from_config(lp, build_model(lp), None)
    probe.bn.running_mean.fill_(0.5)
    torch.save({"module": probe.state_dict()}, folder / "mp_rank_00_model_states.pt")
    net = load_classifier(lp, str(folder))
    assert torch.allclose(net(x), probe.eval().logits(x))
    # a run folder with model_final.pth (the model only): the probe still reads the checkpoint
    other = build_model(cfg)
    torch.save({"model": other.state_dict(), "config": {}}, tmp_path / "model_final.pth")
    assert torch.allclose(load_classifier(lp, str(tmp_path))(x), probe.logits(x))
    assert torch.allclose(load_classifier(cfg, str(tmp_path))(x), other.eval()(x))  # fine-tuning: the final model
    with pytest.raises(ValueError, match="checkpoint="):  # model_final.pth lacks the probe's head
        load_classifier(lp, str(tmp_path / "model_final.pth"))


def test_tools_visualize_py(demo, tmp_path):
    tool = _tool("visualize")

    cfg = load_config(PRE)
    _save_final(cfg, tmp_path / "pre.pth")
    video = os.path.join(demo["videos"], sorted(v for v in os.listdir(demo["videos"]) if v.startswith("demo"))[0])
    out = tmp_path / "vis"
    assert tool.main(["--config", PRE, f"checkpoint={tmp_path / 'pre.pth'}", "--input", video, "--progress", "0.5",
                      "--loss-masks", "2", "--out", str(out)]) == 0
    stem = os.path.splitext(os.path.basename(video))[0]
    gif = Image.open(out / f"{stem}_p0.50.gif")
    assert gif.n_frames == 4 and gif.size == (5 * 160 + 4 * 2, 160)  # 4 frames; 5 panels of 32 px, ×5
    assert Image.open(out / f"{stem}_p0.50.png").size == (2 * 160, 5 * 160 + 40)  # 2 tubelet slices × 5 rows
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"type": "step", "step": 1, "loss": 1.0, "lr": 0.1, "alpha": 0.2}) + "\n")
    assert tool.main(["--log", str(log), "--out", str(tmp_path / "curves.png")]) == 0
    assert Image.open(tmp_path / "curves.png").size == (700, 3 * 220)


def test_tools_test_py_fails_when_no_video_could_be_evaluated(demo, tmp_path, capsys):
    cfg = load_config(FT)
    _save_final(cfg, tmp_path / "model_final.pth")
    only_broken = tmp_path / "broken_only.csv"
    only_broken.write_text("broken.mp4 3\n")
    out = tmp_path / "test"
    rc = _tool("test").main(["--config", FT, f"checkpoint={tmp_path}", "--output-dir", str(out), "--no-flops",
                             f"data.test={only_broken}", f"data.data_root={demo['videos']}", "data.dataset=k400",
                             "data.test_num_clips=1", "data.test_num_crops=1"])
    err = capsys.readouterr().err
    assert rc == 1 and "no video could be evaluated (1 broken, e.g. broken.mp4: " in err, err[-2000:]
    assert sorted(os.listdir(out)) == ["test.log"]  # no result file: the rerun into out is not blocked


def test_tools_test_py_refuses_labels_the_head_cannot_produce(demo, tmp_path, capsys):
    """A test-list label >= the classifier's outputs stops tools/test.py before any video is
    decoded (it would otherwise be counted as a wrong answer), naming the list and the key."""
    cfg = load_config(FT)  # an 8-class head
    _save_final(cfg, tmp_path / "model_final.pth")
    with open(demo["test"]) as f:
        first = f.read().splitlines()[0].rsplit(" ", 1)[0]
    bad = tmp_path / "nine.csv"
    bad.write_text(f"{first} 9\n")
    out = tmp_path / "test"
    rc = _tool("test").main(["--config", FT, f"checkpoint={tmp_path}", "--output-dir", str(out), "--no-flops",
                             f"data.test={bad}", f"data.data_root={demo['videos']}", "data.dataset=k400",
                             "data.num_classes=10", "data.test_num_clips=1", "data.test_num_crops=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "data.test: label 9" in err and "model.kwargs.num_classes=8" in err, err[-2000:]
    assert not (out / "metrics.json").exists() and not (out / "predictions.csv").exists()
