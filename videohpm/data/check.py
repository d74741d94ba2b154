"""Scan a list file for broken videos with a pool of worker processes (``tools/check_videos.py``)."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import List, Optional

from tqdm import tqdm

from .lists import read_list, write_list
from .video import check_video

__all__ = ["BrokenEntry", "check_list"]


@dataclass
class BrokenEntry:
    """One unreadable video of a list: the name as listed, its label (-1: none) and the reason."""

    name: str
    label: int
    reason: str


def check_list(
    list_file: str | os.PathLike,
    data_root: str = "",
    workers: int = 4,
    backend: str = "decord",
    fallback: Optional[str] = "pyav",
    full: bool = False,
    out: Optional[str | os.PathLike] = None,
    progress: bool = True,
) -> List[BrokenEntry]:
    """Try every video of ``list_file``; return (and with ``out``, write) the broken ones.

    Each video is opened and its first, middle and last frames decoded (``full``: every frame)
    in one of ``workers`` processes. ``out`` receives the broken entries as a list file in the
    same ``<path> <label>`` format (so it can be re-checked or subtracted) and ``out + ".why"``
    one ``<path>\t<reason>`` line each.
    """
    videos = read_list(list_file, data_root)
    paths = [str(p) for p in videos.paths]
    fn = partial(check_video, backend=backend, fallback=fallback, full=full)
    if workers <= 1:
        reasons = map(fn, paths)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        reasons = pool.map(fn, paths, chunksize=max(1, min(64, len(paths) // (workers * 8) or 1)))
    if progress:
        reasons = tqdm(reasons, total=len(paths), desc=f"checking {os.path.basename(str(list_file))}", unit="video")
    try:
        broken = [
            BrokenEntry(str(videos.names[i]), int(videos.labels[i]), why)
            for i, why in enumerate(reasons)
            if why is not None
        ]
    finally:
        if workers > 1:
            pool.shutdown()
    if out is not None:
        write_list(out, [(b.name, max(b.label, 0)) for b in broken])
        with open(f"{os.fspath(out)}.why", "w", encoding="utf-8") as f:
            for b in broken:
                f.write(f"{b.name}\t{b.reason}\n")
    return broken
