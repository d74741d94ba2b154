"""Own videos: class-folder lists (odd inputs, stratified seeded split), UCF101 / HMDB51 lists from
realistic official split files, quoted paths with spaces — with real tiny videos decoded through
the generic data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import load_tool, write_video
from videohpm.data import build_dataset
from videohpm.data.lists import ListFormatError, format_path, read_list, write_list
from videohpm.data.folder_lists import (
    build_folder_lists,
    build_hmdb51_lists,
    build_ucf101_lists,
    scan_class_folders,
    stratified_split,
)


def _frames(n=8, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def _avi(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """An MPEG-4 Part 2 .avi like UCF101's / HMDB51's (xvid-era files)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _video(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".avi":
        return _avi(path, _frames(seed=seed))
    return write_video(path, _frames(seed=seed), "libvpx-vp9" if suffix == ".webm" else "libx264")


def _generic(lists, root, n, split="val"):
    """The data set a generic fine-tuning run builds for `split` (tiny clips)."""
    cfg = dict(dataset="generic", train=str(lists["train"]), val=str(lists.get("val", lists["train"])),
               data_root=str(root), num_classes=n, num_frames=4, sampling_rate=1, input_size=32,
               short_side_size=32, num_workers=0, backend="pyav", fallback_backend=None)
    return build_dataset(cfg, split)


# ----------------------------------------------------------------------------- list format


def test_paths_with_spaces_and_quotes_round_trip(tmp_path):
    names = ["plain/a.mp4", "my class/my video.mp4", '"quoted".mp4', 'x "y" z.webm', "ünï cödé/ö.MP4"]
    write_list(tmp_path / "l.csv", [(n, k) for k, n in enumerate(names)])
    lines = (tmp_path / "l.csv").read_text().splitlines()
    assert lines[0] == "plain/a.mp4 0"  # no space: VideoMAE's byte-identical form
    assert lines[1] == '"my class/my video.mp4" 1'
    vl = read_list(tmp_path / "l.csv", data_root="/r")
    assert vl.names.tolist() == names and vl.labels.tolist() == [0, 1, 2, 3, 4]
    assert vl.paths[1] == "/r/my class/my video.mp4"
    (tmp_path / "v2.csv").write_text('"a b.mp4" 10 32\n')
    v2 = read_list(tmp_path / "v2.csv")
    assert v2.names.tolist() == ["a b.mp4"] and v2.starts.tolist() == [10] and v2.totals.tolist() == [32]
    for bad, why in [('"a b.mp4 3', "unterminated quoted path"), ('"a b.mp4"3', "expected a space after"),
                     ("a b.mp4 3 4", "must be in double quotes"), ('"" 3', "empty quoted path")]:
        (tmp_path / "bad.csv").write_text("ok.mp4 1\n" + bad + "\n")
        with pytest.raises(ListFormatError, match=rf"bad.csv:2: .*{why}"):
            read_list(tmp_path / "bad.csv")
    assert format_path(" lead.mp4") == "\" lead.mp4\""  # quoted: survives the line strip
    for bad in ["a\nb.mp4", "", "tail.mp4\t"]:
        with pytest.raises(ListFormatError):
            format_path(bad)


# ----------------------------------------------------------------------------- class folders


@pytest.fixture()
def odd_tree(tmp_path) -> Path:
    """Class folders with every odd input: spaces, nested folders, upper-case extensions, webm and
    mp4 mixed, non-video files, hidden files and folders, an empty class, a file at the top."""
    root = tmp_path / "my videos"
    videos = ["cat/a.mp4", "cat/b.WEBM", "cat/sub dir/c.MP4", "cat/sub dir/deeper/d.mp4",
              "dog walking/x y.mp4", "dog walking/z.webm", "eel/only.avi"]
    for k, v in enumerate(videos):
        _video(root / v, seed=k)
    for other in ["cat/notes.txt", "cat/thumb.jpg", "cat/._a.mp4", "cat/x.notmp4", ".ipynb_checkpoints/a.mp4",
                  "top.mp4"]:
        (root / other).parent.mkdir(parents=True, exist_ok=True)
        (root / other).write_bytes(b"not a video")
    (root / "bird").mkdir()  # empty class folder
    return root


def test_scan_handles_odd_inputs(odd_tree):
    scan = scan_class_folders(odd_tree)
    assert scan.classes == ["bird", "cat", "dog walking", "eel"]  # sorted; hidden folder is no class
    assert scan.empty_classes == ["bird"]
    assert scan.videos == [("cat/a.mp4", 1), ("cat/b.WEBM", 1), ("cat/sub dir/c.MP4", 1),
                           ("cat/sub dir/deeper/d.mp4", 1), ("dog walking/x y.mp4", 2), ("dog walking/z.webm", 2),
                           ("eel/only.avi", 3)]
    skipped = dict(scan.skipped)
    assert set(skipped) == {"cat/notes.txt", "cat/thumb.jpg", "cat/._a.mp4", "cat/x.notmp4",
                            ".ipynb_checkpoints/", "top.mp4"}
    assert "hidden" in skipped["cat/._a.mp4"] and "not inside a class folder" in skipped["top.mp4"]


def test_folder_lists_decode_through_the_generic_dataset(odd_tree, tmp_path):
    out = tmp_path / "lists"
    rep = build_folder_lists(odd_tree, out, val_ratio=0.5, seed=3)
    assert (out / "classes.txt").read_text().splitlines() == ["bird", "cat", "dog walking", "eel"]
    assert rep.empty_classes == ["bird"] and rep.no_val == ["eel"]  # one video: stays in train
    assert "WARNING: class folder 'bird' has no videos (kept as class 0" in rep.summary()
    train, val = read_list(out / "train.csv"), read_list(out / "val.csv")
    assert sorted(train.names.tolist() + val.names.tolist()) == [v for v, _ in scan_class_folders(odd_tree).videos]
    assert np.bincount(val.labels, minlength=4).tolist() == [0, 2, 1, 0]  # round(4·½), round(2·½)
    assert (out / "test.csv").read_text() == (out / "val.csv").read_text()
    assert '"dog walking/' in (out / "train.csv").read_text() + (out / "val.csv").read_text()
    assert "cat/notes.txt\tnot a video extension" in (out / "skipped.txt").read_text()
    # every listed video (webm, mp4, avi, spaces, upper case) decodes as a generic val clip
    ds = _generic(rep.lists, odd_tree, 4, "val")
    labels = []
    for i in range(len(ds)):
        s = ds[i]
        assert s["broken"] == 0 and tuple(s["video"].shape) == (3, 4, 32, 32)
        labels.append(int(s["label"]))
    assert labels == val.labels.tolist()
    ds = _generic(rep.lists, odd_tree, 4, "train")
    assert len(ds) == 4 and all(ds[i]["broken"] == 0 for i in range(len(ds)))


def test_stratified_split_is_seeded_and_per_class(tmp_path):
    classes = ["a", "b", "c"]
    videos = [(f"a/{k:02d}.mp4", 0) for k in range(10)] + [(f"b/{k}.mp4", 1) for k in range(3)] + [("c/0.mp4", 2)]
    tr1, va1 = stratified_split(videos, classes, 0.2, seed=0)
    tr2, va2 = stratified_split(list(reversed(videos)), classes, 0.2, seed=0)
    assert (tr1, va1) == (tr2, va2)  # order of discovery does not matter
    assert np.bincount([l for _, l in va1], minlength=3).tolist() == [2, 1, 0]  # round(2), max(1, 0.6), n=1
    assert sorted(tr1 + va1) == sorted(videos) and not set(tr1) & set(va1)
    others = {stratified_split(videos, classes, 0.2, seed=s)[1][:2] == va1[:2] for s in range(1, 6)}
    assert False in others  # other seeds pick other videos
    # adding a class or videos of another class leaves class "a"'s split alone
    more = videos + [(f"b/x{k}.mp4", 1) for k in range(5)] + [("d/0.mp4", 3), ("d/1.mp4", 3)]
    _, va3 = stratified_split(more, classes + ["d"], 0.2, seed=0)
    assert [v for v in va3 if v[1] == 0] == [v for v in va1 if v[1] == 0]
    with pytest.raises(ValueError, match="val_ratio"):
        stratified_split(videos, classes, 1.0)


def test_folder_refusals_write_nothing(odd_tree, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"class folder\(s\) without videos: \['bird'\]"):
        build_folder_lists(odd_tree, out, allow_empty=False)
    with pytest.raises(FileNotFoundError, match="video folder not found"):
        build_folder_lists(tmp_path / "nope", out)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.mp4").write_bytes(b"x")
    with pytest.raises(ValueError, match="no class sub-folders"):
        build_folder_lists(tmp_path / "flat", out)
    with pytest.raises(ValueError, match="--val-ratio"):
        build_folder_lists(odd_tree, out, val_ratio=1.5)
    assert not out.exists()


def test_make_lists_folder_cli(odd_tree, tmp_path, capsys):
    main = load_tool("make_lists").main
    out = tmp_path / "cli"
    assert main(["folder", str(odd_tree), str(out), "--val-ratio", "0.25", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "4 classes" in text and "data.num_classes=4" in text and f"data.data_root={odd_tree}" in text
    assert main(["folder", str(odd_tree), str(tmp_path / "no"), "--no-empty-classes"]) == 2
    assert "without videos" in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert main(["folder", str(odd_tree), str(tmp_path / "v0"), "--val-ratio", "0"]) == 0
    assert sorted(p.name for p in (tmp_path / "v0").iterdir()) == ["classes.txt", "skipped.txt", "train.csv"]


# ----------------------------------------------------------------------------- UCF101


UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


@pytest.fixture()
def ucf(tmp_path):
    """ucfTrainTestlist as shipped (CRLF, 1-based ids, HandStandPushups' odd file-name case) and
    real .avi files under UCF-101/<Class>/."""
    ann = tmp_path / "ucfTrainTestlist"
    ann.mkdir()
    (ann / "classInd.txt").write_bytes(b"".join(f"{k + 1} {c}\r\n".encode() for k, c in enumerate(UCF_CLASSES)))

    def vid(c, g, clip):
        stem = "HandStandPushups" if c == "HandstandPushups" else c
        return f"{c}/v_{stem}_g{g:02d}_c{clip:02d}.avi"

    train = {s: [(vid(c, g, 1), k + 1) for k, c in enumerate(UCF_CLASSES) for g in (8 + s, 9 + s)] for s in (1, 2, 3)}
    test = {s: [vid(c, s, 1) for c in UCF_CLASSES] for s in (1, 2, 3)}
    for s in (1, 2, 3):
        (ann / f"trainlist0{s}.txt").write_bytes(b"".join(f"{p} {l}\r\n".encode() for p, l in train[s]))
        (ann / f"testlist0{s}.txt").write_bytes(b"".join(f"{p}\r\n".encode() for p in test[s]) + b"\r\n")
    videos = tmp_path / "UCF-101"
    for k, p in enumerate([p for p, _ in train[1]] + test[1]):
        _avi(videos / p, _frames(seed=k))
    return {"ann": ann, "videos": videos, "train": train, "test": test}


def test_ucf101_lists(ucf, tmp_path):
    out = tmp_path / "ucf_s1"
    rep = build_ucf101_lists(ucf["ann"], out, split=1, video_dir=ucf["videos"])
    assert rep.classes == UCF_CLASSES and (out / "classes.txt").read_text().splitlines() == UCF_CLASSES
    tr, va = read_list(out / "train.csv", num_classes=3), read_list(out / "val.csv", num_classes=3)
    assert tr.names.tolist() == [p for p, _ in ucf["train"][1]]
    assert tr.labels.tolist() == [l - 1 for _, l in ucf["train"][1]]  # 0-based
    assert va.names.tolist() == ucf["test"][1] and va.labels.tolist() == [0, 1, 2]
    assert rep.missing == {"train": [], "val": [], "test": []}
    ds = _generic(rep.lists, ucf["videos"], 3, "val")
    assert [int(ds[i]["label"]) for i in range(len(ds))] == [0, 1, 2] and all(ds[i]["broken"] == 0 for i in range(3))
    # split 2 reads the *02 files; its videos are not on disk here: reported, or dropped
    rep2 = build_ucf101_lists(ucf["ann"], tmp_path / "s2", split=2, video_dir=ucf["videos"], drop_missing=True)
    assert read_list(tmp_path / "s2" / "train.csv").names.tolist() == [p for p, _ in ucf["train"][2]
                                                                        if (ucf["videos"] / p).exists()]
    assert rep2.missing["val"] == ucf["test"][2]


def test_ucf101_errors(ucf, tmp_path):
    ann = ucf["ann"]
    with pytest.raises(ValueError, match="--split must be 1, 2 or 3"):
        build_ucf101_lists(ann, tmp_path / "o", split=4)
    good = (ann / "trainlist01.txt").read_bytes()
    (ann / "trainlist01.txt").write_bytes(good + b"YoYo/v_YoYo_g25_c01.avi 2\r\n")
    with pytest.raises(ListFormatError, match=r"trainlist01.txt:7: class id 2 does not match folder 'YoYo'"):
        build_ucf101_lists(ann, tmp_path / "o")
    (ann / "trainlist01.txt").write_bytes(good + b"Juggling/v_Juggling_g01_c01.avi 3\r\n")
    with pytest.raises(ListFormatError, match=r"trainlist01.txt:7: class folder 'Juggling' is not in classInd"):
        build_ucf101_lists(ann, tmp_path / "o")
    (ann / "trainlist01.txt").write_bytes(good + b"YoYo/v_YoYo_g25_c01.avi\r\n")
    with pytest.raises(ListFormatError, match=r"trainlist01.txt:7: a training list line needs"):
        build_ucf101_lists(ann, tmp_path / "o")
    (ann / "trainlist01.txt").write_bytes(good)
    (ann / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 YoYo\n")
    with pytest.raises(ListFormatError, match=r"classInd.txt: class ids must be 1..2"):
        build_ucf101_lists(ann, tmp_path / "o")
    (ann / "classInd.txt").unlink()
    with pytest.raises(FileNotFoundError, match="classInd.txt"):
        build_ucf101_lists(ann, tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- HMDB51


HMDB = {  # class -> [(video, split-1 code)], names as in testTrainMulti_7030_splits
    "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1), ("April_09_brush_hair_u_nm_np1_ba_goo_1.avi", 2),
                   ("Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi", 0)],
    "clap": [("#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", 1), ("#20_Rhythm_clap_u_nm_np1_fr_goo_1.avi", 1),
             ("Kurt_Clapping_clap_u_cm_np1_fr_med_0.avi", 2)],
    "sword_exercise": [("Blade_Of_Fury_-_Scene_1_sword_exercise_f_cm_np1_ri_med_3.avi", 2),
                       ("Sword_Exercise_(Kata)_sword_exercise_f_cm_np1_fr_bad_1.avi", 1)],
}


@pytest.fixture()
def hmdb(tmp_path):
    ann = tmp_path / "testTrainMulti_7030_splits"
    ann.mkdir()
    for cls, rows in HMDB.items():
        for s in (1, 2, 3):
            codes = [c if s == 1 else (3 - c if c else 0) for _, c in rows]  # other splits differ
            # official files: "<video> <code> " with a trailing space, LF line ends
            (ann / f"{cls}_test_split{s}.txt").write_text("".join(f"{v} {c} \n" for (v, _), c in zip(rows, codes)))
    videos = tmp_path / "hmdb51"
    for k, (cls, rows) in enumerate(HMDB.items()):
        for j, (v, code) in enumerate(rows):
            if code:
                _avi(videos / cls / v, _frames(seed=10 * k + j))
    return {"ann": ann, "videos": videos}


def test_hmdb51_lists(hmdb, tmp_path):
    out = tmp_path / "h1"
    rep = build_hmdb51_lists(hmdb["ann"], out, split=1, video_dir=hmdb["videos"])
    classes = sorted(HMDB)
    assert rep.classes == classes and (out / "classes.txt").read_text().splitlines() == classes
    want = {code: [(f"{c}/{v}", classes.index(c)) for c in classes for v, k in HMDB[c] if k == code] for code in (1, 2)}
    tr, va = read_list(out / "train.csv"), read_list(out / "val.csv")
    assert list(zip(tr.names.tolist(), tr.labels.tolist())) == want[1]
    assert list(zip(va.names.tolist(), va.labels.tolist())) == want[2]  # 0 (unused) left out
    assert rep.missing == {"train": [], "val": [], "test": []}
    ds = _generic(rep.lists, hmdb["videos"], 3, "val")
    assert [int(ds[i]["label"]) for i in range(len(ds))] == [l for _, l in want[2]]
    assert all(ds[i]["broken"] == 0 for i in range(len(ds)))
    # split 2 swaps train/test in this fake set
    build_hmdb51_lists(hmdb["ann"], tmp_path / "h2", split=2)
    assert read_list(tmp_path / "h2" / "train.csv").names.tolist() == [n for n, _ in want[2]]


def test_hmdb51_errors(hmdb, tmp_path):
    ann = hmdb["ann"]
    with pytest.raises(ValueError, match="--split must be 1, 2 or 3"):
        build_hmdb51_lists(ann, tmp_path / "o", split=0)
    f = ann / "clap_test_split1.txt"
    f.write_text(f.read_text() + "\nbroken_line_without_code.avi\n")
    with pytest.raises(ListFormatError, match=r"clap_test_split1.txt:5: expected '<video> <0\|1\|2>'"):
        build_hmdb51_lists(ann, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="no '<class>_test_split1.txt' files"):
        build_hmdb51_lists(tmp_path, tmp_path / "o")
    for p in ann.glob("*_test_split3.txt"):
        p.write_text("".join(f"{line.split()[0]} 0\n" for line in p.read_text().splitlines()))
    with pytest.raises(ListFormatError, match=r"no video marked 1 \(train\)"):
        build_hmdb51_lists(ann, tmp_path / "o", split=3)
    assert not (tmp_path / "o").exists()


def test_make_lists_ucf_hmdb_cli(ucf, hmdb, tmp_path, capsys):
    main = load_tool("make_lists").main
    assert main(["ucf101", str(ucf["ann"]), str(tmp_path / "u"), "--split", "1", "--video-dir", str(ucf["videos"])]) == 0
    assert "data.num_classes=3" in capsys.readouterr().out
    assert main(["hmdb51", str(hmdb["ann"]), str(tmp_path / "h"), "--split", "2"]) == 0
    assert len(read_list(tmp_path / "h" / "val.csv")) == 4
    assert main(["hmdb51", str(hmdb["ann"]), str(tmp_path / "x"), "--split", "5"]) == 2
    assert "--split must be" in capsys.readouterr().err
