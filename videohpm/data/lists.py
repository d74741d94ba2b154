"""VideoMAE-compatible list files: parsing, validation and builders from official annotations.

Two line forms are accepted (single-space separated, no header, as VideoMAE V1/V2):

* ``<path> <label>`` — VideoMAE V1 ``train.csv`` / ``val.csv`` / ``test.csv``;
* ``<path> <start_frame> <total_frames>`` — VideoMAE V2's pre-training form (``path 0 -1``:
  whole video). Such entries carry no label (``label = -1``); ``total_frames = -1`` means
  "to the end of the video".

Paths are joined onto ``data_root`` (absolute paths stay absolute). A path with a space (or one
starting with ``"``) is written in double quotes, a ``"`` inside doubled (CSV style):
``"my class/my video.mp4" 3``; VideoMAE's own readers split on every space and cannot read such
lines, so lists without spaces stay byte-compatible with VideoMAE (:func:`format_path` quotes only
when needed). A bad line raises :class:`ListFormatError` naming ``file:line`` and the reason.

The builders turn the official Something-Something v2 JSON and Kinetics CSV annotation files
into such lists (used by ``tools/make_lists.py`` and by the demo data set).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "ListFormatError",
    "VideoList",
    "parse_line",
    "read_list",
    "write_list",
    "format_path",
    "finish_split",
    "copy_val_as_test",
    "build_ssv2_lists",
    "build_k400_lists",
    "k400_video_name",
    "ListBuildReport",
]


class ListFormatError(ValueError):
    """A list file (or an annotation file) is malformed; the message names ``file:line``."""


@dataclass
class VideoList:
    """The parsed entries of one list file.

    Stored as numpy arrays rather than Python lists of ``str`` so that DataLoader workers that
    fork from the main process do not touch (and so copy) one refcount per entry: with K400's
    240k entries the per-object refcount writes otherwise grow every worker's memory.

    Attributes:
        paths: ``[N]`` unicode array, ``data_root`` already joined.
        names: ``[N]`` unicode array, the path exactly as written in the list (the video id).
        labels: ``[N]`` int64, ``-1`` where the list carries no label (V2 pre-training form).
        starts: ``[N]`` int64 first usable frame (0 for the V1 form).
        totals: ``[N]`` int64 number of usable frames, ``-1`` = to the end of the video.
        source: the list file it came from (for error messages).
    """

    paths: np.ndarray
    names: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    totals: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    @property
    def has_labels(self) -> bool:
        """Whether every entry carries a class label (V1 form)."""
        return len(self) > 0 and bool((self.labels >= 0).all())


def _split_quoted(text: str, where: str) -> List[str]:
    """``'"a b.mp4" 3'`` -> ``["a b.mp4", "3"]``: a leading double-quoted path (``""`` = ``"``),
    then the space-separated fields."""
    parts: List[str] = []
    i = 1
    while True:
        j = text.find('"', i)
        if j < 0:
            raise ListFormatError(f"{where}: unterminated quoted path (no closing '\"'): {text!r}")
        parts.append(text[i:j])
        if text.startswith('""', j):
            parts.append('"')
            i = j + 2
            continue
        break
    path, rest = "".join(parts), text[j + 1 :]
    if not path:
        raise ListFormatError(f"{where}: empty quoted path: {text!r}")
    if not rest.startswith(" "):
        raise ListFormatError(f"{where}: expected a space after the quoted path, got {text!r}")
    return [path] + rest[1:].split(" ")


def parse_line(text: str, where: str) -> Tuple[str, int, int, int]:
    """Parse one stripped, non-empty line into ``(path, label, start, total)``."""
    tokens = _split_quoted(text, where) if text.startswith('"') else text.split(" ")
    if any(t == "" for t in tokens):
        raise ListFormatError(
            f"{where}: fields must be separated by exactly one space (VideoMAE format), got {text!r}"
        )
    if len(tokens) == 2:
        path, label_s = tokens
        try:
            label = int(label_s)
        except ValueError:
            raise ListFormatError(f"{where}: label {label_s!r} is not an integer") from None
        if label < 0:
            raise ListFormatError(f"{where}: label {label} is negative")
        return path, label, 0, -1
    if len(tokens) == 3:
        path, start_s, total_s = tokens
        try:
            start, total = int(start_s), int(total_s)
        except ValueError:
            raise ListFormatError(
                f"{where}: expected '<path> <start_frame> <total_frames>' with integers, got {text!r}"
            ) from None
        if start < 0:
            raise ListFormatError(f"{where}: start_frame {start} is negative")
        if total == 0 or total < -1:
            raise ListFormatError(f"{where}: total_frames {total} must be positive or -1 (whole video)")
        return path, -1, start, total
    raise ListFormatError(
        f"{where}: expected '<path> <label>' or '<path> <start_frame> <total_frames>' "
        f"({len(tokens)} fields found; a path with spaces must be in double quotes, "
        f"'\"my video.mp4\" 3'): {text!r}"
    )


def read_list(
    list_file: str | os.PathLike,
    data_root: str | os.PathLike = "",
    num_classes: Optional[int] = None,
    require_labels: bool = False,
) -> VideoList:
    """Read and validate a VideoMAE list file.

    Args:
        list_file: path of the list.
        data_root: prefix joined onto every relative path.
        num_classes: when given, every label must lie in ``[0, num_classes)``.
        require_labels: reject lines without a label (V2 ``path start total`` form), as
            classification needs one.

    Returns:
        A :class:`VideoList`.

    Raises:
        FileNotFoundError: the list does not exist.
        ListFormatError: a malformed line (message ``file:line: reason``), an out-of-range
            label, a missing label where one is required, or an empty list.
    """
    list_file = os.fspath(list_file)
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"list file not found: {list_file}")
    paths: List[str] = []
    names: List[str] = []
    labels: List[int] = []
    starts: List[int] = []
    totals: List[int] = []
    with open(list_file, "r", encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            text = raw.rstrip("\r\n").strip()
            if not text:
                continue
            where = f"{list_file}:{lineno}"
            path, label, start, total = parse_line(text, where)
            if label < 0 and require_labels:
                raise ListFormatError(
                    f"{where}: no class label (pre-training form '<path> <start> <total>') "
                    "in a list used for classification"
                )
            if label >= 0 and num_classes is not None and label >= num_classes:
                raise ListFormatError(f"{where}: label {label} outside [0, {num_classes}) (num_classes={num_classes})")
            names.append(path)
            paths.append(os.path.join(os.fspath(data_root), path) if data_root else path)
            labels.append(label)
            starts.append(start)
            totals.append(total)
    if not paths:
        raise ListFormatError(f"{list_file}: the list is empty")
    return VideoList(
        paths=np.array(paths),
        names=np.array(names),
        labels=np.array(labels, dtype=np.int64),
        starts=np.array(starts, dtype=np.int64),
        totals=np.array(totals, dtype=np.int64),
        source=list_file,
    )


def format_path(name: str) -> str:
    """A video path as a list field: unchanged (VideoMAE-compatible) unless it holds a space or
    starts with ``"``; then double-quoted with inner ``"`` doubled (what :func:`read_list` reads).

    Raises:
        ListFormatError: the path is empty, has a line break, or leading/trailing whitespace (a
            list line is stripped, so it would not read back unchanged).
    """
    if not name or "\n" in name or "\r" in name:
        raise ListFormatError(f"video path {name!r} is empty or contains a line break")
    if " " in name or name.startswith('"'):
        return '"' + name.replace('"', '""') + '"'
    if name != name.strip():
        raise ListFormatError(f"video path {name!r} starts or ends with whitespace")
    return name


def write_list(path: str | os.PathLike, entries: Iterable[Tuple[str, int]]) -> int:
    """Write ``<path> <label>`` lines (VideoMAE V1 form; paths through :func:`format_path`);
    returns the number of lines."""
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for name, label in entries:
            try:
                field = format_path(name)
            except ListFormatError as e:
                raise ListFormatError(f"{path}: {e}") from None
            f.write(f"{field} {int(label)}\n")
            n += 1
    return n


# ----------------------------------------------------------------------------- builders


@dataclass
class ListBuildReport:
    """What a builder wrote: list files, per-split counts, the class names and missing videos."""

    lists: Dict[str, str] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)
    classes: List[str] = field(default_factory=list)
    missing: Dict[str, List[str]] = field(default_factory=dict)

    def summary(self) -> str:
        """One human-readable line per split (used by ``tools/make_lists.py``)."""
        lines = [f"{len(self.classes)} classes"]
        for split, n in self.counts.items():
            miss = len(self.missing.get(split, []))
            lines.append(f"{split}: {n} videos -> {self.lists.get(split, '?')} ({miss} missing on disk)")
        return "\n".join(lines)


def _load_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ListFormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def _ssv2_template_key(template: str) -> str:
    """``"Putting [something] into [something]"`` -> ``"Putting something into something"``.

    The official labels file keys the 174 classes by the template with the brackets removed.
    """
    return template.replace("[", "").replace("]", "")


def _check_missing(names: Sequence[str], video_dir: Optional[Path]) -> List[str]:
    if video_dir is None:
        return []
    return [n for n in names if not (video_dir / n).is_file()]


def finish_split(
    report: ListBuildReport,
    split: str,
    entries: List[Tuple[str, int]],
    out_dir: Path,
    video_dir: Optional[Path],
    drop_missing: bool,
) -> None:
    missing = _check_missing([n for n, _ in entries], video_dir)
    if drop_missing and missing:
        gone = set(missing)
        entries = [e for e in entries if e[0] not in gone]
    out = out_dir / f"{split}.csv"
    report.counts[split] = write_list(out, entries)
    report.lists[split] = str(out)
    report.missing[split] = missing


def copy_val_as_test(report: ListBuildReport, out_dir: Path) -> None:
    """VideoMAE evaluates the multi-view "test" on the validation split: test.csv = val.csv."""
    dst = out_dir / "test.csv"
    shutil.copyfile(report.lists["val"], dst)
    report.lists["test"] = str(dst)
    report.counts["test"] = report.counts["val"]
    report.missing["test"] = list(report.missing["val"])


def build_ssv2_lists(
    annotation_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    video_dir: Optional[str | os.PathLike] = None,
    ext: str = ".webm",
    drop_missing: bool = False,
) -> ListBuildReport:
    """Something-Something v2 official annotations -> ``train.csv`` / ``val.csv`` / ``test.csv``.

    Reads ``something-something-v2-labels.json`` (``{template: "id"}``),
    ``something-something-v2-train.json`` and ``something-something-v2-validation.json``
    (lists of ``{"id", "label", "template", "placeholders"}``); the class of a video is the id of
    its template with the ``[something]`` brackets removed. Lines are ``<id><ext> <label>``.
    ``test.csv`` is a copy of ``val.csv`` (the official test split has no labels; VideoMAE
    reports the multi-view test on validation).

    Args:
        annotation_dir: folder with the three JSON files.
        out_dir: where the lists are written.
        video_dir: when given, videos listed but absent there are reported in ``missing``.
        ext: file extension of the videos (the official release is ``.webm``).
        drop_missing: leave videos missing on disk out of the lists.
    """
    ann = Path(annotation_dir)
    out = Path(out_dir)
    vdir = Path(video_dir) if video_dir is not None else None
    labels_file = ann / "something-something-v2-labels.json"
    label_map = _load_json(labels_file)
    if not isinstance(label_map, dict):
        raise ListFormatError(f"{labels_file}: expected a JSON object {{template: id}}")
    try:
        template_to_id = {str(k): int(v) for k, v in label_map.items()}
    except (TypeError, ValueError):
        raise ListFormatError(f"{labels_file}: class ids must be integers") from None
    ids = sorted(template_to_id.values())
    if ids != list(range(len(ids))):
        raise ListFormatError(f"{labels_file}: class ids must be 0..{len(ids) - 1} without gaps")
    report = ListBuildReport(classes=[k for k, _ in sorted(template_to_id.items(), key=lambda kv: kv[1])])
    splits = (("train", "something-something-v2-train.json"), ("val", "something-something-v2-validation.json"))
    for split, fname in splits:
        path = ann / fname
        items = _load_json(path)
        if not isinstance(items, list):
            raise ListFormatError(f"{path}: expected a JSON list of videos")
        entries: List[Tuple[str, int]] = []
        for k, item in enumerate(items):
            where = f"{path}: entry {k}"
            if not isinstance(item, dict) or "id" not in item or "template" not in item:
                raise ListFormatError(f"{where}: needs keys 'id' and 'template'")
            key = _ssv2_template_key(str(item["template"]))
            if key not in template_to_id:
                raise ListFormatError(f"{where}: template {item['template']!r} not in {labels_file.name}")
            entries.append((f"{item['id']}{ext}", template_to_id[key]))
        finish_split(report, split, entries, out, vdir, drop_missing)
    copy_val_as_test(report, out)
    return report


def k400_video_name(youtube_id: str, time_start: int, time_end: int, ext: str = ".mp4") -> str:
    """Kinetics' file naming: ``<youtube_id>_<start:06d>_<end:06d>.mp4``."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}{ext}"


_K400_FIELDS = ("label", "youtube_id", "time_start", "time_end")


def _read_k400_csv(path: Path) -> List[Tuple[str, str, int, int]]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    rows = []
    with open(path, "r", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or any(k not in reader.fieldnames for k in _K400_FIELDS):
            raise ListFormatError(
                f"{path}:1: header must contain {','.join(_K400_FIELDS)} (got {reader.fieldnames})"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise ListFormatError(f"{where}: time_start/time_end must be numbers") from None
            if not row["youtube_id"]:
                raise ListFormatError(f"{where}: empty youtube_id")
            rows.append((row["label"], row["youtube_id"], start, end))
    return rows


def build_k400_lists(
    annotation_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    video_dir: Optional[str | os.PathLike] = None,
    ext: str = ".mp4",
    class_subdirs: bool = False,
    drop_missing: bool = False,
) -> ListBuildReport:
    """Kinetics-400 official CSVs -> ``train.csv`` / ``val.csv`` / ``test.csv``.

    Reads ``train.csv`` and ``validate.csv`` (header ``label,youtube_id,time_start,time_end,split``)
    and, when present and labelled, ``test.csv``; otherwise ``test.csv`` is a copy of ``val.csv``.
    Label ids are the positions of the class names in sorted order of the training classes.
    Lines are ``<youtube_id>_<start:06d>_<end:06d>.mp4 <label>`` (prefixed with ``<label name>/``
    when ``class_subdirs``, spaces in the name replaced by ``_``). The class names are written to
    ``classes.txt`` (one per line, in id order).
    """
    ann = Path(annotation_dir)
    out = Path(out_dir)
    vdir = Path(video_dir) if video_dir is not None else None
    train_rows = _read_k400_csv(ann / "train.csv")
    classes = sorted({r[0] for r in train_rows})
    if any(not c for c in classes):
        raise ListFormatError(f"{ann / 'train.csv'}: empty class label")
    class_to_id = {c: i for i, c in enumerate(classes)}
    report = ListBuildReport(classes=classes)

    def entries_of(rows: List[Tuple[str, str, int, int]], path: Path) -> List[Tuple[str, int]]:
        entries = []
        for k, (label, ytid, start, end) in enumerate(rows):
            if label not in class_to_id:
                raise ListFormatError(f"{path}: row {k + 2}: class {label!r} does not occur in train.csv")
            name = k400_video_name(ytid, start, end, ext)
            if class_subdirs:
                name = f"{label.replace(' ', '_')}/{name}"
            entries.append((name, class_to_id[label]))
        return entries

    finish_split(report, "train", entries_of(train_rows, ann / "train.csv"), out, vdir, drop_missing)
    val_rows = _read_k400_csv(ann / "validate.csv")
    finish_split(report, "val", entries_of(val_rows, ann / "validate.csv"), out, vdir, drop_missing)
    test_path = ann / "test.csv"
    test_rows = _read_k400_csv(test_path) if test_path.is_file() else []
    if test_rows and all(r[0] for r in test_rows):
        finish_split(report, "test", entries_of(test_rows, test_path), out, vdir, drop_missing)
    else:
        copy_val_as_test(report, out)
    (out / "classes.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")
    return report
