"""The bundled demo data set: small motion-centric labelled videos written as real files.

Each video shows one handwritten digit (scikit-learn's ``load_digits``, upscaled and tinted) on a
crop of a real photograph (``load_sample_images``) and the class is *how it moves*: moving
left / right / up / down, rotating clockwise / counter-clockwise, zooming in / out — like
Something-Something v2, a single frame cannot tell the classes apart:

* the initial state (digit, tint, background crop, position, angle, scale) of video ``i`` is
  drawn from an RNG seeded by ``(seed, split, i)`` alone — never by the class — so the first
  frame of a video is *pixel-identical* whatever its class (:func:`render_video`);
* positions live on a torus (the digit leaving one edge re-enters at the other) and angles
  cover the full circle, so for the six translation/rotation classes *every* frame has the same
  distribution across classes; only zoom changes the scale distribution over time.

Two encodings of the same clips: VP9 ``.webm`` in the SSv2 layout (ids, official
``something-something-v2-*.json`` annotations) and H.264 ``.mp4`` in the K400 layout
(``<youtube_id>_<start>_<end>.mp4``, official CSVs); the VideoMAE list files are then produced by
the real list builders (:mod:`videohpm.data.lists`). An ImageFolder of digit PNGs serves image
mode. Everything is deterministic from ``seed``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .schema import DataConfig
from .lists import build_k400_lists, build_ssv2_lists, k400_video_name, write_list

__all__ = ["CLASSES", "DemoState", "DemoAssets", "DemoData", "sample_state", "render_video", "make_demo_data",
           "MotionSplits", "make_motion_splits", "encode_video"]

# (class name = K400 label, SSv2 template). Sorted by name, so the K400 builder (sorted class
# names) and the SSv2 labels file (written in this order) give the same ids.
CLASSES: Tuple[Tuple[str, str], ...] = (
    ("moving something down", "Moving [something] down"),
    ("moving something left", "Moving [something] left"),
    ("moving something right", "Moving [something] right"),
    ("moving something up", "Moving [something] up"),
    ("rotating something clockwise", "Rotating [something] clockwise"),
    ("rotating something counterclockwise", "Rotating [something] counterclockwise"),
    ("zooming in on something", "Zooming in on [something]"),
    ("zooming out of something", "Zooming out of [something]"),
)

# Motion over the whole video per class: (dx, dy) in canvas sizes, rotation in degrees
# (positive = counter-clockwise, PIL's convention), log zoom factor.
_TRANSLATE = 0.375  # not 0.5: on the torus, +½ and -½ of the canvas land on the same place
_ROTATE = 150.0
_ZOOM = math.log(1.6)
_MOTIONS: Dict[str, Tuple[float, float, float, float]] = {
    "moving something down": (0.0, _TRANSLATE, 0.0, 0.0),
    "moving something left": (-_TRANSLATE, 0.0, 0.0, 0.0),
    "moving something right": (_TRANSLATE, 0.0, 0.0, 0.0),
    "moving something up": (0.0, -_TRANSLATE, 0.0, 0.0),
    "rotating something clockwise": (0.0, 0.0, -_ROTATE, 0.0),
    "rotating something counterclockwise": (0.0, 0.0, _ROTATE, 0.0),
    "zooming in on something": (0.0, 0.0, 0.0, _ZOOM),
    "zooming out of something": (0.0, 0.0, 0.0, -_ZOOM),
}
_SPLIT_IDS = {"train": 0, "val": 1, "pool": 2, "test": 3}


@dataclass
class DemoState:
    """Everything the first frame depends on (drawn independently of the class)."""

    digit: int  # index into load_digits
    color: Tuple[int, int, int]  # tint of the digit
    background: int  # index into load_sample_images
    bg_top: int
    bg_left: int
    x: float  # centre, in pixels (torus)
    y: float
    angle: float  # degrees
    scale: float  # relative to the base sprite size


class DemoAssets:
    """The real images the videos are made of, prepared once.

    Attributes:
        digits: ``[N, 8, 8]`` float in ``[0, 1]`` (scikit-learn ``load_digits``).
        digit_labels: ``[N]`` int.
        backgrounds: list of ``[H, W, 3]`` uint8 photographs scaled so the short side is
            ``2.5 · size`` and darkened (the digit must stay visible).
    """

    def __init__(self, size: int) -> None:
        from sklearn.datasets import load_digits, load_sample_images  # lazy: heavy, only the demo set needs it

        digits = load_digits()
        self.size = int(size)
        self.digits = digits.images.astype(np.float32) / 16.0
        self.digit_labels = digits.target.astype(np.int64)
        self.backgrounds: List[np.ndarray] = []
        for img in load_sample_images().images:
            h, w = img.shape[:2]
            f = 2.5 * size / min(h, w)
            pil = Image.fromarray(img).resize((max(size, round(w * f)), max(size, round(h * f))), Image.BILINEAR)
            self.backgrounds.append((np.asarray(pil, dtype=np.float32) * 0.55).astype(np.uint8))
        self._sprites: Dict[int, Image.Image] = {}

    def sprite(self, digit: int) -> Image.Image:
        """The digit as an 8-bit alpha image of side ``0.36 · size`` (cached)."""
        if digit not in self._sprites:
            base = max(4, round(0.36 * self.size))
            a = Image.fromarray((self.digits[digit] * 255).astype(np.uint8))
            self._sprites[digit] = a.resize((base, base), Image.BICUBIC)
        return self._sprites[digit]


def sample_state(rng: np.random.Generator, assets: DemoAssets) -> DemoState:
    """Draw the initial state of one video; the class is not an input on purpose."""
    size = assets.size
    b = int(rng.integers(len(assets.backgrounds)))
    bh, bw = assets.backgrounds[b].shape[:2]
    hue = rng.random()
    color = tuple(int(255 * (0.6 + 0.4 * (0.5 + 0.5 * math.cos(2 * math.pi * (hue + k / 3))))) for k in range(3))
    return DemoState(
        digit=int(rng.integers(len(assets.digits))),
        color=color,  # type: ignore[arg-type]
        background=b,
        bg_top=int(rng.integers(bh - size + 1)),
        bg_left=int(rng.integers(bw - size + 1)),
        x=float(rng.random() * size),
        y=float(rng.random() * size),
        angle=float(rng.random() * 360.0),
        scale=float(math.exp(rng.uniform(math.log(0.75), math.log(1.25)))),
    )


def _alpha_layer(sprite: Image.Image, size: int, scale: float, angle: float) -> np.ndarray:
    """The scaled, rotated sprite centred on a ``size × size`` float alpha layer."""
    side = max(2, round(sprite.size[0] * scale))
    img = sprite.resize((side, side), Image.BICUBIC).rotate(angle, resample=Image.BICUBIC, expand=True)
    a = np.asarray(img, dtype=np.float32) / 255.0
    layer = np.zeros((size, size), np.float32)
    h, w = a.shape
    # place the sprite centre on the canvas centre, cropping what does not fit
    top, left = size // 2 - h // 2, size // 2 - w // 2
    st, sl = max(0, -top), max(0, -left)
    dt, dl = max(0, top), max(0, left)
    hh, ww = min(h - st, size - dt), min(w - sl, size - dl)
    layer[dt : dt + hh, dl : dl + ww] = a[st : st + hh, sl : sl + ww]
    return layer


def render_video(state: DemoState, cls: str, assets: DemoAssets, num_frames: int = 32,
                 motion_scale: float = 1.0) -> np.ndarray:
    """Render one clip.

    Args:
        state: initial state (:func:`sample_state`).
        cls: class name (a key of the motion table, see :data:`CLASSES`).
        assets: images.
        num_frames: frames ``T``.
        motion_scale: multiplies the translation and rotation over the clip (zoom: at most × 2,
            so the digit stays on the canvas). Above 1 the digit crosses the torus more than
            once; keep the motion between two *sampled* frames below half the canvas (at 32
            frames, stride 4: ``motion_scale < 9``) or left and right alias.

    Returns:
        ``[T, size, size, 3]`` uint8; frame 0 depends on ``state`` only.
    """
    if cls not in _MOTIONS:
        raise ValueError(f"unknown demo class {cls!r}; expected one of {sorted(_MOTIONS)}")
    dx, dy, dangle, dzoom = _MOTIONS[cls]
    if motion_scale <= 0:
        raise ValueError(f"motion_scale must be positive, got {motion_scale}")
    dx, dy, dangle = dx * motion_scale, dy * motion_scale, dangle * motion_scale
    dzoom *= min(motion_scale, 2.0)
    size = assets.size
    bg = assets.backgrounds[state.background][state.bg_top : state.bg_top + size, state.bg_left : state.bg_left + size]
    bg = bg.astype(np.float32)
    color = np.asarray(state.color, np.float32)
    sprite = assets.sprite(state.digit)
    out = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        f = t / max(num_frames - 1, 1)
        layer = _alpha_layer(sprite, size, state.scale * math.exp(dzoom * f), state.angle + dangle * f)
        cy = int(round(state.y + dy * size * f)) - size // 2
        cx = int(round(state.x + dx * size * f)) - size // 2
        a = np.roll(layer, (cy, cx), axis=(0, 1))[..., None]  # torus: wraps around the edges
        out[t] = (bg * (1.0 - a) + color * a + 0.5).astype(np.uint8)
    return out


def _vp9_encoder_works() -> bool:
    """Whether PyAV can open its VP9 encoder in this process (see the note in video.py: a decord
    imported before PyAV breaks it)."""
    import av  # lazy: PyAV must load before decord (see video.py); only writing the set needs it

    try:
        with av.open(io.BytesIO(), "w", format="webm") as c:
            s = c.add_stream("libvpx-vp9", rate=16)
            s.width = s.height = 16
            s.pix_fmt = "yuv420p"
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
    except av.FFmpegError:
        return False
    return True


def encode_video(frames: np.ndarray, path: Path, codec: str, fps: int) -> None:
    """Write ``[T, H, W, 3]`` uint8 frames with PyAV (single-threaded, bit-exact → deterministic bytes)."""
    import av  # lazy: as in _vp9_encoder_works

    # bitexact: no random segment UID / muxer version string, so the bytes are a function of the seed
    container_opts = {"fflags": "+bitexact"}
    if codec == "libx264":
        container_opts["movflags"] = "+faststart"  # index first: a truncated copy is detectable
    with av.open(str(path), "w", options=container_opts) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        if codec == "libvpx-vp9":
            s.options = {"deadline": "realtime", "cpu-used": "8", "crf": "34", "b:v": "0", "threads": "1", "g": "16"}
        else:
            # superfast: the slower presets' (mb-tree / psy) decisions were seen to vary between
            # runs on identical input in this x264 build, which would break determinism
            s.options = {"preset": "superfast", "crf": "23", "threads": "1", "g": "16"}
        for fr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@dataclass
class DemoData:
    """Where :func:`make_demo_data` wrote things.

    Attributes:
        root: output folder.
        classes: class names in label-id order.
        lists: ``{"ssv2": {"train": path, "val": ..., "test": ...}, "k400": {...}}``.
        video_dirs: ``{"ssv2": folder of .webm, "k400": folder of .mp4}`` (the ``data_root``).
        image_dirs: ``{"train": folder, "val": folder}`` (ImageFolder roots) when written.
        num_frames, size, fps: video geometry.
    """

    root: str
    classes: List[str]
    lists: Dict[str, Dict[str, str]] = field(default_factory=dict)
    video_dirs: Dict[str, str] = field(default_factory=dict)
    image_dirs: Dict[str, str] = field(default_factory=dict)
    num_frames: int = 32
    size: int = 64
    fps: int = 16

    def data_config(self, fmt: str = "ssv2", **overrides):
        """A :class:`~videohpm.data.schema.DataConfig` for one of the sets.

        ``fmt``: ``"ssv2"`` (webm, SSv2 sampling), ``"k400"`` (mp4, K400 sampling) or
        ``"image"`` (the digit ImageFolder). ``input_size`` defaults to the frame size and the
        pre-training stride to 2 (16 × 2 = the 32 demo frames) for both video sets.
        """
        if fmt == "image":
            kw = dict(kind="image", dataset="imagefolder", train=self.image_dirs["train"], val=self.image_dirs["val"],
                      num_classes=10, input_size=32)
        elif fmt in ("ssv2", "k400"):
            kw = dict(dataset=fmt, train=self.lists[fmt]["train"], val=self.lists[fmt]["val"],
                      test=self.lists[fmt]["test"], data_root=self.video_dirs[fmt], num_classes=len(self.classes),
                      input_size=self.size, sampling_rate=2)
        else:
            raise ValueError(f"unknown demo set {fmt!r}; expected 'ssv2', 'k400' or 'image'")
        kw.update(overrides)
        return DataConfig(**kw)


def _write_images(
    assets: DemoAssets, out: Path, per_class: Optional[int], val_fraction: float, seed: int
) -> Dict[str, str]:
    """Digit PNGs (32×32 RGB) in ``out/{train,val}/<digit>/``; returns the two roots."""
    rng = np.random.default_rng([seed, 7])
    dirs = {}
    for digit in range(10):
        idx = np.flatnonzero(assets.digit_labels == digit)
        idx = idx[rng.permutation(len(idx))]
        if per_class is not None:
            idx = idx[:per_class]
        n_val = max(1, int(round(len(idx) * val_fraction)))
        for split, part in (("val", idx[:n_val]), ("train", idx[n_val:])):
            d = out / split / str(digit)
            d.mkdir(parents=True, exist_ok=True)
            dirs[split] = str(out / split)
            for k in part:
                img = Image.fromarray((assets.digits[k] * 255).astype(np.uint8))
                img = img.resize((32, 32), Image.BICUBIC)
                img.convert("RGB").save(d / f"{int(k):04d}.png")
    return dirs


def _check_even(size: int) -> None:
    if size % 2:
        raise ValueError(f"size must be even (yuv420p), got {size}")


def make_demo_data(
    out_dir: str | os.PathLike,
    seed: int = 0,
    train_per_class: int = 24,
    val_per_class: int = 8,
    test_per_class: int = 8,
    num_frames: int = 32,
    size: int = 64,
    fps: int = 16,
    formats: Sequence[str] = ("ssv2", "k400"),
    images: bool = True,
    images_per_class: Optional[int] = None,
    tiny: bool = False,
) -> DemoData:
    """Write the demo set under ``out_dir`` and return where everything is.

    Layout::

        out_dir/ssv2/videos/<id>.webm            VP9, SSv2 naming
        out_dir/ssv2/annotations/something-something-v2-{labels,train,validation}.json
        out_dir/ssv2/{train,val,test}.csv        VideoMAE lists; test: held-out fresh draws
        out_dir/k400/videos/<ytid>_000000_000002.mp4   H.264, K400 naming
        out_dir/k400/annotations/{train,validate}.csv  official CSV format
        out_dir/k400/{train,val,test}.csv, classes.txt
        out_dir/images/{train,val}/<digit>/*.png  ImageFolder (image mode)
        out_dir/demo.json                         what was written

    Args:
        out_dir, seed: output folder (created); everything is a function of the seed.
        train_per_class, val_per_class, test_per_class: videos per class and split (8 classes);
            test is held out (``0``: ``test.csv`` = ``val.csv``, VideoMAE's SSv2 convention).
        num_frames, size, fps: clip geometry (default 32 frames of 64×64 at 16 fps).
        formats, images: which encodings to write; whether to write the digit ImageFolder too.
        images_per_class: cap on digit images per class (``None``: all ~180).
        tiny: test-sized variant (1 train + 1 val + 1 test video per class, 8 images per class).
    """
    if tiny:
        train_per_class, val_per_class, test_per_class, images_per_class = 1, 1, 1, 8
    per_class = dict(train_per_class=train_per_class, val_per_class=val_per_class, test_per_class=test_per_class)
    if "ssv2" in formats and not _vp9_encoder_works():
        # decord got loaded before PyAV in this process: write the set from a fresh one.
        kwargs = dict(seed=seed, **per_class, num_frames=num_frames, size=size, fps=fps, formats=tuple(formats),
                      images=images, images_per_class=images_per_class)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            return ex.submit(make_demo_data, os.fspath(out_dir), **kwargs).result()
    for fmt in formats:
        if fmt not in ("ssv2", "k400"):
            raise ValueError(f"formats: unknown {fmt!r}; expected 'ssv2' and/or 'k400'")
    _check_even(size)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    assets = DemoAssets(size)
    info = DemoData(root=str(root), classes=[c for c, _ in CLASSES], num_frames=num_frames, size=size, fps=fps)
    _write_encodings(info, assets, formats, {k.split("_")[0]: n for k, n in per_class.items()}, seed)
    if images:
        info.image_dirs = _write_images(assets, root / "images", images_per_class, 0.2, seed)
    meta = asdict(info)
    meta.update(seed=seed, **per_class)
    (root / "demo.json").write_text(json.dumps(meta, indent=1))
    return info


def _write_encodings(info: DemoData, assets: DemoAssets, formats: Sequence[str], per_class: Dict[str, int],
                     seed: int) -> None:
    """Every clip in each of ``formats`` under ``info.root/<format>/videos`` and its lists, recorded
    in ``info.lists`` / ``info.video_dirs``."""
    root = Path(info.root)
    vdirs = {fmt: root / fmt / "videos" for fmt in formats}
    for d in vdirs.values():
        d.mkdir(parents=True, exist_ok=True)
    ssv2_items, k400_rows, entries = _write_videos(assets, vdirs, per_class, seed, info.num_frames, info.fps)
    if "ssv2" in formats:
        info.lists["ssv2"] = _write_ssv2_lists(root / "ssv2", vdirs["ssv2"], ssv2_items)
        info.video_dirs["ssv2"] = str(vdirs["ssv2"])
    if "k400" in formats:
        info.lists["k400"] = _write_k400_lists(root / "k400", vdirs["k400"], k400_rows, info.classes)
        info.video_dirs["k400"] = str(vdirs["k400"])
    for fmt in formats:
        if entries[fmt]["test"]:  # the held-out split replaces the lists' copy of val
            write_list(info.lists[fmt]["test"], entries[fmt]["test"])


def _write_videos(
    assets: DemoAssets, vdirs: Dict[str, Path], per_class: Dict[str, int], seed: int, num_frames: int, fps: int
) -> Tuple[Dict[str, list], Dict[str, list], Dict[str, Dict[str, list]]]:
    """Render and encode every clip (one encoding per folder of ``vdirs``, keyed by format);
    returns the SSv2 annotation items and the K400 CSV rows of train and val (the splits the
    official annotation files cover), and per format the held-out test split's ``(file name,
    label id)`` list entries."""
    seconds = max(1, round(num_frames / fps))
    ssv2_items: Dict[str, list] = {"train": [], "val": []}
    k400_rows: Dict[str, list] = {"train": [], "val": []}
    entries: Dict[str, Dict[str, list]] = {fmt: {"test": []} for fmt in vdirs}
    for split, n in per_class.items():
        for i in range(n * len(CLASSES)):
            cls_name, template = CLASSES[i % len(CLASSES)]  # balanced classes
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])  # independent of the class
            frames = render_video(sample_state(rng, assets), cls_name, assets, num_frames)
            vid = f"{_SPLIT_IDS[split] + 1}{i:05d}"
            if "ssv2" in vdirs:
                encode_video(frames, vdirs["ssv2"] / f"{vid}.webm", "libvpx-vp9", fps)
                if split == "test":
                    entries["ssv2"][split].append((f"{vid}.webm", i % len(CLASSES)))
                else:
                    ssv2_items[split].append({"id": vid, "label": template.replace("[something]", "a digit"),
                                              "template": template, "placeholders": ["a digit"]})
            if "k400" in vdirs:
                ytid = f"demo{vid}"
                encode_video(frames, vdirs["k400"] / k400_video_name(ytid, 0, seconds), "libx264", fps)
                if split == "test":
                    entries["k400"][split].append((k400_video_name(ytid, 0, seconds), i % len(CLASSES)))
                else:
                    k400_rows[split].append((cls_name, ytid, 0, seconds, split))
    return ssv2_items, k400_rows, entries


def _write_ssv2_lists(out: Path, video_dir: Path, items: Dict[str, list]) -> Dict[str, str]:
    """The official SSv2 annotations under ``out/annotations`` and, from them, the VideoMAE lists."""
    ann = out / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    labels = {t.replace("[", "").replace("]", ""): str(k) for k, (_, t) in enumerate(CLASSES)}
    (ann / "something-something-v2-labels.json").write_text(json.dumps(labels, indent=1))
    (ann / "something-something-v2-train.json").write_text(json.dumps(items["train"], indent=1))
    (ann / "something-something-v2-validation.json").write_text(json.dumps(items["val"], indent=1))
    return dict(build_ssv2_lists(ann, out, video_dir=video_dir).lists)


def _write_k400_lists(out: Path, video_dir: Path, rows: Dict[str, list], names: List[str]) -> Dict[str, str]:
    """The official K400 CSVs under ``out/annotations`` and, from them, the VideoMAE lists (whose
    class ids must be the SSv2 set's: ``names``)."""
    ann = out / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for split, fname in (("train", "train.csv"), ("val", "validate.csv")):
        with open(ann / fname, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            w.writerows([(c, y, s, e, "validate" if sp == "val" else sp) for c, y, s, e, sp in rows[split]])
    rep = build_k400_lists(ann, out, video_dir=video_dir)
    if rep.classes != names:  # both sets must share the label ids
        raise RuntimeError(f"K400 class order {rep.classes} differs from {names}")
    return dict(rep.lists)


@dataclass
class MotionSplits:
    """Where :func:`make_motion_splits` wrote things.

    Attributes:
        root: output folder.
        classes: class names in label-id order.
        lists: ``{split: path}`` of VideoMAE list files (``<id>.webm <label>``), one per split.
        counts: ``{split: videos}``.
        data_root: the folder of the ``.webm`` files (the lists' paths are relative to it).
        num_frames, size, fps: video geometry.
    """

    root: str
    classes: List[str]
    lists: Dict[str, str]
    counts: Dict[str, int]
    data_root: str
    num_frames: int = 32
    size: int = 64
    fps: int = 16


def _write_motion_video(vdir: Path, split: str, i: int, assets: DemoAssets, seed: int, num_frames: int, fps: int,
                        motion_scale: float) -> Tuple[str, int]:
    """Render and encode video ``i`` of ``split`` (VP9); its list entry ``(name, label)``."""
    label = i % len(CLASSES)  # balanced; the state below does not depend on it
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
    frames = render_video(sample_state(rng, assets), CLASSES[label][0], assets, num_frames, motion_scale)
    name = f"{split}_{i:06d}.webm"
    encode_video(frames, vdir / name, "libvpx-vp9", fps)
    return name, label


def make_motion_splits(
    out_dir: str | os.PathLike,
    per_class: Dict[str, int],
    seed: int = 0,
    num_frames: int = 32,
    size: int = 64,
    fps: int = 16,
    motion_scale: float = 1.0,
) -> MotionSplits:
    """Write disjoint splits of the motion set (VP9 ``.webm``) with one VideoMAE list per split.

    The data-efficiency benchmark (``tools/ssl_benchmark.py``) uses a large unlabelled ``pool``
    for pre-training and small labelled ``train`` / ``val`` / ``test`` splits; every video is a
    fresh draw (RNG seeded by ``(seed, split, index)``, never by the class: the first frame
    does not tell the class), so the splits share no clip. Labels are written for every split
    (the pool's are never read by pre-training). Deterministic from ``seed``; a split whose list
    already exists with the same settings (``splits.json``) is kept, so re-running is cheap.

    Args:
        out_dir: output folder (``videos/``, ``<split>.csv``, ``splits.json``).
        per_class: videos per class of each split, e.g. ``{"pool": 400, "train": 25, "val": 16,
            "test": 64}``; split names are keys of the split-id table (pool, train, val, test).
        seed, num_frames, size, fps: as :func:`make_demo_data`.
        motion_scale: see :func:`render_video` (1 = the demo's motion).
    """
    unknown = sorted(set(per_class) - set(_SPLIT_IDS))
    if unknown:
        raise ValueError(f"per_class: unknown split(s) {unknown}; expected some of {sorted(_SPLIT_IDS)}")
    bad = {k: v for k, v in per_class.items() if int(v) < 1}
    if bad:
        raise ValueError(f"per_class: every split needs at least 1 video per class, got {bad}")
    _check_even(size)
    if not _vp9_encoder_works():
        raise RuntimeError("PyAV cannot open its VP9 encoder in this process (decord was imported before "
                           "PyAV; import videohpm.data first, see videohpm/data/video.py)")
    root = Path(out_dir)
    vdir = root / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    settings = dict(seed=seed, num_frames=num_frames, size=size, fps=fps, motion_scale=float(motion_scale))
    meta_path = root / "splits.json"
    done = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if done.get("settings") != settings:
        done = {"settings": settings, "per_class": {}}
    assets = DemoAssets(size)
    names = [c for c, _ in CLASSES]
    lists: Dict[str, str] = {}
    for split, n in per_class.items():
        lists[split] = str(root / f"{split}.csv")
        if done["per_class"].get(split) == int(n) and Path(lists[split]).is_file():
            continue
        entries = [_write_motion_video(vdir, split, i, assets, seed, num_frames, fps, motion_scale)
                   for i in range(int(n) * len(CLASSES))]
        tmp = Path(lists[split] + ".tmp")
        write_list(tmp, entries)
        os.replace(tmp, lists[split])
        done["per_class"][split] = int(n)
        meta_path.write_text(json.dumps(done, indent=1))
    counts = {k: int(v) * len(CLASSES) for k, v in per_class.items()}
    return MotionSplits(root=str(root), classes=names, lists=lists, counts=counts, data_root=str(vdir),
                        num_frames=num_frames, size=size, fps=fps)
