"""The videos a task reads, as one `VideoList`: video files, folders (searched recursively; video
extensions matched case-insensitively) and list files (`.txt` / `.csv` / `.lst`: one path per line,
or VideoMAE's `<path> <label>` / `<path> <start> <total>` lines, whose labels are kept). Used by
`tools/predict.py` and `tools/extract_features.py`.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from videohpm.data.lists import ListFormatError, VideoList, parse_line

__all__ = ["VIDEO_EXTENSIONS", "LIST_EXTENSIONS", "collect_videos"]


VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ogv", ".ts", ".mts", ".m2ts", ".gif")
LIST_EXTENSIONS = (".txt", ".csv", ".lst", ".list")


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _read_plain_list(path: str, data_root: str) -> Tuple[List[str], List[str], List[int], List[int], List[int]]:
    """A list file: one path per line (may hold spaces), or VideoMAE's two / three-field lines."""
    names, paths, labels, starts, totals = [], [], [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            text = raw.rstrip("\r\n").strip()
            if not text:
                continue
            where = f"{path}:{lineno}"
            full = os.path.join(data_root, text) if data_root else text
            if " " not in text or os.path.isfile(full):
                name, label, start, total = text, -1, 0, -1
            else:
                try:
                    name, label, start, total = parse_line(text, where)
                except ListFormatError as e:
                    raise ListFormatError(f"{e} (a prediction list holds one video path per line, or VideoMAE's "
                                          "'<path> <label>' lines)") from None
                full = os.path.join(data_root, name) if data_root else name
            names.append(name)
            paths.append(full)
            labels.append(label)
            starts.append(start)
            totals.append(total)
    if not names:
        raise ListFormatError(f"{path}: the list is empty")
    return names, paths, labels, starts, totals


def _folder_videos(folder: str) -> List[str]:
    """Every file with a video extension below `folder`, sorted by path."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if _is_video_name(f)]
    if not found:
        raise ValueError(f"{folder}: no video files in this folder (extensions {', '.join(VIDEO_EXTENSIONS)})")
    return sorted(found)


def _file_videos(path: str, data_root: str) -> List[Tuple[str, str, int, int, int]]:
    """`(name, path, label, start, total)` of a video file, or of every entry of a list file."""
    ext = os.path.splitext(path)[1].lower()
    if ext in LIST_EXTENSIONS:
        return list(zip(*_read_plain_list(path, data_root)))
    if ext in VIDEO_EXTENSIONS:
        return [(path, path, -1, 0, -1)]
    raise ValueError(f"{path}: neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a list file "
                     f"({', '.join(LIST_EXTENSIONS)})")


def collect_videos(inputs: Sequence[str], data_root: str = "") -> VideoList:
    """The videos of `inputs` as a :class:`videohpm.data.lists.VideoList` (input order; a video
    named twice is kept once).

    - a file with a video extension (any case) → that video (it need not decode: a broken one is
      reported by the prediction); a file with a list extension → the list's entries, relative
      paths joined onto `data_root` (VideoMAE's rule);
    - a folder → every file with a video extension below it, sorted by path.

    Raises:
        FileNotFoundError naming an input that does not exist; ValueError for a folder without
        videos, a file that is neither a video nor a list, or no input at all.
    """
    if not inputs:
        raise ValueError("no input: give video files, folders or list files")
    rows: List[Tuple[str, str, int, int, int]] = []
    for inp in inputs:
        if os.path.isdir(inp):
            rows += [(p, p, -1, 0, -1) for p in _folder_videos(inp)]
        elif os.path.isfile(inp):
            rows += _file_videos(inp, data_root)
        else:
            raise FileNotFoundError(f"{inp}: no such file or folder")
    names, paths, labels, starts, totals = (list(c) for c in zip(*rows))
    seen: Dict[Tuple[str, int, int], int] = {}
    keep = []
    for i, key in enumerate(zip(paths, starts, totals)):
        if key not in seen:
            seen[key] = i
            keep.append(i)
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    return VideoList(paths=np.array(pick(paths)), names=np.array(pick(names)),
                     labels=np.array(pick(labels), dtype=np.int64), starts=np.array(pick(starts), dtype=np.int64),
                     totals=np.array(pick(totals), dtype=np.int64), source=", ".join(inputs))
