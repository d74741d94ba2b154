"""The data-efficiency benchmark runner (tools/ssl_benchmark.py, tools/lib/ssl_benchmark.py, label_scarce.py) on a
smoke-sized variant: every stage (generated data, pre-training, time-sliced features + probe,
label-scarce fine-tuning, multi-view test), the table, resume, and the checks before any work."""
import json
from pathlib import Path

import pytest

import videohpm.data  # noqa: F401  (PyAV before decord)
from tools.lib.label_scarce import demo_label_scarce_probe, few_label_list
from tools.lib.ssl_benchmark import (CONFIG_DIR, SSL_ROWS, SSLOptions, _machine_note, _steps_to_epochs, fidelity_report,
                                     format_results, gap_report, run_ssl_benchmark, summarize,
                                     target_points)
from tools.lib.stages import DemoError


def _smoke(out, **kw):
    opts = dict(out_dir=str(out), seeds=(0,), rows=("scratch", "hpm"), labels_per_class=(1, 2), smoke=True,
                pretrain_steps=2, finetune_steps=2, jobs=2)
    opts.update(kw)
    return SSLOptions(**opts)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssl") / "bench"
    doc = run_ssl_benchmark(_smoke(out))
    return out, doc


def test_smoke_run_every_stage_and_the_table(smoke_run):
    out, doc = smoke_run
    res = json.loads((out / "results.json").read_text())
    assert res["eval_split"] == "test" and res["num_classes"] == 8 and res["chance"] == pytest.approx(12.5)
    assert set(res["summary"]) == {"scratch", "hpm"}
    for row in ("scratch", "hpm"):
        cells = res["summary"][row]
        assert set(cells) == {"probe_1", "probe_2", "finetune_1", "finetune_2"}
        for cell in cells.values():
            assert set(cell["seeds"]) == {"0"} and 0.0 <= cell["mean"] <= 100.0 and cell["std"] == 0.0
    by_row = {r["row"]: r for r in res["results"]}
    assert by_row["scratch"]["pretrain"] == {} and by_row["hpm"]["pretrain"]["steps"] >= 2
    assert (out / "seed0" / "hpm" / "pretrain" / "model_final.pth").is_file()
    assert not (out / "seed0" / "scratch" / "pretrain").exists()  # no pre-training for that row
    for k in (1, 2):  # every label count LP-FT fine-tuned and tested, for both rows
        for row in ("scratch", "hpm"):
            lpft = out / "seed0" / row / f"lpft_{k}pc"
            m = json.loads((lpft / "test" / "metrics.json").read_text())
            assert m["num_videos"] == res["n_eval"] == 16
            assert by_row[row]["probe"][str(k)]["n_train"] == 8 * k
            # the head started from a probe fitted on the k labelled videos once each (not the repeats)
            probe = json.loads((lpft / "probe" / "probe.json").read_text())
            assert probe["n_train"] == 8 * k and Path(probe["head_path"]).is_file()
            ft = by_row[row]["finetune"][str(k)]
            # the kept model is validated no worse than the probe-initialised start (step 0)
            assert ft["kept_val_top1"] >= ft["start_val_top1"] and "0" in ft["val_top1_by_epoch"]
    # the labelled lists: first k per class, repeated to fill an epoch, same for every row
    lines = (out / "labelled" / "train_1_per_class.csv").read_text().split()
    assert len(set(lines[0::2])) == 8
    md = (out / "RESULTS.md").read_text()
    assert "no pre-training" in md and "HPM: learn to mask" in md and "chance = 12.5 %" in md
    assert "probe 1/class" in md and "finetune 2/class" in md


def test_rerun_skips_finished_stages(smoke_run):
    out, first = smoke_run
    doc = run_ssl_benchmark(_smoke(out, rows=("scratch",)))
    stages = json.loads((out / "seed0" / "scratch" / "stages.json").read_text())
    assert stages and all(s["status"] == "reused" for s in stages.values())
    # the row not rerun stays in the table, from its chain's result in the folder
    assert doc["summary"] == first["summary"] and doc["merged_rows"] == {"hpm": f"{out.resolve()} (earlier runs)"}


def test_other_settings_in_the_same_folder_are_refused(smoke_run):
    out, _ = smoke_run
    with pytest.raises(DemoError, match="other settings.*finetune_steps"):
        run_ssl_benchmark(_smoke(out, finetune_steps=3))


def test_list_file_data_set_by_config_and_its_checks(smoke_run, tmp_path):
    out, _ = smoke_run
    data = out / "data"
    lists = {s: data / f"{s}.csv" for s in ("train", "val", "test", "pool")}
    user = [f"data.train={lists['train']}", f"data.val={lists['val']}", f"data.test={lists['test']}",
            "data.num_classes=8", f"data.data_root={data / 'videos'}"]
    # too few labelled videos per class: refused before anything runs or is written
    with pytest.raises(DemoError, match=r"fewer than 5 labelled videos"):
        run_ssl_benchmark(_smoke(tmp_path / "a", data=user, labels_per_class=(5,)))
    assert not (tmp_path / "a" / "settings.json").exists()
    with pytest.raises(DemoError, match=r"outside \[0, 4\)"):
        run_ssl_benchmark(_smoke(tmp_path / "b", data=[*user[:3], "data.num_classes=4", user[4]]))
    with pytest.raises(DemoError, match="data.num_classes"):
        run_ssl_benchmark(_smoke(tmp_path / "c", data=user[:2]))
    doc = run_ssl_benchmark(_smoke(tmp_path / "d", data=user, pool=str(lists["pool"]), rows=("scratch",),
                                   labels_per_class=(1,)))
    assert doc["n_pool"] == 32 and doc["summary"]["scratch"]["finetune_1"]["seeds"]["0"] >= 0.0


def test_few_label_list_and_summary(tmp_path):
    lst = tmp_path / "l.csv"
    lst.write_text("a.webm 0\nb.webm 1\nc.webm 0\nd.webm 1\ne.webm 0\n")
    r = few_label_list(str(lst), 2, tmp_path / "few.csv", fill_to=10)
    assert r == {"path": str(tmp_path / "few.csv"), "videos": 4, "lines": 12, "repeat": 3, "classes": 2}
    assert (tmp_path / "few.csv").read_text().split()[0::2] == ["a.webm"] * 3 + ["b.webm"] * 3 + ["c.webm"] * 3 + ["d.webm"] * 3
    with pytest.raises(DemoError, match=r"class\(es\) \['1'\] have fewer than 3"):
        few_label_list(str(lst), 3, tmp_path / "x.csv")
    results = [{"row": row, "seed": s, "probe": {"5": {"test_top1": p}}, "finetune": {"5": {"top1": f}}}
               for row, s, p, f in (("scratch", 0, 20.0, 30.0), ("scratch", 1, 22.0, 32.0),
                                    ("hpm", 0, 40.0, 31.0), ("hpm", 1, 44.0, 33.0))]
    summary = summarize(results)
    assert summary["hpm"]["probe_5"]["mean"] == pytest.approx(42.0)
    assert summary["hpm"]["probe_5"]["std"] == pytest.approx(2 ** 0.5 * 2)  # sample std of 40, 44
    gaps = gap_report(summary, [r for r in SSL_ROWS if r.name in ("scratch", "hpm")])
    assert gaps["probe_5"]["best"] == "hpm" and gaps["probe_5"]["gap"] == pytest.approx(21.0) and gaps["probe_5"]["met"]
    assert gaps["finetune_5"]["gap"] == pytest.approx(1.0) and not gaps["finetune_5"]["met"]
    assert gaps["probe_5"]["target"] == gaps["finetune_5"]["target"] == 5.0
    assert (target_points("finetune_25"), target_points("probe_25"), target_points("finetune_1")) == (10.0, 5.0, 5.0)
    doc = {"summary": summary, "labels_per_class": [5], "n_eval": 100, "num_classes": 8, "eval_split": "test",
           "seeds": [0, 1], "pretrain_steps": 10, "n_pool": 50, "finetune_steps": 5, "gaps": gaps, "jobs": 1,
           "wall_s": 60.0, "seconds": {}}
    md = format_results(doc)
    assert "**42.0** ± 2.8 <sub>(40.0 / 44.0)</sub>" in md and "meets" in md


def test_demo_label_scarce_probe_reads_the_benchmark_encoders(smoke_run, tmp_path):
    """`make demo`'s scratch row: the same probe for a checkpoint and for the random initialisation
    of the same config and seed. Its features are the benchmark's own (the same encoders), the
    labelled and the λ videos are disjoint, and the test list is only scored."""
    import numpy as np

    from tools.lib.stages import RunOptions, StageRunner
    from videohpm.evaluation.features import load_features

    out, doc = smoke_run
    data = out / "data"
    ckpt = out / "seed0" / "hpm" / "pretrain" / "model_final.pth"
    runner = StageRunner(tmp_path, RunOptions(in_process=True, threads=1))
    r = demo_label_scarce_probe(runner, tmp_path / "probe", CONFIG_DIR / "pretrain_hpm.yaml", ckpt,
                                str(data / "train.csv"), str(data / "test.csv"), str(data / "videos"), 8,
                                seed=0, per_class=1, val_per_class=1, prefix="t")
    assert r["per_class"] == 1 and r["n_eval"] == 16 and r["chance"] == pytest.approx(12.5)
    for row in ("pretrained", "scratch"):
        p = r["rows"][row]
        assert (p["n_train"], p["n_val"], p["n_test"]) == (8, 8, 16) and 0.0 <= p["test_top1"] <= 100.0
        assert p["broken"] == {"train": 0, "val": 0, "test": 0}
    labelled = (tmp_path / "probe" / "labelled.csv").read_text().split()[0::2]
    held = (tmp_path / "probe" / "probe_val.csv").read_text().split()[0::2]
    assert len(labelled) == len(held) == 8 and not set(labelled) & set(held)
    assert sorted(runner.timings) == sorted(f"t {row} features {s}" for row in ("pretrained", "scratch")
                                            for s in ("labelled", "probe_val", "eval"))
    # the test-list features equal the benchmark's: the scratch row is the seeded random encoder
    for row, bench_row in (("pretrained", "hpm"), ("scratch", "scratch")):
        mine, _ = load_features(str(tmp_path / "probe" / row / "eval"))
        theirs, _ = load_features(str(out / "seed0" / bench_row / "features" / "test"))
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    a, _ = load_features(str(tmp_path / "probe" / "pretrained" / "eval"))
    b, _ = load_features(str(tmp_path / "probe" / "scratch" / "eval"))
    assert not np.allclose(a, b)
    with pytest.raises(DemoError, match="fewer than 3 labelled videos"):  # 2 per class in the smoke set
        demo_label_scarce_probe(runner, tmp_path / "p2", CONFIG_DIR / "pretrain_hpm.yaml", ckpt,
                                str(data / "train.csv"), str(data / "test.csv"), str(data / "videos"), 8,
                                per_class=1, val_per_class=2)


def test_pretext_check_reads_a_benchmark_checkpoint(smoke_run, capsys):
    """tools/pretext_check.py end to end on the real videos of the smoke set: the JSON it prints."""
    from tests.evaluation.helpers import load_tool

    out, _ = smoke_run
    data, run = out / "data", out / "seed0" / "hpm" / "pretrain"
    tool = load_tool("pretext_check")
    args = ["--config", str(run / "config.yaml"), f"checkpoint={run / 'model_final.pth'}",
            "--list", str(data / "val.csv"), "--data-root", str(data / "videos"), "--videos", "2", "--masks", "3"]
    assert tool.main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["videos"], doc["masks"], doc["mask_ratio"]) == (2, 3, 0.75)
    frac = doc["fraction_of_hidden"]
    assert frac["moving"] + frac["static"] == pytest.approx(1.0)
    assert frac["static_copyable"] + frac["static_hidden"] == pytest.approx(frac["static"])
    assert frac["moving"] > 0 and frac["static_copyable"] > 0
    for k in ("model", "copy", "median", "mean"):
        assert all(doc[k][g] >= 0.0 for g in ("moving", "static", "static_copyable", "static_hidden"))
    assert doc["median"]["static"] < doc["mean"]["static"]  # the background is the clip's median
    assert tool.main(args[:2] + args[3:]) == 2  # no checkpoint=


def test_cheap_teacher_rows_merged_with_a_finished_run(smoke_run, tmp_path):
    """The cheap-teacher rows run next to a finished run: its rows join the table only when its settings and
    seeds are this run's (checked before any work); the fidelity report compares with `hpm`."""
    out, first = smoke_run
    # the fixture's results.json as the first run wrote it (a later test reruns one row in that folder)
    full = tmp_path / "full_results.json"
    full.write_text(json.dumps(first))
    with pytest.raises(DemoError, match="other settings.*finetune_steps"):
        run_ssl_benchmark(_smoke(tmp_path / "x", rows=("hpm_lowres2",), finetune_steps=3,
                                 merge=[str(full)]))
    with pytest.raises(DemoError, match="seeds"):
        run_ssl_benchmark(_smoke(tmp_path / "y", rows=("hpm_lowres2",), seeds=(1,), merge=[str(full)]))
    assert not (tmp_path / "x" / "settings.json").exists() and not (tmp_path / "y" / "settings.json").exists()
    doc = run_ssl_benchmark(_smoke(tmp_path / "z", rows=("hpm_lowres2", "hpm_lowres2_eqtime"),
                                   merge=[str(full)]))
    assert set(doc["summary"]) == {"scratch", "hpm", "hpm_lowres2", "hpm_lowres2_eqtime"}
    assert doc["merged_rows"] == {"scratch": str(full), "hpm": str(full)}
    assert doc["summary"]["hpm"] == first["summary"]["hpm"]  # the merged row as it was
    cfg = (tmp_path / "z" / "seed0" / "hpm_lowres2" / "pretrain" / "config.yaml").read_text()
    assert "teacher_mode: lowres:2" in cfg
    for proto in ("probe_1", "finetune_2"):
        f = doc["fidelity"]["hpm_lowres2"][proto]
        want = doc["summary"]["hpm_lowres2"][proto]["mean"] - doc["summary"]["hpm"][proto]["mean"]
        assert f["diff"] == pytest.approx(want) and f["within_noise"] == (abs(want) <= 2 * f["pooled_std"])
    assert doc["gaps"]["probe_1"]["best"] == "hpm"  # beyond-the-paper rows never count for the target
    md = (tmp_path / "z" / "RESULTS.md").read_text()
    assert "Cheap HPM teachers against the full teacher" in md and "‡" in md
    assert sum(ln.startswith("| HPM, teacher_mode lowres:2") for ln in md.splitlines()) == 2


def test_step_scale_and_fidelity_maths():
    assert _steps_to_epochs(768, 3072, 16) == (4, 768)
    assert _steps_to_epochs(768 * 1.3, 3072, 16) == (6, 1152)  # at least the steps: rounds up
    assert _steps_to_epochs(768 * 1.3, 3072, 16, nearest=True) == (5, 960)
    assert _steps_to_epochs(768 * 1.1, 3072, 16, nearest=True) == (4, 768)
    eq = next(r for r in SSL_ROWS if r.name == "hpm_lowres2_eqtime")
    assert eq.step_scale >= 1.0 and not eq.paper and "method.kwargs.teacher_mode=lowres:2" in eq.overrides
    cell = lambda m, s: {"mean": m, "std": s, "seeds": {}}  # noqa: E731
    summary = {"hpm": {"probe_5": cell(19.0, 1.0)}, "hpm_lowres2": {"probe_5": cell(17.0, 0.5)},
               "hpm_lowres2_eqtime": {"probe_5": cell(21.5, 0.5)}}
    f = fidelity_report(summary)
    pooled = (1.25 / 2) ** 0.5
    assert f["hpm_lowres2"]["probe_5"] == {"diff": pytest.approx(-2.0), "pooled_std": pytest.approx(pooled),
                                           "within_noise": False}  # 2.0 > 2 × 0.79
    assert f["hpm_lowres2_eqtime"]["probe_5"]["within_noise"] is False
    summary["hpm_lowres2"]["probe_5"] = cell(18.0, 0.5)
    assert fidelity_report(summary)["hpm_lowres2"]["probe_5"]["within_noise"] is True
    assert fidelity_report({"hpm_lowres2": {}}) == {}
    doc = {"machine": {"aten": "AVX512", "kernels": "onednn"}, "merged_machines": {"a.json": {"aten": "AVX2", "kernels": "aten"}}}
    assert "another machine (ATen AVX2, kernels aten; this run: ATen AVX512, kernels onednn)" in _machine_note(doc)
    assert _machine_note({**doc, "merged_machines": {"a.json": dict(doc["machine"])}}) == ""


def test_adamae_row_step_time_and_comparison_with_hpm(tmp_path):
    from tools.lib.ssl_benchmark import pretrain_seconds_per_step, pretrain_step_seconds

    row = next(r for r in SSL_ROWS if r.name == "adamae")
    assert (row.pretrain, row.step_scale, row.paper) == ("pretrain_adamae", 1.0, False)
    assert (CONFIG_DIR / "pretrain_adamae.yaml").is_file()
    # a run killed after epoch 0 and resumed: epoch 1 logged twice, the last record counts
    log = [{"type": "epoch", "epoch": 0, "step": 4, "epoch_time_s": 2.0},
           {"type": "epoch", "epoch": 1, "step": 8, "epoch_time_s": 9.0},
           {"type": "step", "step": 5, "loss": 1.0},
           {"type": "epoch", "epoch": 1, "step": 8, "epoch_time_s": 4.0}]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n{cut")
    assert pretrain_step_seconds(tmp_path) == pytest.approx(6.0 / 8)
    assert pretrain_step_seconds(tmp_path / "none") is None
    results = [{"row": "adamae", "seed": s, "pretrain": {"steps": 768, "s_per_step": v}} for s, v in ((0, 0.4), (1, 0.6))]
    results += [{"row": "scratch", "seed": 0, "pretrain": {}}, {"row": "hpm", "seed": 0, "pretrain": {"steps": 768}}]
    doc = {"results": results}
    assert pretrain_seconds_per_step(doc, "adamae") == pytest.approx(0.5)
    assert pretrain_seconds_per_step(doc, "scratch") is None and pretrain_seconds_per_step(doc, "hpm") is None
    cell = lambda m, s: {"mean": m, "std": s, "seeds": {}}  # noqa: E731
    f = fidelity_report({"hpm": {"probe_5": cell(19.0, 1.0)}, "adamae": {"probe_5": cell(16.0, 1.0)}}, "hpm", ("adamae",))
    assert f["adamae"]["probe_5"] == {"diff": pytest.approx(-3.0), "pooled_std": pytest.approx(1.0),
                                      "within_noise": False}


def test_merged_rows_are_matched_on_their_key_not_their_label():
    """A results.json written when row labels read otherwise still merges: rows join on ``row``
    (the key), and the table prints today's label of that key."""
    from tools.lib.ssl_benchmark import _merge_results

    old = {"rows": [{"name": "hpm_lowres2", "label": "an older label of the row"}],
           "results": [{"row": "hpm_lowres2", "seed": 0}, {"row": "hpm", "seed": 0}]}
    results = [{"row": "hpm", "seed": 0, "new": True}]
    merged = _merge_results(results, [r for r in SSL_ROWS if r.name == "hpm"], [("old.json", old)])
    assert merged == {"hpm_lowres2": "old.json"}
    assert results == [{"row": "hpm", "seed": 0, "new": True}, {"row": "hpm_lowres2", "seed": 0}]
    cell = {"mean": 20.0, "std": 1.0, "seeds": {"0": 20.0}}
    doc = {"summary": {"hpm_lowres2": {"probe_5": cell}}, "labels_per_class": [5], "n_eval": 100, "num_classes": 8,
           "eval_split": "test", "seeds": [0], "pretrain_steps": 10, "n_pool": 50, "finetune_steps": 5, "gaps": {},
           "jobs": 1, "wall_s": 60.0, "seconds": {}, "merged_rows": merged, "rows": old["rows"]}
    label = next(r.label for r in SSL_ROWS if r.name == "hpm_lowres2")
    md = format_results(doc)
    assert f"| {label} † ‡ |" in md and "an older label" not in md
