"""The data-efficiency benchmark runner (tools/ssl_benchmark.py, tools/lib/ssl_benchmark.py) on a
smoke-sized variant: every stage (generated data, pre-training, time-sliced features + probe,
label-scarce fine-tuning, multi-view test), the table, resume, and the checks before any work."""
import json
from pathlib import Path

import pytest

import videohpm.data  # noqa: F401  (PyAV before decord)
from tools.lib.demo import DemoError
from tools.lib.ssl_benchmark import (SSL_ROWS, SSLOptions, few_label_list, format_results, gap_report,
                                     run_ssl_benchmark, summarize)


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
    for k in (1, 2):  # every label count fine-tuned and tested, for both rows
        for row in ("scratch", "hpm"):
            m = json.loads((out / "seed0" / row / f"test_{k}pc" / "metrics.json").read_text())
            assert m["num_videos"] == res["n_eval"] == 16
            assert by_row[row]["probe"][str(k)]["n_train"] == 8 * k
    # the labelled lists: first k per class, repeated to fill an epoch, same for every row
    lines = (out / "labelled" / "train_1_per_class.csv").read_text().split()
    assert len(set(lines[0::2])) == 8
    md = (out / "RESULTS.md").read_text()
    assert "no pre-training" in md and "HPM: learn to mask" in md and "chance = 12.5 %" in md
    assert "probe 1/class" in md and "finetune 2/class" in md


def test_rerun_skips_finished_stages(smoke_run):
    out, _ = smoke_run
    run_ssl_benchmark(_smoke(out, rows=("scratch",)))
    stages = json.loads((out / "seed0" / "scratch" / "stages.json").read_text())
    assert stages and all(s["status"] == "reused" for s in stages.values())


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
    doc = {"summary": summary, "labels_per_class": [5], "n_eval": 100, "num_classes": 8, "eval_split": "test",
           "seeds": [0, 1], "pretrain_steps": 10, "n_pool": 50, "finetune_steps": 5, "gaps": gaps, "jobs": 1,
           "wall_s": 60.0, "seconds": {}}
    md = format_results(doc)
    assert "**42.0** ± 2.8 <sub>(40.0 / 44.0)</sub>" in md and "meets" in md
