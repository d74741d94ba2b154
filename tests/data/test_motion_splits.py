"""The data-efficiency benchmark's generated set (videohpm.data.demo.make_motion_splits)."""
import json

import numpy as np
import pytest

import videohpm.data  # noqa: F401  (PyAV before decord)
from videohpm.data.demo import CLASSES, DemoAssets, make_motion_splits, render_video, sample_state
from videohpm.data.lists import read_list
from videohpm.data.video import VideoReader


def test_disjoint_balanced_splits_real_files_and_reuse(tmp_path):
    sizes = {"pool": 2, "train": 1, "test": 1}
    info = make_motion_splits(tmp_path / "d", sizes, seed=3, num_frames=8, size=32)
    assert info.counts == {"pool": 16, "train": 8, "test": 8}
    names = {}
    for split, path in info.lists.items():
        lst = read_list(path, data_root=info.data_root)
        names[split] = set(lst.paths)
        assert sorted(np.bincount(np.asarray(lst.labels), minlength=8).tolist()) == [sizes[split]] * 8
    assert not (names["pool"] & names["train"]) and not (names["train"] & names["test"])
    with VideoReader(sorted(names["test"])[0]) as vr:  # a real VP9 file
        assert vr.num_frames == 8 and tuple(vr.get_batch([0]).shape) == (1, 32, 32, 3)
    first = {p: (tmp_path / "d" / "videos" / p).stat().st_mtime_ns for p in ("pool_000000.webm", "test_000000.webm")}
    again = make_motion_splits(tmp_path / "d", sizes, seed=3, num_frames=8, size=32)  # same settings: kept
    assert again.lists == info.lists
    assert all((tmp_path / "d" / "videos" / p).stat().st_mtime_ns == t for p, t in first.items())
    meta = json.loads((tmp_path / "d" / "splits.json").read_text())
    assert meta["settings"]["seed"] == 3 and meta["per_class"] == sizes


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        make_motion_splits(tmp_path, {"holdout": 2})
    with pytest.raises(ValueError, match="at least 1"):
        make_motion_splits(tmp_path, {"pool": 0})
    assert not any(tmp_path.iterdir())  # nothing written


def test_motion_scale_multiplies_the_motion():
    assets = DemoAssets(32)
    state = sample_state(np.random.default_rng(0), assets)
    cls = CLASSES[2][0]  # moving right
    a = render_video(state, cls, assets, num_frames=8)
    b = render_video(state, cls, assets, num_frames=8, motion_scale=2.0)
    np.testing.assert_array_equal(a[0], b[0])  # the first frame does not depend on the motion
    assert not np.array_equal(a[-1], b[-1])
    # frame 7/7 at scale 1 has moved 0.375 canvas, at scale 2 0.75 canvas: the digit's column of
    # mass moves by twice as much (mod the torus); compare the horizontal shift of frame 1
    def shift(v, t):
        d = np.abs(v[t].astype(float) - v[0].astype(float)).sum(axis=(0, 2))
        return d
    assert shift(b, 1).sum() > shift(a, 1).sum()
    with pytest.raises(ValueError, match="motion_scale"):
        render_video(state, cls, assets, num_frames=8, motion_scale=0.0)
