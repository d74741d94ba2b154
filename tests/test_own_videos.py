"""README "Your own videos", run as written: the demo videos laid out as class folders (webm and
mp4 mixed, class names with spaces, nested folders, an upper-case extension, a stray text file)
→ tools/make_lists.py folder → tools/train.py fine-tuning from a tiny pre-trained checkpoint →
tools/test.py → tools/predict.py, with configs/test/finetune_generic_tiny.yaml in place of the
ViT-B config. The shell lines run in this process (each `python tools/X.py ARGS` as
`tools/X.py`'s `main(ARGS)`), to spare four torch imports."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import videohpm.data  # noqa: F401  (loads PyAV before decord, see videohpm/data/video.py)

REPO = Path(__file__).resolve().parents[1]
TINY = "configs/test/finetune_generic_tiny.yaml"
PRE = REPO / "configs" / "test" / "pretrain_hpm_tiny.yaml"
NUM_CLASSES = 4  # not the 8 of the demo set nor of finetune_tiny.yaml: the head follows the lists


def _tool(name: str):
    """Import tools/<name>.py under a private name (`test` would clash with the stdlib package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_own_videos_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_commands() -> list:
    """The commands of the first bash block of README's "Your own videos" section, continuation
    lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Your own videos\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


@pytest.fixture(scope="module")
def own_videos(tmp_path_factory):
    """4 classes × 3 videos (2 rendered for train, 1 for val in the demo set) as class folders."""
    from videohpm.data.demo import CLASSES, make_demo_data
    from videohpm.data.lists import read_list

    base = tmp_path_factory.mktemp("own")
    demo = make_demo_data(base / "demo", seed=0, train_per_class=2, val_per_class=1, num_frames=16, size=32,
                          formats=("ssv2", "k400"), images=False)
    root = base / "my_videos"
    webm_train = read_list(demo.lists["ssv2"]["train"], demo.video_dirs["ssv2"])
    mp4_train = read_list(demo.lists["k400"]["train"], demo.video_dirs["k400"])
    mp4_val = read_list(demo.lists["k400"]["val"], demo.video_dirs["k400"])
    names = []
    for c in range(NUM_CLASSES):
        cls = CLASSES[c][0]  # "moving something down", ...
        names.append(cls)
        first = [p for p, l in zip(webm_train.paths, webm_train.labels) if l == c][0]  # clip c
        second = [p for p, l in zip(mp4_train.paths, mp4_train.labels) if l == c][1]  # clip c + 8
        third = [p for p, l in zip(mp4_val.paths, mp4_val.labels) if l == c][0]
        (root / cls / "take 2").mkdir(parents=True)
        shutil.copyfile(first, root / cls / "clip a.webm")
        shutil.copyfile(second, root / cls / "take 2" / f"clip_b.{'MP4' if c == 0 else 'mp4'}")
        shutil.copyfile(third, root / cls / "clip_c.mp4")
    (root / names[0] / "notes.txt").write_text("not a video\n")
    new = base / "new_videos"
    new.mkdir()
    for p in list(mp4_val.paths[NUM_CLASSES:NUM_CLASSES + 2]):  # val clips of classes 4, 5 (unseen here)
        shutil.copyfile(p, new / os.path.basename(p))
    # a tiny "pre-trained" checkpoint in our layout (the pre-training model of the same encoder)
    from videohpm.config import load_config
    from videohpm.engine.build import build_model

    torch.manual_seed(0)
    model = build_model(load_config(str(PRE)))
    ckpt = base / "pretrained" / "model_final.pth"
    ckpt.parent.mkdir()
    torch.save({"model": model.state_dict()}, ckpt)
    return {"base": base, "root": root, "classes": sorted(names), "new": new, "ckpt": ckpt}


def test_readme_own_videos_section_runs(own_videos, tmp_path):
    lists, run = tmp_path / "lists", tmp_path / "run"
    subs = {
        "/data/my_videos": str(own_videos["root"]),
        "/data/new_videos": str(own_videos["new"]),
        "data_lists/my_videos": str(lists),
        "outputs/my_videos": str(run),
        "/path/to/pretrained.pth": str(own_videos["ckpt"]),
        "configs/finetune/generic_vit_b.yaml": TINY,
    }
    tiny = {  # test-size extras appended to the README's lines (views, one short epoch)
        "tools/train.py": "train.epochs=1 optim.warmup_epochs=0",
        "tools/test.py": "data.test_num_clips=2 data.test_num_crops=1",
        "tools/predict.py": "data.test_num_clips=2 data.test_num_crops=1",
    }
    cmds = readme_commands()
    assert [next((t for t in ("make_lists.py folder", "N=$(wc", *tiny) if t in c), c) for c in cmds] == [
        "make_lists.py folder", "N=$(wc", "tools/train.py", "tools/test.py", "tools/predict.py"]
    env = {}
    for c in cmds:  # the README's shell lines, run in this process (no 4 × torch imports)
        for a, b in subs.items():
            c = c.replace(a, b)
        c += "".join(f" {extra}" for tool, extra in tiny.items() if tool in c)
        m = re.fullmatch(r"(\w+)=\$\(wc -l < (\S+)\)", c)
        if m:  # N=$(wc -l < classes.txt)
            env[m.group(1)] = str(len(Path(m.group(2)).read_text().splitlines()))
            continue
        argv = [re.sub(r"\$(\w+)", lambda v: env[v.group(1)], a) for a in shlex.split(c)]
        assert argv[0] == "python" and argv[1].startswith("tools/"), c
        rc = _tool(Path(argv[1]).stem).main(argv[2:])
        assert rc == 0, f"{c} exited with {rc}"

    # 1. lists: 4 classes (with spaces), 2 train + 1 val video per class, the text file skipped
    assert (lists / "classes.txt").read_text().splitlines() == own_videos["classes"]
    from videohpm.data.lists import read_list

    train, val = read_list(lists / "train.csv"), read_list(lists / "val.csv")
    assert sorted(train.labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3] and sorted(val.labels.tolist()) == [0, 1, 2, 3]
    assert {os.path.splitext(n)[1] for n in train.names.tolist() + val.names.tolist()} == {".webm", ".mp4", ".MP4"}
    assert "notes.txt" in (lists / "skipped.txt").read_text()
    # 2. fine-tuning: the encoder came from the checkpoint, the head has 4 classes, 1 epoch of
    #    8 videos at batch 2 = 4 steps, validation on the 4 val videos
    report = json.loads((run / "pretrained_report.json").read_text())
    assert report["format"] == "videohpm" and report["unexpected"] == [] and report["mismatched"] == []
    assert sorted(report["missing"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    final = torch.load(run / "model_final.pth", map_location="cpu", weights_only=True)
    assert tuple(final["model"]["head.weight"].shape) == (NUM_CLASSES, 64)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in log if r.get("type") == "step"] == [1, 2, 3, 4]
    # 3. test: the 4 val videos, none broken, labels as listed
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["num_videos"] == 4 and metrics["num_broken"] == 0
    rows = list(csv.DictReader(open(run / "test" / "predictions.csv")))
    assert sorted(int(r["label"]) for r in rows) == [0, 1, 2, 3]
    assert all(0 <= int(r["pred"]) < NUM_CLASSES for r in rows)
    # 4. predict: both new videos answered, all 4 classes ranked by the names of classes.txt
    answers = json.loads((run / "predict" / "predictions.json").read_text())
    assert answers["num_videos"] == 2 and answers["num_broken"] == 0 and answers["class_names"] == own_videos["classes"]
    assert sorted(os.path.basename(a["video"]) for a in answers["predictions"]) == sorted(os.listdir(own_videos["new"]))
    for a in answers["predictions"]:
        assert a["status"] == "ok" and len(a["top"]) == NUM_CLASSES
        assert [t["name"] for t in a["top"]] == [own_videos["classes"][t["id"]] for t in a["top"]]
        assert sum(t["prob"] for t in a["top"]) == pytest.approx(1.0, abs=1e-4)
