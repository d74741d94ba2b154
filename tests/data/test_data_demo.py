"""Demo data: real files, determinism, and classes that only motion can tell apart."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from videohpm.data.demo import _TRANSLATE, CLASSES, DemoAssets, make_demo_data, render_video, sample_state
from videohpm.data.lists import read_list
from videohpm.data.video import VideoReader

from .conftest import load_tool

NAMES = [c for c, _ in CLASSES]


@pytest.fixture(scope="module")
def assets():
    return DemoAssets(64)


def test_first_frame_is_identical_for_every_class(assets):
    rng = np.random.default_rng(0)
    for _ in range(5):
        state = sample_state(rng, assets)
        clips = {c: render_video(state, c, assets, num_frames=16) for c in NAMES}
        first = clips[NAMES[0]][0]
        for c in NAMES:
            assert clips[c].shape == (16, 64, 64, 3) and clips[c].dtype == np.uint8
            assert np.array_equal(clips[c][0], first)  # one frame cannot tell the classes apart
        # ...but the motion can: the last frames of all 8 classes are pairwise different
        last = [clips[c][-1].astype(int) for c in NAMES]
        for i in range(8):
            for j in range(i + 1, 8):
                assert np.abs(last[i] - last[j]).mean() > 0.5, (NAMES[i], NAMES[j])


def test_opposite_motions_are_time_reversals(assets):
    """Moving left played backwards is moving right from the end state: same frames, other order."""
    state = sample_state(np.random.default_rng(3), assets)
    left = render_video(state, "moving something left", assets, 17)
    end = type(state)(**{**state.__dict__, "x": state.x - _TRANSLATE * 64})
    right = render_video(end, "moving something right", assets, 17)
    assert np.array_equal(left[::-1], right)


def test_translation_frames_have_the_same_distribution_for_every_class(assets):
    """On the torus, a frame at any time is a uniformly placed digit: mean images match."""
    means = {}
    for c in ("moving something left", "moving something right", "moving something up"):
        rng = np.random.default_rng(11)
        means[c] = np.mean([render_video(sample_state(rng, assets), c, assets, 9)[8] for _ in range(150)], axis=0)
    a, b, c = means.values()
    assert np.abs(a - b).mean() < 3.0 and np.abs(a - c).mean() < 3.0


def _tree_hash(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "demo.json"}


def test_demo_set_is_deterministic_real_and_small(demo, tmp_path):
    root = Path(demo.root)
    again = make_demo_data(tmp_path / "again", seed=0, tiny=True)
    assert _tree_hash(root) == _tree_hash(Path(again.root))  # byte-identical files and lists
    other = make_demo_data(tmp_path / "other", seed=1, tiny=True, formats=("k400",), images=False)
    a = sorted(Path(demo.video_dirs["k400"]).glob("*.mp4"))[0].read_bytes()
    b = sorted(Path(other.video_dirs["k400"]).glob("*.mp4"))[0].read_bytes()
    assert a != b
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 2_000_000
    meta = json.loads((root / "demo.json").read_text())
    assert meta["classes"] == NAMES and meta["seed"] == 0


@pytest.mark.parametrize("fmt, ext", [("ssv2", ".webm"), ("k400", ".mp4")])
def test_demo_lists_and_videos(demo, assets, fmt, ext):
    for split in ("train", "val", "test"):
        vl = read_list(demo.lists[fmt][split], demo.video_dirs[fmt], num_classes=8)
        assert sorted(vl.labels.tolist()) == sorted(list(range(8)))  # balanced: 1 per class (tiny)
        assert all(n.endswith(ext) for n in vl.names)
    vl = read_list(demo.lists[fmt]["train"], demo.video_dirs[fmt])
    for i in (0, 5):
        with VideoReader(vl.paths[i], fallback=None) as vr:
            assert vr.num_frames == 32
            frames = vr.get_batch(range(32))
        # the file holds the rendered clip: state from (seed, split, i), class = i % 8
        ref = render_video(sample_state(np.random.default_rng([0, 0, i]), assets), NAMES[vl.labels[i]], assets, 32)
        assert frames.shape == ref.shape
        assert np.abs(frames.astype(int) - ref.astype(int)).mean() < 8  # lossy codec
    if fmt == "k400":
        assert vl.names[0] == "demo100000_000000_000002.mp4"
    # test is a held-out split of fresh draws (split id 3), not a copy of val
    val, test = (read_list(demo.lists[fmt][s], demo.video_dirs[fmt]) for s in ("val", "test"))
    assert not set(val.names) & set(test.names)
    assert test.labels.tolist() == list(range(8)) and all(Path(p).is_file() for p in test.paths)
    with VideoReader(test.paths[3], fallback=None) as vr:
        frames = vr.get_batch(range(32))
    ref = render_video(sample_state(np.random.default_rng([0, 3, 3]), assets), NAMES[3], assets, 32)
    assert np.abs(frames.astype(int) - ref.astype(int)).mean() < 8


def test_demo_test_split_falls_back_to_val(tmp_path):
    d = make_demo_data(tmp_path / "d", seed=0, train_per_class=1, val_per_class=1, test_per_class=0,
                       formats=("k400",), images=False)
    assert Path(d.lists["k400"]["test"]).read_text() == Path(d.lists["k400"]["val"]).read_text()


def test_demo_images(demo):
    for split in ("train", "val"):
        dirs = sorted(p.name for p in Path(demo.image_dirs[split]).iterdir())
        assert dirs == [str(d) for d in range(10)]
    assert len(list(Path(demo.image_dirs["train"]).rglob("*.png"))) == 10 * 6  # 8 per class, 2 for val


def test_make_demo_data_tool(tmp_path, capsys):
    main = load_tool("make_demo_data").main
    assert main([str(tmp_path / "d"), "--tiny", "--formats", "k400", "--no-images"]) == 0
    out = capsys.readouterr().out
    assert "k400: data_root=" in out and (tmp_path / "d" / "k400" / "train.csv").is_file()
    assert not (tmp_path / "d" / "ssv2").exists()


@pytest.mark.slow
def test_shipped_demo_lists_are_what_the_generator_writes(tmp_path):
    info = make_demo_data(tmp_path / "full", seed=0)
    shipped = Path(__file__).resolve().parents[2] / "data_lists" / "demo"
    for fmt in ("ssv2", "k400"):
        for split in ("train", "val", "test"):
            assert Path(info.lists[fmt][split]).read_text() == (shipped / fmt / f"{split}.csv").read_text()
