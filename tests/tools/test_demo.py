"""`make demo` / `make demo-ablation` orchestration (tools/lib/demo.py, ablation.py, report.py, stages.py;
tools/demo.py, tools/ablation.py).

The smoke demo runs the real pipeline end to end — demo data, HPM pre-training, fine-tuning and the
multi-view test for video and image mode, figures, REPORT.md — on the tiny data variant with
1-epoch configs (`configs/demo/smoke/`), in process (no interpreter start per stage). A second run
must reuse every stage; a stage whose settings changed must be redone; a failing tool must stop
the run with its log. The ablation's configs are built on the meta device (full and smoke size)
and its table math is checked against `statistics`.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path

import pytest

import videohpm.data  # noqa: F401  (loads PyAV before decord, see videohpm/data/video.py)
from tools.lib import ablation
from tools.lib import demo as vdemo
from tools.lib.demo_stages import DemoOptions
from tools.lib.label_scarce import few_label_list
from tools.lib.report import SIZED_FOR_GFLOPS
from tools.lib.stages import DemoError, StageRunner

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory):
    """One smoke run of tools/demo.py (in process); returns (out dir, summary, stdout)."""
    import demo as demo_tool  # tools/demo.py

    out = tmp_path_factory.mktemp("demo")
    rc = demo_tool.main(["--smoke", "--in-process", "--out", str(out), "--num-vis", "1"])
    assert rc == 0
    return out, json.loads((out / "summary.json").read_text())


def test_smoke_demo_writes_report_with_real_numbers(smoke_demo):
    out, summary = smoke_demo
    report = (out / "REPORT.md").read_text()
    # accuracy table: one row per set, chance next to it
    rows = [ln for ln in report.splitlines() if ln.startswith("| video —") or ln.startswith("| image —")]
    assert len(rows) == 2, report
    for kind, row in zip(("video", "image"), rows):
        r = summary["results"][kind]
        assert isinstance(r["top1"], float) and 0.0 <= r["top1"] <= 100.0
        assert 0.0 <= r["top5"] <= 100.0 and r["top5"] >= r["top1"]
        assert r["chance"] == pytest.approx(100.0 / r["num_classes"])
        assert f"**{r['top1']:.1f}**" in row and f"| {r['chance']:.1f} |" in row
        metrics = json.loads((out / kind / "test" / "metrics.json").read_text())
        assert metrics["top1"] == r["top1"] and metrics["num_videos"] == r["num_videos"] > 0
    assert summary["results"]["video"]["num_videos"] == 8  # tiny variant: 1 val video per class
    assert summary["results"]["video"]["clips"] * summary["results"]["video"]["crops"] == 2
    # HPM ran: α_t grew from α_0 = 0 (Eq. 8) and the loss parts were logged as numbers
    h = summary["results"]["video"]["hpm"]
    assert h["alpha"]["first"] == pytest.approx(0.0, abs=1e-6) and h["alpha"]["last"] > h["alpha"]["first"]
    assert all(math.isfinite(h[k]["last"]) for k in ("loss", "loss_rec", "loss_pred"))
    # figures: 4 curve PNGs and Fig. 2 PNG + GIF per drawn input, all linked from the report
    pngs = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", report)
    assert len(pngs) == 4 + 1 + 1  # curves of 4 runs, Fig. 2 of 1 video and 1 image
    for rel in pngs:
        f = out / rel
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    fig2 = summary["figures"]["fig2"]
    assert len(fig2["video"]) == 1 and len(fig2["image"]) == 1
    for it in fig2["video"] + fig2["image"]:
        assert (out / "figures" / it["animation"]).read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    # the header says what machine the timings are from: the calibration GEMM, ATen's level, kernels
    import torch

    m = summary["machine"]
    header = report.split("\n## ")[0]
    assert m["gemm_gflops_1thread"] > 0.5 and m["aten"] == torch.backends.cpu.get_cpu_capability()
    assert f"calibration {m['gemm_gflops_1thread']:.0f} GFLOP/s (1-thread fp32 1024³ GEMM)" in header
    assert f"~{SIZED_FOR_GFLOPS:.0f} GFLOP/s" in header
    # every stage timed, every tool's run folder complete
    assert set(summary["stages"]) == {"data", "video pre-training", "video fine-tuning", "video test",
                                      "image pre-training", "image fine-tuning", "image test", "figures",
                                      "video predict", *(f"video label-scarce {row} {stage}"
                                                         for row in ("pretrained", "scratch")
                                                         for stage in ("features train", "features val",
                                                                       "features test", "probe", "fine-tuning",
                                                                       "test"))}
    assert all(t["status"] == "ran" and t["seconds"] >= 0 for t in summary["stages"].values())
    # the label-scarce section: the probe and LP-FT from it, pre-trained encoder and no pre-training
    probe = summary["label_scarce"]
    assert probe["per_class"] == 1 and probe["val_per_class"] == 0 and probe["chance"] == pytest.approx(12.5)
    section = report[report.index("## What pre-training gave"):].split("\n## ")[0]
    for row, label in (("pretrained", "| HPM pre-training"), ("scratch", "| no pre-training")):
        r, f = probe["rows"][row], probe["lpft"][row]
        assert (r["n_train"], r["n_test"], f["n_test"]) == (8, 8, 8) and 0.0 <= r["test_top1"] <= 100.0
        # LP-FT starts as the probe (same validation top-1) and keeps its best validation epoch
        assert f["start_val_top1"] == pytest.approx(r["val_top1"], abs=1e-9)
        assert f["kept_val_top1"] >= r["val_top1"] and f["kept_val_top1"] == max(f["val_top1_by_epoch"].values())
        lines = [ln for ln in section.splitlines() if ln.startswith(label)]
        assert f"| frozen probe | **{r['test_top1']:.1f}** | {r['test_stderr']:.1f} |" in lines[0]
        assert f"| LP-FT | **{f['test_top1']:.1f}** | {f['test_stderr']:.1f} | {f['kept_val_top1']:.1f} | " \
               f"epoch {f['kept_epoch']} | 12.5 |" in lines[1]
    assert report.index("## What pre-training gave") < report.index("## Models and HPM pre-training")
    for name, rows in (("probe", probe["rows"]), ("LP-FT", probe["lpft"])):
        a, b = rows["pretrained"]["test_top1"], rows["scratch"]["test_top1"]
        se = math.sqrt(a * (100 - a) / 8 + b * (100 - b) / 8)  # binomial s.e. of the difference, in points
        assert f"{name} {a - b:+.1f} ± {se:.1f} points" in section
    assert "λ and the LP-FT epoch chosen on the test list itself (smoke" in section
    # the report ends with tools/predict.py on two demo videos: its command and one answer line each
    tail = report[report.index("## Answers for two demo videos"):]
    assert "$ python tools/predict.py checkpoint=" in tail and "## " not in tail[3:]
    answers = json.loads((out / "video" / "predict" / "predictions.json").read_text())["predictions"]
    assert len(answers) == 2 and all(len(a["top"]) == 3 for a in answers)
    for a in answers:
        assert f"{a['top'][0]['name']} {a['top'][0]['prob']:.4f} | " in tail
    for kind in ("video", "image"):
        for run in ("pretrain", "finetune"):
            assert (out / kind / run / "model_final.pth").is_file()
            assert json.loads((out / kind / run / ".stage.json").read_text())["status"] == "done"


def test_calibration_gemm_restores_the_thread_setting():
    import torch

    from tools.lib.benchmarks.calibrate import gemm_gflops

    before = torch.get_num_threads()
    rate = gemm_gflops(n=256, repeats=2, min_seconds=0.02)
    assert torch.get_num_threads() == before and 0.5 < rate < 1e5


def test_rerun_reuses_finished_stages_and_redoes_changed_ones(smoke_demo, capsys):
    import demo as demo_tool

    out, first = smoke_demo
    mtime = (out / "video" / "pretrain" / "model_final.pth").stat().st_mtime
    assert demo_tool.main(["--smoke", "--in-process", "--out", str(out), "--num-vis", "1"]) == 0
    second = json.loads((out / "summary.json").read_text())
    assert all(t["status"] == "reused" for t in second["stages"].values()), second["stages"]
    assert (out / "video" / "pretrain" / "model_final.pth").stat().st_mtime == mtime
    assert second["results"]["video"]["top1"] == first["results"]["video"]["top1"]
    assert "up to date" in capsys.readouterr().out
    # a changed setting (fine-tuning epochs) redoes that stage and what depends on it only
    assert demo_tool.main(["--smoke", "--in-process", "--out", str(out), "--num-vis", "1", "--no-images",
                           "--epochs", "video_finetune=2"]) == 0
    third = json.loads((out / "summary.json").read_text())
    st = third["stages"]
    assert st["data"]["status"] == "reused"
    assert st["video pre-training"]["status"] == "reused"
    assert st["video fine-tuning"]["status"] == "ran" and st["video test"]["status"] == "ran"
    assert third["results"]["video"]["finetune_epochs"] == 2
    assert (out / "video" / "pretrain" / "model_final.pth").stat().st_mtime == mtime
    # a redone pre-training redoes the fine-tuning that starts from it (same path, new weights)
    assert demo_tool.main(["--smoke", "--in-process", "--out", str(out), "--num-vis", "1", "--no-images",
                           "--epochs", "video_finetune=2", "video_pretrain=2"]) == 0
    st = json.loads((out / "summary.json").read_text())["stages"]
    assert st["data"]["status"] == "reused"
    assert all(st[k]["status"] == "ran" for k in ("video pre-training", "video fine-tuning", "video test"))
    assert (out / "video" / "pretrain" / "model_final.pth").stat().st_mtime > mtime


def test_overwrite_refuses_folders_the_demo_did_not_write(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not written by the demo"):
        vdemo.run_demo(DemoOptions(out_dir=str(tmp_path), smoke=True, in_process=True, overwrite=True))
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_failing_tool_stops_with_its_log(tmp_path, capsys):
    runner = StageRunner(tmp_path, DemoOptions(out_dir=str(tmp_path)))
    code = "import sys; print('step 1 fine'); print('boom: bad key', file=sys.stderr); sys.exit(3)"
    cmd = [sys.executable, "-c", code]
    with pytest.raises(DemoError) as e:
        runner.stage("broken", "a failing tool", tmp_path / "broken", {"k": 1}, lambda: runner.command("broken", cmd))
    msg = str(e.value)
    assert "exit status 3" in msg and "boom: bad key" in msg and "broken.log" in msg
    log = (tmp_path / "logs" / "broken.log").read_text()
    assert "step 1 fine" in log and "boom: bad key" in log
    assert "step 1 fine" in capsys.readouterr().out  # shown live too
    # the stage is not marked done: the next run does it again
    assert json.loads((tmp_path / "broken" / ".stage.json").read_text())["status"] == "running"
    ran = []
    runner.stage("broken", "now fixed", tmp_path / "broken", {"k": 1}, lambda: ran.append(1))
    assert ran == [1]


@pytest.mark.parametrize("smoke", [False, True])
def test_ablation_variants_build_with_their_mask_and_objective(smoke):
    """Every pre-training config of the ablation loads and builds (meta device) with the intended
    mask strategy and recipe switches; the model geometry is the demo's (same budget)."""
    from videohpm.config import load_config
    from videohpm.engine.build import check_buildable

    opts = DemoOptions(smoke=smoke)
    base = load_config(str(opts.config("pretrain_video_hpm")))
    want = {"mae_tube": ("tube", "mae"), "mae_frame": ("frame", "mae"), "hpm_pred_random": ("frame", "hpm"),
            "hpm": ("hpm", "hpm")}
    for v in ablation.ABLATION_VARIANTS:
        if v.pretrain is None:
            continue
        cfg = load_config(str(opts.config(v.pretrain)))
        check_buildable(cfg)
        assert (cfg.mask.name, cfg.method.name) == want[v.name]
        assert cfg.mask.kwargs.mask_ratio == base.mask.kwargs.mask_ratio
        for key in ("embed_dim", "depth", "num_frames", "img_size", "patch_size"):
            assert cfg.model.kwargs[key] == base.model.kwargs[key]
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr) == (base.train.epochs, base.train.batch_size,
                                                                          base.optim.lr)
        if v.name == "hpm_pred_random":
            assert cfg.method.kwargs.loss_pred == "relative" and cfg.method.kwargs.learn_to_mask is False


def test_ablation_summary_matches_statistics():
    results = {"hpm": {0: {"top1": 50.0, "top5": 90.0}, 1: {"top1": 56.25, "top5": 95.3},
                       2: {"top1": 43.75, "top5": 88.0}},
               "mae_frame": {0: {"top1": 40.0, "top5": 80.0}}}
    s = ablation.summarize_ablation(results)
    assert s["hpm"]["top1_mean"] == pytest.approx(statistics.mean([50.0, 56.25, 43.75]))
    assert s["hpm"]["top1_std"] == pytest.approx(statistics.stdev([50.0, 56.25, 43.75]))
    assert s["hpm"]["top5_std"] == pytest.approx(statistics.stdev([90.0, 95.3, 88.0]))
    assert s["mae_frame"]["top1_std"] == 0.0 and s["mae_frame"]["n"] == 1
    table = ablation.format_ablation_table(ablation.ABLATION_VARIANTS, s, results, 12.5)
    hpm_row = next(ln for ln in table.splitlines() if ln.startswith("| HPM: learn to mask"))
    assert "50.0 ± 6.2" in hpm_row and "+10.0" in hpm_row and "50.0, 56.2, 43.8" in hpm_row
    assert "| *chance* | | | 12.5 |" in table and "k-NN" not in table  # not measured: no column
    # with the frozen encoder's k-NN top-1 per seed, a last column of its mean ± std
    for seed, knn in zip((0, 1, 2), (20.0, 30.0, 40.0)):
        results["hpm"][seed]["knn_top1"] = knn
    s = ablation.summarize_ablation(results)
    assert s["hpm"]["knn_top1_mean"] == 30.0 and s["hpm"]["knn_top1_std"] == pytest.approx(10.0)
    assert "knn_top1_mean" not in s["mae_frame"]
    table = ablation.format_ablation_table(ablation.ABLATION_VARIANTS, s, results, 12.5)
    rows = {ln.split("|")[1].strip(): ln.split("|") for ln in table.splitlines()}
    assert rows["HPM: learn to mask (easy-to-hard)"][8].strip() == "30.0 ± 10.0"
    assert rows["MAE, per-frame random masking"][8].strip() == "–"
    assert rows["*chance*"][8].strip() == "12.5" and "frozen encoder" in table.splitlines()[0]


def test_smoke_ablation_two_variants(smoke_demo):
    """tools/ablation.py end to end on the smoke demo's folder (its data stage is reused)."""
    import ablation as ablation_tool  # tools/ablation.py

    out, _ = smoke_demo
    assert ablation_tool.main(["--smoke", "--in-process", "--out", str(out), "--seeds", "0",
                               "--variants", "scratch", "mae_tube", "--labels-per-class", "1"]) == 0
    doc = json.loads((out / "ablation" / "ablation.json").read_text())
    assert set(doc["results"]) == {"scratch", "mae_tube"}
    assert doc["stages"]["data"]["status"] == "reused"
    assert "seed 0 scratch pre-training" not in doc["stages"]  # no pre-training row
    # k-NN of the frozen encoder: the random initialisation for "no pre-training", the
    # pre-trained checkpoint otherwise; its top-1 is in the results and the table's last column
    knn_args = json.loads((out / "ablation" / "seed0" / "scratch" / "knn" / ".stage.json").read_text())
    assert "--random-init" in knn_args["settings"]["args"]
    knn_args = json.loads((out / "ablation" / "seed0" / "mae_tube" / "knn" / ".stage.json").read_text())
    assert any(a.startswith("checkpoint=") and a.endswith("model_final.pth") for a in knn_args["settings"]["args"])
    # few-label fine-tuning: 1 video per class (the first of each class in the train list), as
    # half the optimizer steps of the full fine-tuning (epochs × the list's shrink factor / 2)
    few = (out / "ablation" / "train_1_per_class.csv").read_text().splitlines()
    full = [ln for ln in Path(doc_train_list(out)).read_text().splitlines() if ln.strip()]
    assert sorted(ln.split()[-1] for ln in few) == sorted({ln.split()[-1] for ln in full})
    assert few == [next(ln for ln in full if ln.split()[-1] == y) for y in [f.split()[-1] for f in few]]
    few_args = json.loads((out / "ablation" / "seed0" / "mae_tube" / "finetune_1pc" / ".stage.json").read_text())
    factor = len(full) // len(few)
    assert f"train.epochs={max(1, factor // 2)}" in few_args["settings"]["args"]  # smoke fine-tuning: 1 epoch
    assert any(a.endswith("train_1_per_class.csv") for a in few_args["settings"]["args"])
    assert "few-label fine-tuning" in (out / "ablation" / "ABLATION.md").read_text()
    for name in ("scratch", "mae_tube"):
        m = json.loads((out / "ablation" / "seed0" / name / "test_1pc" / "metrics.json").read_text())
        assert doc["results"][name]["0"]["few_top1"] == m["top1"]
    for name in ("scratch", "mae_tube"):
        knn = json.loads((out / "ablation" / "seed0" / name / "knn" / "knn.json").read_text())
        assert doc["results"][name]["0"]["knn_top1"] == knn["knn_top1"] and knn["knn_val_samples"] == 8
    assert (out / "ablation" / "seed0" / "mae_tube" / "pretrain" / "model_final.pth").is_file()
    cfg = json.loads((out / "ablation" / "seed0" / "scratch" / "finetune" / ".stage.json").read_text())
    assert "model.pretrained=null" in cfg["settings"]["args"]
    text = (out / "ablation" / "ABLATION.md").read_text()
    for label in ("no pre-training", "MAE, tube masking"):
        row = next(ln for ln in text.splitlines() if ln.startswith(f"| {label}"))
        top1 = float(row.split("|")[4].split("±")[0])
        assert top1 == doc["results"]["scratch" if label.startswith("no") else "mae_tube"]["0"]["top1"]
    # the demo ran in this folder first: its report now carries the same table (and summary.json the text)
    report = (out / "REPORT.md").read_text()
    assert "## Ablation on the same data" in report
    section = report.split("## Ablation on the same data", 1)[1].split("\n## ", 1)[0]
    for ln in text.splitlines():
        if ln.startswith("| no pre-training") or ln.startswith("| MAE, tube masking"):
            assert ln in section.splitlines()
    assert json.loads((out / "summary.json").read_text())["ablation"] == text
    assert report.index("## Ablation") < report.index("## Stage timings")


def doc_train_list(out: Path) -> str:
    """The video train list the demo's data stage wrote (from its `data/demo.json`)."""
    meta = json.loads((out / "data" / "demo.json").read_text())
    return meta["lists"]["ssv2"]["train"]


@pytest.mark.slow
def test_smoke_demo_through_subprocesses_and_two_ranks(tmp_path):
    """The default (subprocess) path with the `deepspeed` launcher and two CPU ranks: the per-rank
    batch is halved so the global batch (and lr) stay the config's; tools' output lands in logs/."""
    import demo as demo_tool

    assert demo_tool.main(["--smoke", "--ranks", "2", "--no-images", "--num-vis", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["results"]["video"]["top1"] <= 100.0 and summary["ranks"] == 2
    cfg = (tmp_path / "video" / "pretrain" / "config.yaml").read_text()
    assert re.search(r"^  batch_size: 2$", cfg, re.M)  # smoke config: 4 clips / 2 ranks
    log = (tmp_path / "logs" / "video_pre-training.log").read_text()
    assert "deepspeed" in log.splitlines()[1] and "rank 0/2" in log


def test_few_label_list_takes_the_first_videos_of_every_class(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_text("a.webm 0\nb.webm 1\nc.webm 0\nd.webm 12 1\ne.webm 0\n\n")  # VideoMAE "path [frames] label"
    few = few_label_list(lst, 2, tmp_path / "few" / "train_2.csv")
    assert (few["videos"], few["lines"], few["repeat"]) == (4, 4, 1)
    assert Path(few["path"]).read_text().splitlines() == ["a.webm 0", "b.webm 1", "c.webm 0", "d.webm 12 1"]
    with pytest.raises(DemoError, match=r"class\(es\) \['1'\] have fewer than 3"):
        few_label_list(lst, 3, tmp_path / "few" / "train_3.csv")
