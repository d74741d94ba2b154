"""List files: parsing, validation errors with file:line, and both builders from official annotations."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from .conftest import load_tool
from videohpm.data.lists import ListFormatError, build_k400_lists, build_ssv2_lists, read_list


def _write(path, text):
    path.write_text(text)
    return path


def test_v1_list_with_data_root(tmp_path):
    f = _write(tmp_path / "train.csv", "a/1.webm 3\nb/2.webm 0\r\n\n/abs/3.mp4 173\n")
    vl = read_list(f, data_root="/data/ssv2", num_classes=174)
    assert len(vl) == 3
    assert vl.paths.tolist() == ["/data/ssv2/a/1.webm", "/data/ssv2/b/2.webm", "/abs/3.mp4"]
    assert vl.names.tolist() == ["a/1.webm", "b/2.webm", "/abs/3.mp4"]
    assert vl.labels.tolist() == [3, 0, 173]
    assert vl.starts.tolist() == [0, 0, 0] and vl.totals.tolist() == [-1, -1, -1]
    assert vl.has_labels


def test_v2_pretrain_form(tmp_path):
    f = _write(tmp_path / "pretrain.csv", "x.mp4 0 -1\ny.mp4 10 32\n")
    vl = read_list(f)
    assert vl.labels.tolist() == [-1, -1]
    assert vl.starts.tolist() == [0, 10] and vl.totals.tolist() == [-1, 32]
    assert not vl.has_labels
    with pytest.raises(ListFormatError, match=r"pretrain.csv:1: no class label"):
        read_list(f, require_labels=True)


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("a.mp4 1\nb.mp4 x\n", 2, "label 'x' is not an integer"),
        ("a.mp4 1\nb.mp4 5\n", 2, r"label 5 outside \[0, 5\)"),
        ("a.mp4 -2\n", 1, "label -2 is negative"),
        ("a.mp4\n", 1, "expected '<path> <label>'"),
        ("a b c d\n", 1, "4 fields found"),
        ("a.mp4  1\n", 1, "exactly one space"),
        ("a.mp4\t1\n", 1, "expected '<path> <label>'"),
        ("ok.mp4 0\na.mp4 0 0\n", 2, "total_frames 0"),
        ("a.mp4 -1 5\n", 1, "start_frame -1 is negative"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, text, line, reason):
    f = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ListFormatError, match=rf"bad.csv:{line}: .*{reason}"):
        read_list(f, num_classes=5)


def test_missing_and_empty_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_list(tmp_path / "nope.csv")
    with pytest.raises(ListFormatError, match="empty"):
        read_list(_write(tmp_path / "empty.csv", "\n\n"))


def test_paths_are_numpy_arrays_not_python_lists(tmp_path):
    # no per-entry Python objects: DataLoader workers do not copy the list pages on access
    vl = read_list(_write(tmp_path / "l.csv", "".join(f"v{i}.mp4 {i % 3}\n" for i in range(100))))
    assert isinstance(vl.paths, np.ndarray) and vl.paths.dtype.kind == "U"
    assert vl.labels.dtype == np.int64


# ----------------------------------------------------------------------------- SSv2 builder


def _ssv2_annotations(d):
    d.mkdir()
    labels = {"Moving something up": "1", "Putting something into something": "0", "Pushing something left": "2"}
    train = [
        {"id": "11", "label": "putting a pen into a cup", "template": "Putting [something] into [something]",
         "placeholders": ["a pen", "a cup"]},
        {"id": "12", "label": "moving a cup up", "template": "Moving [something] up", "placeholders": ["a cup"]},
        {"id": "13", "label": "pushing box left", "template": "Pushing [something] left", "placeholders": ["box"]},
    ]
    val = [{"id": "21", "label": "moving pen up", "template": "Moving [something] up", "placeholders": ["pen"]}]
    (d / "something-something-v2-labels.json").write_text(json.dumps(labels))
    (d / "something-something-v2-train.json").write_text(json.dumps(train))
    (d / "something-something-v2-validation.json").write_text(json.dumps(val))
    return d


def test_ssv2_builder(tmp_path):
    ann = _ssv2_annotations(tmp_path / "ann")
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in ("11", "13", "21"):
        (videos / f"{vid}.webm").write_bytes(b"x")
    rep = build_ssv2_lists(ann, tmp_path / "lists", video_dir=videos)
    assert (tmp_path / "lists" / "train.csv").read_text() == "11.webm 0\n12.webm 1\n13.webm 2\n"
    assert (tmp_path / "lists" / "val.csv").read_text() == "21.webm 1\n"
    assert (tmp_path / "lists" / "test.csv").read_text() == "21.webm 1\n"  # VideoMAE: test = val
    assert rep.missing["train"] == ["12.webm"] and rep.missing["val"] == []
    assert rep.classes == ["Putting something into something", "Moving something up", "Pushing something left"]
    assert rep.counts == {"train": 3, "val": 1, "test": 1}
    # the lists it writes are valid lists
    assert read_list(rep.lists["train"], num_classes=3).labels.tolist() == [0, 1, 2]
    rep = build_ssv2_lists(ann, tmp_path / "lists2", video_dir=videos, drop_missing=True)
    assert (tmp_path / "lists2" / "train.csv").read_text() == "11.webm 0\n13.webm 2\n"


def test_ssv2_builder_errors(tmp_path):
    ann = _ssv2_annotations(tmp_path / "ann")
    items = json.loads((ann / "something-something-v2-train.json").read_text())
    items.append({"id": "99", "template": "Throwing [something]"})
    (ann / "something-something-v2-train.json").write_text(json.dumps(items))
    with pytest.raises(ListFormatError, match=r"train.json: entry 3: template 'Throwing \[something\]' not in"):
        build_ssv2_lists(ann, tmp_path / "out")
    (ann / "something-something-v2-train.json").write_text("[{")
    with pytest.raises(ListFormatError, match="invalid JSON"):
        build_ssv2_lists(ann, tmp_path / "out")
    os.remove(ann / "something-something-v2-labels.json")
    with pytest.raises(FileNotFoundError, match="labels.json"):
        build_ssv2_lists(ann, tmp_path / "out")


# ----------------------------------------------------------------------------- K400 builder


def _k400_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerows(rows)


def test_k400_builder(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    _k400_csv(ann / "train.csv", [
        ("zumba", "AAAAAAAAAAA", 14, 24, "train"),
        ("abseiling", "BBBBBBBBBBB", 0, 10, "train"),
        ("passing American football (in game)", "CCC-_CCCCCC", 125, 135, "train"),
    ])
    _k400_csv(ann / "validate.csv", [("zumba", "DDDDDDDDDDD", 3, 13, "validate")])
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "AAAAAAAAAAA_000014_000024.mp4").write_bytes(b"x")
    rep = build_k400_lists(ann, tmp_path / "lists", video_dir=videos)
    # ids from the sorted class names
    assert rep.classes == ["abseiling", "passing American football (in game)", "zumba"]
    assert (tmp_path / "lists" / "train.csv").read_text() == (
        "AAAAAAAAAAA_000014_000024.mp4 2\nBBBBBBBBBBB_000000_000010.mp4 0\nCCC-_CCCCCC_000125_000135.mp4 1\n"
    )
    assert (tmp_path / "lists" / "val.csv").read_text() == "DDDDDDDDDDD_000003_000013.mp4 2\n"
    assert (tmp_path / "lists" / "test.csv").read_text() == "DDDDDDDDDDD_000003_000013.mp4 2\n"
    assert (tmp_path / "lists" / "classes.txt").read_text().splitlines() == rep.classes
    assert rep.missing["train"] == ["BBBBBBBBBBB_000000_000010.mp4", "CCC-_CCCCCC_000125_000135.mp4"]
    assert rep.missing["val"] == ["DDDDDDDDDDD_000003_000013.mp4"]
    rep = build_k400_lists(ann, tmp_path / "sub", class_subdirs=True)
    assert (tmp_path / "sub" / "train.csv").read_text().splitlines()[2] == (
        "passing_American_football_(in_game)/CCC-_CCCCCC_000125_000135.mp4 1"
    )


def test_k400_builder_errors(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    _k400_csv(ann / "train.csv", [("zumba", "AAAAAAAAAAA", 14, 24, "train")])
    _k400_csv(ann / "validate.csv", [("yoga", "DDDDDDDDDDD", 3, 13, "validate")])
    with pytest.raises(ListFormatError, match="validate.csv: row 2: class 'yoga' does not occur in train.csv"):
        build_k400_lists(ann, tmp_path / "out")
    (ann / "train.csv").write_text("label,youtube_id\nzumba,AAA\n")
    with pytest.raises(ListFormatError, match=r"train.csv:1: header must contain"):
        build_k400_lists(ann, tmp_path / "out")
    _k400_csv(ann / "train.csv", [("zumba", "AAAAAAAAAAA", "soon", 24, "train")])
    with pytest.raises(ListFormatError, match=r"train.csv:2: time_start/time_end must be numbers"):
        build_k400_lists(ann, tmp_path / "out")


def test_make_lists_tool(tmp_path, capsys):
    main = load_tool("make_lists").main

    ann = _ssv2_annotations(tmp_path / "ann")
    videos = tmp_path / "videos"
    videos.mkdir()
    assert main(["ssv2", str(ann), str(tmp_path / "out"), "--video-dir", str(videos)]) == 0
    out = capsys.readouterr().out
    assert "train: 3 videos" in out and "(3 missing on disk)" in out
    assert (tmp_path / "out" / "missing_train.txt").read_text().split() == ["11.webm", "12.webm", "13.webm"]


# ----------------------------------------------------------------------------- data_lists/

DATA_LISTS = Path(__file__).resolve().parents[2] / "data_lists"


def test_shipped_example_lists_parse():
    ssv2 = read_list(DATA_LISTS / "examples" / "ssv2_train.csv", num_classes=174, require_labels=True)
    assert ssv2.labels.tolist() == [110, 27, 166]
    assert len(read_list(DATA_LISTS / "examples" / "k400_train.csv", num_classes=400, require_labels=True)) == 3
    v2 = read_list(DATA_LISTS / "examples" / "pretrain_v2.csv")
    assert v2.totals.tolist() == [-1, -1, 1800] and v2.starts.tolist() == [0, 0, 300]


@pytest.mark.parametrize("fmt, ext", [("ssv2", ".webm"), ("k400", ".mp4")])
def test_shipped_demo_lists(fmt, ext):
    counts = {"train": 24, "val": 8, "test": 8}
    for split, per_class in counts.items():
        vl = read_list(DATA_LISTS / "demo" / fmt / f"{split}.csv", num_classes=8, require_labels=True)
        assert np.bincount(vl.labels, minlength=8).tolist() == [per_class] * 8
        assert all(n.endswith(ext) for n in vl.names)
