"""Re-encode the videos of a list to a smaller short side (``tools/resize_videos.py``).

VideoMAE users shrink Kinetics to a 320-pixel short side before training (decoding a 1080p clip
to crop 224 pixels is most of the data cost). :func:`resize_list` does it with PyAV, in a pool of
worker processes (H.264, or VP9 for ``.webm``: :data:`CODECS`; ``to="mp4"``: H.264 for all):

* every frame is decoded, scaled (swscale ``AREA``) so that the short side is exactly
  ``short_side`` and the long side keeps the aspect ratio (rounded to an even number, as
  yuv420p needs), and re-encoded at the source's average frame rate, each frame at its source
  timestamp expressed in frame slots (exact for constant-rate sources; a variable-rate one is
  rounded to the nearest slot), so the frame count, fps and duration stay those of the source
  (audio is dropped: training reads video only);
* the output goes to a hidden temporary name next to the target and is renamed into place only
  when complete, so an existing output is a finished one; a re-run skips outputs that exist,
  open, have the requested short side and (where both containers store it) the source's frame
  count — a killed run resumes where it stopped;
* a video that cannot be opened or decoded, has no video stream, or decodes to fewer frames
  than its header announces is reported (``<list stem>_broken.txt``: ``<path>\\t<reason>``) and
  left out of the new list, which is otherwise the old one with the new paths.
"""
from __future__ import annotations

import glob
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Tuple

from tqdm import tqdm

from .lists import format_path, read_list

__all__ = ["ResizeResult", "ResizeReport", "resized_size", "output_name", "resize_video", "is_complete",
           "resize_list", "CODECS"]

#: output extension -> (PyAV encoder, container format): H.264 (``libx264``) for every container
#: but ``.webm`` (VP9, ``libvpx-vp9``); other extensions are written as ``.mp4``.
CODECS: Dict[str, Tuple[str, str]] = {
    ".mp4": ("libx264", "mp4"),
    ".m4v": ("libx264", "mp4"),
    ".mov": ("libx264", "mov"),
    ".mkv": ("libx264", "matroska"),
    ".avi": ("libx264", "avi"),
    ".flv": ("libx264", "flv"),
    ".3gp": ("libx264", "3gp"),
    ".ts": ("libx264", "mpegts"),
    ".webm": ("libvpx-vp9", "webm"),
}
TARGETS = ("mp4", "webm", "mkv")


def resized_size(width: int, height: int, short_side: int) -> Tuple[int, int]:
    """``(width, height)`` with the short side equal to ``short_side`` and the long side scaled
    by the same factor, rounded to the nearest even number (at least 2)."""
    if short_side < 2 or short_side % 2:
        raise ValueError(f"short side must be an even number >= 2 (yuv420p), got {short_side}")
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")

    def even(x: float) -> int:
        return max(2, 2 * int(round(x / 2.0)))

    if width <= height:
        return short_side, even(height * short_side / width)
    return even(width * short_side / height), short_side


def output_name(name: str, to: Optional[str] = None, data_root: str = "") -> str:
    """The path (relative to the output folder, ``/``-separated) of a listed video's output.

    Relative names keep their sub-folders; absolute ones are taken relative to ``data_root``
    when under it, else relative to the file system root. ``to`` replaces the extension;
    containers without an encoder in :data:`CODECS` become ``.mp4``.

    Raises:
        ValueError: the name climbs out of the folder (``..``).
    """
    p = name.replace("\\", "/")
    if os.path.isabs(p):
        root = os.path.abspath(data_root) if data_root else ""
        ap = os.path.normpath(p)
        p = os.path.relpath(ap, root) if root and (ap + "/").startswith(root.rstrip("/") + "/") else ap.lstrip("/")
    pp = PurePosixPath(os.path.normpath(p).replace("\\", "/"))
    if pp.parts and pp.parts[0] == "..":
        raise ValueError(f"video path {name!r} leaves the data root ('..')")
    suffix = pp.suffix
    if to is not None:
        suffix = "." + to.lower().lstrip(".")
    elif suffix.lower() not in CODECS:
        suffix = ".mp4"
    return str(pp.with_suffix(suffix)) if pp.suffix else str(pp) + suffix


@dataclass
class ResizeResult:
    """One video: ``status`` is ``"done"`` (re-encoded now), ``"skipped"`` (a complete output
    was already there) or ``"broken"`` (``reason`` says why)."""

    src: str
    dst: str
    status: str
    reason: str = ""
    frames: int = 0
    size: Tuple[int, int] = (0, 0)


def _probe(path: str) -> Tuple[int, int, int]:
    """``(width, height, frames in the header or -1)`` of a file's first video stream."""
    import av  # lazy: PyAV loads before decord (see video.py); only re-encoding needs it

    with av.open(path) as c:
        if not c.streams.video:
            raise ValueError("no video stream")
        s = c.streams.video[0]
        return s.codec_context.width, s.codec_context.height, int(s.frames) if s.frames else -1


def is_complete(src: str, dst: str, short_side: int) -> bool:
    """Whether ``dst`` is a finished output of ``src``: it opens, its short side is
    ``short_side`` and, when both headers carry a frame count, the counts agree."""
    if not os.path.isfile(dst) or os.path.getsize(dst) == 0:
        return False
    try:
        w, h, n = _probe(dst)
    except Exception:  # noqa: BLE001 - any unreadable output is redone
        return False
    if min(w, h) != short_side:
        return False
    try:
        _, _, n_src = _probe(src)
    except Exception:  # noqa: BLE001
        return True  # the source is unreadable now; the output was complete when written
    return n < 0 or n_src < 0 or n == n_src


def _encoder_options(codec: str, crf: int, preset: str, threads: int) -> Dict[str, str]:
    if codec == "libx264":
        return {"crf": str(crf), "preset": preset, "threads": str(threads)}
    # VP9 constant quality; "good" quality at cpu-used 4 is ~realtime-ish on one core per video.
    return {"crf": str(crf + 9), "b:v": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1",
            "threads": str(threads)}


@dataclass
class _Progress:
    """What an encode got to (reported with a broken video too)."""

    frames: int = 0
    size: Tuple[int, int] = (0, 0)


def _temp_path(dst: str) -> str:
    """A hidden temporary name next to ``dst`` (its folder made, stale ones of killed runs removed)."""
    d = os.path.dirname(dst) or "."
    os.makedirs(d, exist_ok=True)
    base = os.path.basename(dst)
    for stale in glob.glob(os.path.join(glob.escape(d), f".{glob.escape(base)}.part-*")):
        os.remove(stale)  # left by a killed run
    return os.path.join(d, f".{base}.part-{os.getpid()}")


def _encode_frames(ic, s, oc, o, out_tb: Fraction, size: Tuple[int, int], done: _Progress) -> None:
    """Decode every frame of stream ``s``, scale it to ``size`` and encode it into ``o``, each at
    its source timestamp in frame slots of ``out_tb``."""
    w, h = size
    tb = s.time_base
    first = None
    last_pts = -1
    for f in ic.decode(s):
        g = f.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
        if f.pts is None or tb is None:  # no timestamps (some AVIs): constant rate
            pts = done.frames
        else:
            # the source stamp in frame slots: exact for constant-rate sources (it also removes
            # a container's millisecond rounding, webm's 62/63 ms at 16 fps); a variable-rate
            # source is rounded to the nearest slot
            if first is None:
                first = f.pts
            pts = int(round((f.pts - first) * tb / out_tb))
        pts = max(pts, last_pts + 1)  # repeated / reordered stamps: keep order
        g.pts, g.time_base = pts, out_tb
        last_pts = g.pts
        for p in o.encode(g):
            oc.mux(p)
        done.frames += 1
    for p in o.encode():
        oc.mux(p)


def _transcode(src: str, tmp: str, ext: str, short_side: int, crf: int, preset: str, threads: int,
               done: _Progress) -> int:
    """Re-encode ``src`` into ``tmp``; returns the frame count the source's header announces (-1: none)."""
    import av  # lazy: as in _probe

    codec, fmt = CODECS.get(ext, CODECS[".mp4"])
    with av.open(src) as ic:
        if not ic.streams.video:
            raise ValueError("no video stream")
        s = ic.streams.video[0]
        s.thread_type = "AUTO"
        announced = int(s.frames) if s.frames else -1
        rate = s.average_rate or s.guessed_rate or s.base_rate
        if not rate:
            raise ValueError("unknown frame rate")
        done.size = resized_size(s.codec_context.width, s.codec_context.height, short_side)
        out_tb = 1 / Fraction(rate)  # one tick per frame at the source's average rate
        with av.open(tmp, "w", format=fmt) as oc:
            o = oc.add_stream(codec, rate=rate)
            o.width, o.height, o.pix_fmt = done.size[0], done.size[1], "yuv420p"
            o.codec_context.time_base = out_tb
            o.options = _encoder_options(codec, crf, preset, threads)
            _encode_frames(ic, s, oc, o, out_tb, done.size, done)
    return announced


def resize_video(src: str, dst: str, short_side: int, crf: int = 23, preset: str = "medium",
                 threads: int = 0) -> ResizeResult:
    """Re-encode ``src`` into ``dst`` (written to a temporary name, then renamed into place).

    Keeps every frame and its timestamp (in slots of the source's average rate, so fps,
    duration and frame count stay the source's);
    the short side becomes ``short_side``. Never raises for a bad source: returns a result with
    ``status="broken"`` and the reason (and leaves no file behind).
    """
    tmp = _temp_path(dst)
    done = _Progress()
    try:
        if not os.path.isfile(src):
            raise FileNotFoundError("file not found")
        if os.path.getsize(src) == 0:
            raise ValueError("empty file (0 bytes)")
        announced = _transcode(src, tmp, os.path.splitext(dst)[1].lower(), short_side, crf, preset, threads, done)
        if done.frames == 0:
            raise ValueError("no decodable frame")
        if announced > 0 and done.frames < announced:
            raise ValueError(f"truncated: decoded {done.frames} of the {announced} frames its header announces")
        os.replace(tmp, dst)
    except Exception as e:  # noqa: BLE001 - every failure is a broken video, reported
        if os.path.exists(tmp):
            os.remove(tmp)
        reason = f"{type(e).__name__}: {e}".replace("\n", " ").replace("\t", " ")
        return ResizeResult(src, dst, "broken", reason[:300], done.frames, done.size)
    return ResizeResult(src, dst, "done", "", done.frames, done.size)


def _work(job: Tuple[str, str, int, int, str, int]) -> ResizeResult:
    src, dst, short_side, crf, preset, threads = job
    if is_complete(src, dst, short_side):
        w, h, n = _probe(dst)
        return ResizeResult(src, dst, "skipped", "", n, (w, h))
    return resize_video(src, dst, short_side, crf, preset, threads)


@dataclass
class ResizeReport:
    """What :func:`resize_list` did: the new list, the broken-video report and per-video results."""

    list_path: str
    broken_path: str
    results: List[ResizeResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def summary(self) -> str:
        n = len(self.results)
        return (f"{n} videos: {self.count('done')} re-encoded, {self.count('skipped')} already done, "
                f"{self.count('broken')} broken -> {self.broken_path}\nnew list: {self.list_path}")


def resize_list(
    list_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    short_side: int = 320,
    workers: int = 1,
    to: Optional[str] = None,
    data_root: str = "",
    out_list: Optional[str | os.PathLike] = None,
    crf: int = 23,
    preset: str = "medium",
    progress: bool = True,
) -> ResizeReport:
    """Re-encode every video of ``list_file`` under ``out_dir`` and write the new list.

    Args:
        list_file: a VideoMAE list (either form; labels / start-total fields are kept).
        out_dir: the new video root (``data.data_root`` of the new list); sub-folders of the
            listed paths are kept.
        short_side: the new short side in pixels (even).
        workers: worker processes (each encodes one video at a time).
        to: ``"mp4"`` (H.264), ``"webm"`` (VP9) or ``"mkv"`` for every output; ``None`` keeps
            each video's container.
        data_root: prefix of the list's relative paths.
        out_list: the new list (default ``out_dir/<list file name>``).
        crf, preset: x264 quality and speed (VP9 uses ``crf + 9``).
        progress: tqdm bar.

    Returns:
        :class:`ResizeReport`; the broken videos are in ``<out list stem>_broken.txt``.

    Raises:
        ValueError: bad arguments, an output that would overwrite its source or the list, or
            two listed videos mapping to one output — all before any video is touched.
    """
    _check_arguments(to, short_side, workers)
    videos = read_list(list_file, data_root)
    out_dir = os.path.abspath(os.fspath(out_dir))
    out_list = os.path.abspath(os.fspath(out_list)) if out_list else os.path.join(out_dir, os.path.basename(list_file))
    if os.path.abspath(os.fspath(list_file)) == out_list:
        raise ValueError(f"the new list would overwrite {list_file}; choose another output folder or --out-list")
    jobs, lines = _plan(videos, out_dir, to, data_root)
    threads = 0 if workers == 1 else 1
    todo = [(src, dst, short_side, crf, preset, threads) for src, dst in jobs.items()]
    desc = f"resizing {os.path.basename(os.fspath(list_file))}" if progress else None
    results = _run(todo, workers, desc)
    broken = {r.src: r for r in results if r.status == "broken"}
    stem = os.path.splitext(out_list)[0]
    broken_path = f"{stem}_broken.txt"
    os.makedirs(os.path.dirname(out_list), exist_ok=True)
    _write_atomic(out_list, "".join(f"{format_path(new)} {rest}\n" for src, new, rest in lines if src not in broken))
    name_of = {os.path.abspath(str(p)): str(n) for p, n in zip(videos.paths, videos.names)}
    _write_atomic(broken_path, "".join(f"{name_of[r.src]}\t{r.reason}\n" for r in broken.values()))
    return ResizeReport(out_list, broken_path, results)


def _check_arguments(to: Optional[str], short_side: int, workers: int) -> None:
    if to is not None and to.lower().lstrip(".") not in TARGETS:
        raise ValueError(f"--to must be one of {TARGETS}, got {to!r}")
    resized_size(2, 2, short_side)  # validates short_side
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")


def _plan(videos, out_dir: str, to: Optional[str], data_root: str
          ) -> Tuple[Dict[str, str], List[Tuple[str, str, str]]]:
    """``(jobs, lines)``: source → output path of every video, and the new list's
    ``(source, new name, fields after the path)``; raises before any work on an output that
    would overwrite its source or be written twice."""
    jobs: Dict[str, str] = {}  # src -> dst
    lines: List[Tuple[str, str, str]] = []  # (src, new name, fields after the path)
    owner: Dict[str, str] = {}
    for i in range(len(videos)):
        name, src = str(videos.names[i]), os.path.abspath(str(videos.paths[i]))
        new = output_name(name, to, data_root)
        dst = os.path.join(out_dir, new)
        if os.path.abspath(dst) == src:
            raise ValueError(f"{videos.source}: output {dst} would overwrite its source; choose another output folder")
        if owner.setdefault(dst, src) != src:
            raise ValueError(f"{videos.source}: {owner[dst]} and {src} would both be written to {dst}")
        jobs[src] = dst
        label = int(videos.labels[i])
        rest = str(label) if label >= 0 else f"{int(videos.starts[i])} {int(videos.totals[i])}"
        lines.append((src, new, rest))
    return jobs, lines


def _run(todo: List[Tuple[str, str, int, int, str, int]], workers: int, desc: Optional[str]) -> List[ResizeResult]:
    """Every job, in this process (``workers == 1``) or a pool; a tqdm bar unless ``desc`` is None."""
    if workers == 1:
        it = map(_work, todo)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        it = pool.map(_work, todo)
    if desc is not None:
        it = tqdm(it, total=len(todo), desc=desc, unit="video")
    try:
        return list(it)
    finally:
        if pool is not None:
            pool.shutdown()


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.part-{os.getpid()}"
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, path)
