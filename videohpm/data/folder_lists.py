"""List builders for your own videos (class folders) and for UCF101 / HMDB51's official splits.

All three write VideoMAE V1 lists (``train.csv`` / ``val.csv`` / ``test.csv``, ``<path> <label>``,
paths relative to the video root, i.e. ``data.data_root``) plus ``classes.txt`` (line ``k`` = the
name of label ``k``), which is what ``data.dataset: generic`` reads (``data.num_classes`` = its
number of lines). Paths with spaces are written double-quoted (:func:`videohpm.data.lists.format_path`).

* :func:`build_folder_lists` — ``ROOT/<class>/**/<video>``: every non-hidden sub-folder is a
  class, ids in sorted name order (torchvision's / pytorchvideo's convention); nested videos
  belong to the top-level class; a deterministic per-class (stratified) validation split.
* :func:`build_ucf101_lists` — ``classInd.txt`` + ``trainlist0K.txt`` / ``testlist0K.txt``
  (pytorchvideo's ``LabeledVideoPaths.from_csv``).
* :func:`build_hmdb51_lists` — ``<class>_test_splitK.txt`` (``<video> 0|1|2``; pytorchvideo's
  ``Hmdb51LabeledVideoPaths.from_csvs``).

The folder scan does not call pytorchvideo 0.1.5's ``LabeledVideoPaths.from_directory``: it only
takes ``mp4`` / ``avi`` (suffix matched without the dot), aborts on an empty class folder, makes
hidden folders classes, keeps hidden files, reports no skipped file and has no validation split.
We use the walk it delegates to (``torchvision.datasets.folder.make_dataset``) with our own filter.
"""
from __future__ import annotations

import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from torchvision.datasets.folder import make_dataset

from .lists import ListBuildReport, ListFormatError, copy_val_as_test, finish_split, write_list

__all__ = [
    "VIDEO_EXTENSIONS",
    "FolderScan",
    "FolderListReport",
    "scan_class_folders",
    "stratified_split",
    "build_folder_lists",
    "build_ucf101_lists",
    "build_hmdb51_lists",
    "write_classes",
]

#: File extensions taken as videos (compared lower-cased, so ``.MP4`` counts).
VIDEO_EXTENSIONS: Tuple[str, ...] = (
    ".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ogv", ".ts",
)


def _hidden(name: str) -> bool:
    return name.startswith(".")


@dataclass
class FolderScan:
    """What :func:`scan_class_folders` found.

    Attributes:
        classes: class names (the top-level sub-folders) in id order.
        videos: ``(relative path, label)`` sorted by path; paths use ``/``.
        empty_classes: classes without a single video (kept: ids stay stable).
        skipped: relative paths of files that are not videos (wrong extension, hidden, or not
            inside a class folder), with the reason.
    """

    classes: List[str]
    videos: List[Tuple[str, int]]
    empty_classes: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)


def scan_class_folders(root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> FolderScan:
    """Find the class folders and their videos under ``root``.

    Every non-hidden directory directly under ``root`` is a class (ids = sorted names); the
    videos of a class are all files below its folder, at any depth, whose extension
    (lower-cased) is in ``extensions`` and whose name and folders are not hidden (``.``-prefixed).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no class folder, or no video at all.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"video folder not found: {root}")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    skipped: List[Tuple[str, str]] = []
    classes = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            if _hidden(entry.name):
                skipped.append((entry.name + "/", "hidden folder"))
            else:
                classes.append(entry.name)
        else:
            skipped.append((entry.name, "not inside a class folder"))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected ROOT/<class>/<video>)")

    def is_video(path: str) -> bool:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        parts = rel.split("/")
        if any(_hidden(p) for p in parts):
            skipped.append((rel, "hidden file or folder"))
            return False
        if not rel.lower().endswith(exts):
            skipped.append((rel, f"not a video extension ({', '.join(exts)})"))
            return False
        return True

    class_to_idx = {c: i for i, c in enumerate(classes)}
    found = make_dataset(root, class_to_idx, is_valid_file=is_video, allow_empty=True)
    videos = sorted((os.path.relpath(p, root).replace(os.sep, "/"), label) for p, label in found)
    counts = np.bincount([label for _, label in videos], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if not videos:
        raise ValueError(f"{root}: no videos found in {len(classes)} class folder(s) (extensions: {', '.join(exts)})")
    return FolderScan(classes=classes, videos=videos, empty_classes=empty, skipped=sorted(set(skipped)))


def _class_seed(seed: int, name: str) -> np.random.Generator:
    # Seeded by the class *name*: adding a class (or videos to another class) does not change
    # the split of this one.
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def stratified_split(
    videos: Sequence[Tuple[str, int]], classes: Sequence[str], val_ratio: float, seed: int = 0
) -> Tuple[List[Tuple[str, int]], List[Tuple[str, int]]]:
    """Split each class's videos into train / val, deterministically from ``seed``.

    A class with ``n >= 2`` videos gives ``round(n * val_ratio)`` of them to val, at least one
    and at most ``n - 1`` (when ``val_ratio > 0``); a class with one video keeps it in train.
    Both lists come back sorted by path.
    """
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    by_class: Dict[int, List[str]] = {}
    for path, label in videos:
        by_class.setdefault(int(label), []).append(path)
    train, val = [], []
    for label, paths in sorted(by_class.items()):
        paths = sorted(paths)
        n = len(paths)
        n_val = int(round(n * val_ratio))
        if val_ratio > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        elif n < 2:
            n_val = 0
        order = _class_seed(seed, classes[label]).permutation(n)
        chosen = set(order[:n_val].tolist())
        for k, p in enumerate(paths):
            (val if k in chosen else train).append((p, label))
    return sorted(train), sorted(val)


def write_classes(path: str | os.PathLike, classes: Sequence[str]) -> None:
    """``classes.txt``: one class name per line, in id order."""
    for c in classes:
        if "\n" in c or "\r" in c:
            raise ListFormatError(f"class name {c!r} contains a line break")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(c + "\n" for c in classes), encoding="utf-8")


@dataclass
class FolderListReport(ListBuildReport):
    """:class:`ListBuildReport` plus what the folder scan warned about."""

    empty_classes: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    no_val: List[str] = field(default_factory=list)  # classes with videos but none in val

    def summary(self) -> str:
        lines = [super().summary()]
        for c in self.empty_classes:
            lines.append(f"WARNING: class folder {c!r} has no videos (kept as class {self.classes.index(c)}, "
                         "so the ids stay stable)")
        if self.no_val:
            lines.append(f"WARNING: {len(self.no_val)} class(es) with a single video have none in val: "
                         + ", ".join(repr(c) for c in self.no_val[:10]) + (" ..." if len(self.no_val) > 10 else ""))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} non-video file(s) / hidden folder(s) (listed in skipped.txt)")
        return "\n".join(lines)


def build_folder_lists(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_ratio: float = 0.2,
    seed: int = 0,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    allow_empty: bool = True,
) -> FolderListReport:
    """Class sub-folders -> ``train.csv`` / ``val.csv`` / ``test.csv`` (= val) / ``classes.txt``.

    Paths in the lists are relative to ``root`` (use ``data.data_root=ROOT``). Non-video files are
    skipped and listed in ``OUT/skipped.txt`` (``<path>\\t<reason>``). With ``val_ratio=0`` only
    ``train.csv`` is written.

    Args:
        root: ``ROOT/<class>/.../<video>``.
        out_dir: where the lists go.
        val_ratio: fraction of each class's videos for validation (stratified, see
            :func:`stratified_split`).
        seed: the split's seed.
        extensions: video file extensions (case-insensitive).
        allow_empty: keep an empty class folder as a class (with a warning in the report);
            ``False`` refuses it (``ValueError``) before anything is written.

    Raises:
        FileNotFoundError / ValueError: see :func:`scan_class_folders`; ``val_ratio`` outside
            ``[0, 1)``; an empty class with ``allow_empty=False``.
    """
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"--val-ratio must be in [0, 1), got {val_ratio}")
    scan = scan_class_folders(root, extensions)
    if scan.empty_classes and not allow_empty:
        raise ValueError(f"{root}: class folder(s) without videos: {scan.empty_classes} "
                         "(remove them, add videos, or allow empty classes)")
    train, val = stratified_split(scan.videos, scan.classes, val_ratio, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = FolderListReport(classes=list(scan.classes), empty_classes=scan.empty_classes, skipped=scan.skipped)
    in_val = {label for _, label in val}
    report.no_val = [c for k, c in enumerate(scan.classes)
                     if val_ratio > 0 and k not in in_val and c not in scan.empty_classes]
    write_classes(out / "classes.txt", scan.classes)
    finish_split(report, "train", train, out, None, False)
    if val:
        finish_split(report, "val", val, out, None, False)
        copy_val_as_test(report, out)
    with open(out / "skipped.txt", "w", encoding="utf-8") as f:
        f.writelines(f"{p}\t{why}\n" for p, why in scan.skipped)
    return report


# ----------------------------------------------------------------------------- UCF101 / HMDB51


def _clean_lines(path: Path) -> List[Tuple[int, str]]:
    """``(line number, stripped text)`` of the non-blank lines of an annotation file."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, "r", encoding="utf-8-sig") as f:
        return [(k, t.strip()) for k, t in enumerate(f.read().splitlines(), start=1) if t.strip()]


def _check_split(split: int) -> int:
    if int(split) not in (1, 2, 3):
        raise ValueError(f"--split must be 1, 2 or 3 (the official splits), got {split}")
    return int(split)


def _read_ucf_class_ind(path: Path) -> List[str]:
    """``classInd.txt``: ``<1-based id> <ClassName>`` per line -> names in 0-based id order."""
    pairs = []
    for lineno, text in _clean_lines(path):
        tokens = text.split()
        if len(tokens) != 2 or not tokens[0].isdigit():
            raise ListFormatError(f"{path}:{lineno}: expected '<id> <ClassName>', got {text!r}")
        pairs.append((int(tokens[0]), tokens[1]))
    ids = sorted(i for i, _ in pairs)
    if ids != list(range(1, len(ids) + 1)):
        raise ListFormatError(f"{path}: class ids must be 1..{len(ids)} without gaps or repeats")
    names = [n for _, n in sorted(pairs)]
    if len(set(names)) != len(names):
        raise ListFormatError(f"{path}: repeated class name")
    return names


def _ucf_split_entries(path: Path, classes: List[str], labelled: bool) -> List[Tuple[str, int]]:
    """``trainlist0K.txt`` (``<Class>/<video>.avi <1-based id>``) or ``testlist0K.txt``
    (``<Class>/<video>.avi``) -> ``(path, 0-based label)``; the label is the class of the path's
    folder, checked against the listed id when there is one."""
    from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths  # lazy: heavy; only UCF101 lists need it

    lines = _clean_lines(path)
    exact = {c: i for i, c in enumerate(classes)}
    folded = {c.lower(): i for i, c in enumerate(classes)}
    checked = []
    for lineno, text in lines:
        where = f"{path}:{lineno}"
        tokens = text.split()
        if len(tokens) not in (1, 2) or (len(tokens) == 2 and not tokens[1].lstrip("-").isdigit()):
            raise ListFormatError(f"{where}: expected '<Class>/<video> [<class id>]', got {text!r}")
        if labelled and len(tokens) != 2:
            raise ListFormatError(f"{where}: a training list line needs '<Class>/<video> <class id>', got {text!r}")
        name = tokens[0].replace("\\", "/")
        if "/" not in name:
            raise ListFormatError(f"{where}: path {name!r} has no '<Class>/' folder")
        folder = name.split("/", 1)[0]
        label = exact.get(folder, folded.get(folder.lower()))
        if label is None:
            raise ListFormatError(f"{where}: class folder {folder!r} is not in classInd.txt")
        if len(tokens) == 2 and int(tokens[1]) - 1 != label:
            raise ListFormatError(f"{where}: class id {tokens[1]} does not match folder {folder!r} "
                                  f"(classInd.txt: {label + 1})")
        checked.append((name, label))
    # Every line is well-formed: read the file with pytorchvideo's parser (the same
    # rsplit-based <path> [<label>] reading its Ucf101 dataset uses), from a copy without blank
    # lines, which from_csv cannot take.
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / path.name
        clean.write_text("".join(t + "\n" for _, t in lines), encoding="utf-8")
        parsed = LabeledVideoPaths.from_csv(str(clean))
        rows = [parsed[k] for k in range(len(parsed))]  # (path, {"label": 1-based id or -1})
    # the 0-based label of each row: its folder's class (equal to the listed id - 1, checked above)
    label_of = dict(checked)
    return [(p.replace("\\", "/"), label_of[p.replace("\\", "/")]) for p, _ in rows]


def _write_split_lists(
    out: Path,
    classes: List[str],
    train: List[Tuple[str, int]],
    val: List[Tuple[str, int]],
    video_dir: Optional[str | os.PathLike],
    drop_missing: bool,
) -> ListBuildReport:
    """An official split's lists (UCF101, HMDB51): ``classes.txt``, ``train.csv``, ``val.csv`` and
    ``test.csv`` (a copy of val), each checked against ``video_dir`` when given."""
    vdir = Path(video_dir) if video_dir is not None else None
    out.mkdir(parents=True, exist_ok=True)
    report = ListBuildReport(classes=classes)
    write_classes(out / "classes.txt", classes)
    finish_split(report, "train", train, out, vdir, drop_missing)
    finish_split(report, "val", val, out, vdir, drop_missing)
    copy_val_as_test(report, out)
    return report


def build_ucf101_lists(
    annotation_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: int = 1,
    video_dir: Optional[str | os.PathLike] = None,
    drop_missing: bool = False,
) -> ListBuildReport:
    """UCF101's ``ucfTrainTestlist`` -> ``train.csv`` / ``val.csv`` / ``test.csv`` / ``classes.txt``.

    ``classInd.txt`` gives the 1-based class ids (ours are 0-based: ``id - 1``);
    ``trainlist0{split}.txt`` is the training split, ``testlist0{split}.txt`` the validation split
    (``test.csv`` is a copy, as VideoMAE tests on it). Lines are ``<Class>/<video>.avi <label>``,
    relative to the ``UCF-101`` folder (``data.data_root``).
    """
    split = _check_split(split)
    ann = Path(annotation_dir)
    out = Path(out_dir)
    classes = _read_ucf_class_ind(ann / "classInd.txt")
    train = _ucf_split_entries(ann / f"trainlist0{split}.txt", classes, labelled=True)
    val = _ucf_split_entries(ann / f"testlist0{split}.txt", classes, labelled=False)
    return _write_split_lists(out, classes, train, val, video_dir, drop_missing)


_HMDB_SUFFIX = "_test_split"


def _hmdb_split_files(ann: Path, split: int) -> Dict[str, Path]:
    """``{class name: <class>_test_split{split}.txt}`` in sorted class order."""
    if not ann.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {ann}")
    tail = f"{_HMDB_SUFFIX}{split}.txt"
    files = {p.name[: -len(tail)]: p for p in ann.iterdir() if p.is_file() and p.name.endswith(tail)}
    if not files:
        raise FileNotFoundError(f"{ann}: no '<class>{tail}' files (HMDB51's testTrainMulti_7030_splits)")
    if "" in files:
        raise ListFormatError(f"{files['']}: no class name before '{tail}'")
    return dict(sorted(files.items()))


def build_hmdb51_lists(
    annotation_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: int = 1,
    video_dir: Optional[str | os.PathLike] = None,
    drop_missing: bool = False,
) -> ListBuildReport:
    """HMDB51's ``testTrainMulti_7030_splits`` -> ``train.csv`` / ``val.csv`` / ``test.csv`` /
    ``classes.txt``.

    Each ``<class>_test_split{split}.txt`` lists the class's videos with ``1`` (train), ``2``
    (test) or ``0`` (unused, left out). Label ids are the sorted class names; the test split is
    ``val.csv`` (``test.csv`` a copy). Lines are ``<class>/<video>.avi <label>``, relative to the
    folder holding the class folders (``data.data_root``).
    """
    from pytorchvideo.data.hmdb51 import Hmdb51LabeledVideoPaths  # lazy: heavy; only HMDB51 lists need it

    split = _check_split(split)
    ann = Path(annotation_dir)
    out = Path(out_dir)
    files = _hmdb_split_files(ann, split)
    classes = list(files)
    class_to_id = {c: i for i, c in enumerate(classes)}
    # Check every line first (pytorchvideo's parser fails on them with a bare IndexError /
    # ValueError or not at all), then parse clean copies with Hmdb51LabeledVideoPaths, which
    # takes the class from the file name exactly as the official layout names it.
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        for cls, path in files.items():
            kept = []
            for lineno, text in _clean_lines(path):
                tokens = text.rsplit(None, 1)
                if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
                    raise ListFormatError(f"{path}:{lineno}: expected '<video> <0|1|2>', got {text!r}")
                kept.append(text)
            copy = Path(tmp) / path.name
            copy.write_text("".join(t + "\n" for t in kept), encoding="utf-8")
            copies.append(copy)
        entries: Dict[str, List[Tuple[str, int]]] = {}
        for split_name, kind in (("train", "train"), ("val", "test")):
            try:
                parsed = Hmdb51LabeledVideoPaths.from_csvs(copies, split_type=kind)
            except AssertionError:  # pytorchvideo asserts that the split is not empty
                raise ListFormatError(f"{ann}: no video marked {'1 (train)' if kind == 'train' else '2 (test)'} "
                                      f"in the *{_HMDB_SUFFIX}{split}.txt files") from None
            rows = [parsed[k] for k in range(len(parsed))]  # (class/video, {"label": class name, ...})
            entries[split_name] = [(p.replace(os.sep, "/"), class_to_id[meta["label"]]) for p, meta in rows]
    return _write_split_lists(out, classes, entries["train"], entries["val"], video_dir, drop_missing)
