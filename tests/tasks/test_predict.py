"""tools/predict.py and tools/extract_features.py on real demo videos: the same probabilities as
tools/test.py, the same features as the encoder, the same k-NN as tools/knn.py, and the same
answers on 1 and 2 ranks (two real CPU processes)."""
import csv
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.evaluation.helpers import load_tool
from videohpm.config import load_config, save_config
from videohpm.engine.build import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FT = os.path.join(ROOT, "configs/test/finetune_tiny.yaml")
PRE = os.path.join(ROOT, "configs/test/pretrain_hpm_tiny.yaml")
VIEWS = ["data.dataset=k400", "data.test_num_clips=2", "data.test_num_crops=3"]


_tool = load_tool


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The tiny demo set (K400 layout, 8 classes, 8 train + 8 val mp4s) plus an undecodable video;
    a fine-tuning run folder (model_final.pth + config.yaml with the class names) and a
    pre-training checkpoint whose EMA teacher differs from the student."""
    from videohpm.data import make_demo_data

    root = tmp_path_factory.mktemp("predict")
    d = make_demo_data(str(root), tiny=True, formats=("k400",), images=False)
    vids = d.video_dirs["k400"]
    with open(os.path.join(vids, "broken.mp4"), "wb") as f:
        f.write(b"not a video" * 10)
    with open(d.lists["k400"]["test"]) as f:
        lines = f.read().splitlines()
    test_list = os.path.join(str(root), "test_with_broken.csv")
    with open(test_list, "w") as f:
        f.write("\n".join(lines + ["broken.mp4 3"]) + "\n")
    # fine-tuning run: random weights with a strong head, so that the classes are far apart
    run = root / "ft"
    run.mkdir()
    cfg = load_config(FT, [*VIEWS, f"data.data_root={vids}", f"train.output_dir={run}",
                           "data.class_names=[" + ",".join(f"'{c}'" for c in d.classes) + "]"])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.head.weight.normal_(0, 3.0)
    torch.save({"model": model.state_dict(), "config": OmegaConf.to_container(cfg), "global_step": 1},
               run / "model_final.pth")
    save_config(cfg, str(run / "config.yaml"))
    pre_cfg = load_config(PRE)
    torch.manual_seed(1)
    student = build_model(pre_cfg)
    teacher = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in student.state_dict().items()}
    torch.save({"model": student.state_dict(), "teacher": teacher, "config": OmegaConf.to_container(pre_cfg),
                "global_step": 1}, root / "pre.pth")
    pre_run = root / "pre_run"  # a pre-training run folder: model_final.pth + config.yaml
    pre_run.mkdir()
    (pre_run / "model_final.pth").write_bytes((root / "pre.pth").read_bytes())
    save_config(load_config(PRE, [f"data.data_root={vids}", f"train.output_dir={pre_run}"]), str(pre_run / "config.yaml"))
    return {"root": str(root), "videos": vids, "test": test_list, "lists": d.lists["k400"], "classes": d.classes,
            "run": str(run), "pre": str(root / "pre.pth"), "pre_run": str(pre_run), "n": len(lines),
            "classes_txt": os.path.join(str(root), "k400", "classes.txt")}


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_gives_tools_test_probabilities(demo, tmp_path, capsys):
    """Same checkpoint, same videos: tools/predict.py's top-5 probabilities are those of
    tools/test.py's predictions.csv, the broken video is a BROKEN line, and names come from the
    run's config (no --config, no --classes)."""
    test_out = tmp_path / "test"
    assert _tool("test").main(["--config", FT, f"checkpoint={demo['run']}", "--output-dir", str(test_out), "--no-flops",
                               f"data.test={demo['test']}", f"data.data_root={demo['videos']}", *VIEWS]) == 0
    metrics = json.load(open(test_out / "metrics.json"))
    ref = {r["video_id"]: r for r in _read_csv(test_out / "predictions.csv")}
    capsys.readouterr()
    out = tmp_path / "pred"
    # the whole folder (train, val and test videos, broken one included), in one call; its run config.yaml is used
    assert _tool("predict").main([f"checkpoint={demo['run']}", demo["videos"], "--output-dir", str(out),
                                  "--topk", "5", "--batch-size", "4"]) == 0
    stdout = capsys.readouterr().out
    pred = json.load(open(out / "predictions.json"))
    assert pred["num_videos"] == 3 * demo["n"] + 1 and pred["num_broken"] == 1 and pred["views"] == "2×3"
    assert pred["class_names"] == demo["classes"] and pred["class_names_source"] == "config data.class_names"
    by_name = {os.path.basename(p["video"]): p for p in pred["predictions"]}
    hits = 0
    for vid, r in ref.items():
        p = by_name[vid]
        if r["ok"] == "0":
            assert p["status"] == "broken" and p["top"] == [] and "broken.mp4" in p["error"]
            assert f"{p['video']}: BROKEN (" in stdout
            continue
        assert p["status"] == "ok"
        assert [t["id"] for t in p["top"]] == [int(c) for c in r["top5_ids"].split()]
        np.testing.assert_allclose([t["prob"] for t in p["top"]], [float(s) for s in r["top5_scores"].split()],
                                   atol=6e-7)  # the CSV keeps 6 decimals
        assert [t["name"] for t in p["top"]] == [demo["classes"][t["id"]] for t in p["top"]]
        hits += p["top"][0]["id"] == int(r["label"])
        line = f"{p['video']}: {p['top'][0]['name']} {p['top'][0]['prob']:.4f} | "
        assert line in stdout
    assert 100.0 * hits / demo["n"] == pytest.approx(metrics["top1"])
    assert len(set(t["top"][0]["id"] for t in pred["predictions"] if t["top"])) > 1  # not one constant answer
    rows = _read_csv(out / "predictions.csv")
    assert len(rows) == 3 * demo["n"] + 1 and sum(r["status"] == "broken" for r in rows) == 1
    broken = next(r for r in rows if r["status"] == "broken")
    assert broken["top1_id"] == "" and broken["top1_prob"] == "" and broken["error"]
    # a second call into the same folder is refused; with --overwrite it replaces the answers;
    # SSv2 labels JSON names the classes
    labels_json = tmp_path / "labels.json"
    rev = list(reversed(demo["classes"]))
    labels_json.write_text(json.dumps({n: str(i) for i, n in enumerate(rev)}))
    first = (out / "predictions.csv").read_bytes()
    some = sorted(by_name)[:2]
    again_args = [f"checkpoint={demo['run']}/model_final.pth", *[os.path.join(demo["videos"], v) for v in some],
                  "--output-dir", str(out), "--classes", str(labels_json), "--topk", "2"]
    assert _tool("predict").main(again_args) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "predictions.csv").read_bytes() == first
    assert _tool("predict").main(again_args + ["--overwrite"]) == 0
    again = json.load(open(out / "predictions.json"))
    assert again["topk"] == 2 and again["class_names"] == rev
    for p in again["predictions"]:
        assert [t["id"] for t in p["top"]] == [t["id"] for t in by_name[os.path.basename(p["video"])]["top"][:2]]
        assert [t["name"] for t in p["top"]] == [rev[t["id"]] for t in p["top"]]
    # model_final.pth alone (no config.yaml next to it): the config stored inside, with its class names
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model_final.pth").write_bytes(open(os.path.join(demo["run"], "model_final.pth"), "rb").read())
    one = next(v for v in sorted(by_name) if by_name[v]["status"] == "ok")
    assert _tool("predict").main([f"checkpoint={alone / 'model_final.pth'}", os.path.join(demo["videos"], one),
                                  "--output-dir", str(alone / "p")]) == 0
    solo = json.load(open(alone / "p" / "predictions.json"))["predictions"][0]
    assert solo["top"]
    assert [(t["id"], t["name"]) for t in solo["top"]] == [(t["id"], t["name"]) for t in by_name[one]["top"]]


def test_collect_videos_and_class_names(tmp_path):
    from videohpm.tasks.predict import read_class_names
    from videohpm.tasks.videos import collect_videos

    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/x.MP4", "a/b/y.webm", "a/b/notes.txt", "a/z.Mkv", "a/b/c.jpg"):
        (tmp_path / rel).write_bytes(b"")
    v = collect_videos([str(tmp_path / "a")])
    assert [os.path.relpath(p, tmp_path) for p in v.paths] == ["a/b/y.webm", "a/x.MP4", "a/z.Mkv"]
    assert not v.has_labels and (v.labels == -1).all()
    # a list without labels (a path with a space), relative to data_root; a labelled list; a file again
    (tmp_path / "my clip.mp4").write_bytes(b"")
    (tmp_path / "list.txt").write_text("a/x.MP4\nmy clip.mp4\n\n")
    (tmp_path / "lab.csv").write_text("a/z.Mkv 3\n")
    v = collect_videos([str(tmp_path / "list.txt"), str(tmp_path / "lab.csv"), str(tmp_path / "a" / "x.MP4")],
                       data_root=str(tmp_path))
    assert list(v.names) == ["a/x.MP4", "my clip.mp4", "a/z.Mkv"]  # the same file once, first name kept
    assert list(v.labels) == [-1, -1, 3]
    v = collect_videos([str(tmp_path / "a" / "x.MP4"), str(tmp_path / "a" / "x.MP4")])
    assert len(v) == 1
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        collect_videos([str(tmp_path / "nope.mp4")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no video files"):
        collect_videos([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="neither a video"):
        collect_videos([str(tmp_path / "a" / "b" / "c.jpg")])
    (tmp_path / "classes.txt").write_text("pour\nopen door\n")
    assert read_class_names(str(tmp_path / "classes.txt")) == ["pour", "open door"]
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "1", "Holding something": "0"}))
    assert read_class_names(str(tmp_path / "labels.json")) == ["Holding something", "Pushing something"]
    (tmp_path / "gap.json").write_text(json.dumps({"a": 0, "b": 2}))
    with pytest.raises(ValueError, match="gap.json: class ids must be 0..1"):
        read_class_names(str(tmp_path / "gap.json"))


def test_predict_errors_before_work(demo, tmp_path, capsys):
    tool = _tool("predict")
    out = tmp_path / "p"
    video = os.path.join(demo["videos"], sorted(os.listdir(demo["videos"]))[0])
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    assert tool.main([f"checkpoint={demo['run']}", video, "--output-dir", str(out), "--classes",
                      str(tmp_path / "three.txt")]) == 2
    assert "three.txt: 3 class names but the model has 8 classes" in capsys.readouterr().err
    assert tool.main([f"checkpoint={demo['run']}", str(tmp_path / "missing.mp4"), "--output-dir", str(out)]) == 2
    assert "missing.mp4: no such file" in capsys.readouterr().err
    assert tool.main([f"checkpoint={demo['pre']}", video, "--output-dir", str(out)]) == 2  # its stored config:
    assert "method.name" in capsys.readouterr().err  # a pre-training config is not a classifier
    bare = tmp_path / "bare.pth"  # a plain state dict: no run folder, no config inside
    torch.save(torch.load(os.path.join(demo["run"], "model_final.pth"), weights_only=True)["model"], bare)
    assert tool.main([f"checkpoint={bare}", video, "--output-dir", str(out)]) == 2
    assert "no config inside: give --config" in capsys.readouterr().err
    assert tool.main(["--config", PRE, f"checkpoint={demo['pre']}", video, "--output-dir", str(out)]) == 2
    assert "method.name" in capsys.readouterr().err  # a pre-training config is not a classifier
    assert not out.exists()


def test_class_names_beside_the_training_list(demo, tmp_path):
    """No --classes, no data.class_names: the classes.txt next to data.train (tools/make_lists.py
    writes one) names the answers; one with another count is not used (class ids)."""
    tool = _tool("predict")
    video = os.path.join(demo["videos"], sorted(v for v in os.listdir(demo["videos"]) if v.startswith("demo"))[0])
    common = ["--config", FT, f"checkpoint={demo['run']}", video, "data.test_num_clips=1", "data.test_num_crops=1"]
    assert tool.main([*common, f"data.train={demo['lists']['train']}", "--output-dir", str(tmp_path / "a")]) == 0
    a = json.load(open(tmp_path / "a" / "predictions.json"))
    assert a["class_names"] == demo["classes"] and a["class_names_source"] == demo["classes_txt"]
    (tmp_path / "lists").mkdir()
    shutil.copy(demo["lists"]["train"], tmp_path / "lists" / "train.csv")
    (tmp_path / "lists" / "classes.txt").write_text("one\ntwo\n")
    assert tool.main([*common, f"data.train={tmp_path / 'lists' / 'train.csv'}", "--output-dir", str(tmp_path / "b")]) == 0
    b = json.load(open(tmp_path / "b" / "predictions.json"))
    assert b["class_names"] is None and b["class_names_source"] == "ids"
    assert [t["name"] for t in b["predictions"][0]["top"]] == [None] * 5
    assert [t["id"] for t in b["predictions"][0]["top"]] == [t["id"] for t in a["predictions"][0]["top"]]


def _encoder_forward(cfg, checkpoint, videos, teacher):
    """Reference: runner.load_encoder + build_eval_dataset's clip + a direct encode()."""
    from videohpm.data import resolve
    from videohpm.data import build_eval_dataset
    from videohpm.tasks.videos import collect_videos
    from videohpm.tasks.weights import load_encoder

    model = load_encoder(cfg, checkpoint, teacher=teacher)
    ds = build_eval_dataset(resolve(OmegaConf.to_object(cfg.data)), collect_videos(videos), "val", require_labels=False)
    with torch.no_grad():
        return [model.encode(ds[i]["video"][None])[0] for i in range(len(ds))]


def test_extract_features_are_the_encoder_output(demo, tmp_path):
    from videohpm.evaluation.features import load_features

    tool = _tool("extract_features")
    cfg = load_config(PRE, ["model.pretrained=null"])
    names = sorted(v for v in os.listdir(demo["videos"]) if v.startswith("demo"))[:3]
    videos = [os.path.join(demo["videos"], v) for v in names]
    inputs = videos[:2] + [os.path.join(demo["videos"], "broken.mp4")] + videos[2:]
    for teacher in (False, True):
        ref = _encoder_forward(cfg, demo["pre"], videos, teacher)  # [N, D] each
        for pool in ("mean", "time", "tokens"):
            out = tmp_path / f"{pool}-{teacher}"
            args = ["--config", PRE, f"checkpoint={demo['pre']}", *inputs, "--output-dir", str(out), "--pool", pool,
                    "--batch-size", "1", "--shard-rows", "2"] + (["--teacher"] if teacher else [])
            assert tool.main(args) == 0
            feats, rows = load_features(str(out))
            index = _read_csv(out / "index.csv")
            assert [r["status"] for r in index] == ["ok", "ok", "broken", "ok"] and index[2]["shard"] == ""
            assert [r["video"] for r in rows] == videos
            meta = json.load(open(out / "features.json"))
            assert meta["num_broken"] == 1 and len(meta["shards"]) == 2 and meta["teacher"] is teacher
            n, d = ref[0].shape  # 2 time slices × 4 × 4 tokens of 64-d
            want = {"mean": [r.mean(0) for r in ref], "time": [r.view(2, n // 2, d).mean(1) for r in ref],
                    "tokens": ref}[pool]
            assert list(feats.shape[1:]) == meta["shape"] == list(want[0].shape)
            for got, exp in zip(feats, want):
                torch.testing.assert_close(torch.from_numpy(got), exp, rtol=0, atol=0)
        if not teacher:
            student_tokens = feats
    assert not np.allclose(feats, student_tokens)  # --teacher read the EMA teacher, not the student
    with pytest.raises(FileExistsError, match="--overwrite"):  # a features folder is refused
        from videohpm.tasks.extract_features import run_extract

        run_extract(cfg, demo["pre"], videos, str(tmp_path / "mean-False"))


def test_extract_features_of_a_fine_tuned_classifier(demo, tmp_path):
    """A fine-tuning run: `tokens` are its encoder's tokens, `mean` the fc_norm-ed pooled feature
    its head reads (what tools/knn.py uses for a classifier)."""
    from videohpm.data import resolve
    from videohpm.data import build_eval_dataset
    from videohpm.evaluation.features import load_features
    from videohpm.tasks.videos import collect_videos
    from videohpm.tasks.weights import load_encoder

    video = os.path.join(demo["videos"], sorted(v for v in os.listdir(demo["videos"]) if v.startswith("demo"))[0])
    tool = _tool("extract_features")
    for pool in ("tokens", "mean"):
        assert tool.main([f"checkpoint={demo['run']}", video, "--pool", pool, "--output-dir", str(tmp_path / pool)]) == 0
    cfg = load_config(os.path.join(demo["run"], "config.yaml"), ["model.pretrained=null"])
    model = load_encoder(cfg, demo["run"])
    x = build_eval_dataset(resolve(OmegaConf.to_object(cfg.data)), collect_videos([video]), "val",
                           require_labels=False)[0]["video"][None]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(load_features(str(tmp_path / "tokens"))[0]), model.encoder(x),
                                   rtol=0, atol=0)
        torch.testing.assert_close(torch.from_numpy(load_features(str(tmp_path / "mean"))[0]), model.forward_features(x),
                                   rtol=0, atol=0)


def test_knn_on_extracted_features_matches_tools_knn(demo, tmp_path):
    from videohpm.evaluation.features import load_features
    from videohpm.evaluation.knn import knn_classify

    lists = demo["lists"]
    common = [f"checkpoint={demo['pre']}", f"data.data_root={demo['videos']}", "data.num_classes=8",
              "train.knn_k=[1,3,20]", "--batch-size", "3"]
    assert _tool("knn").main(["--config", PRE, *common, f"data.train={lists['train']}", f"data.val={lists['val']}",
                              "--output-dir", str(tmp_path / "knn")]) == 0
    ref = json.load(open(tmp_path / "knn" / "knn.json"))
    tool = _tool("extract_features")
    for split in ("train", "val"):
        assert tool.main(["--config", PRE, *common, lists[split], "--output-dir", str(tmp_path / split)]) == 0
    (tr, tr_rows), (va, va_rows) = load_features(str(tmp_path / "train")), load_features(str(tmp_path / "val"))
    norm = lambda a: torch.nn.functional.normalize(torch.from_numpy(a), dim=-1)  # noqa: E731
    label = lambda rows: torch.tensor([int(r["label"]) for r in rows])  # noqa: E731
    res = knn_classify(norm(tr), label(tr_rows), norm(va), label(va_rows), ks=(1, 3, 20), temperature=0.07,
                       num_classes=8)
    assert ref["knn_train_samples"] == len(tr_rows) == 8 and ref["knn_val_samples"] == len(va_rows) == 8
    for key, v in res.items():
        assert ref[key] == pytest.approx(v), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DRIVER = """
import importlib.util, os, sys
def tool(name):
    spec = importlib.util.spec_from_file_location("_t_" + name, os.path.join({root!r}, "tools", name + ".py"))
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
a = {args!r}
rc = tool("predict").main(a["predict"]) or tool("extract_features").main(a["features"])
sys.exit(rc)
"""


@pytest.mark.distributed
def test_two_ranks_match_one_rank(demo, tmp_path):
    """2 real CPU processes (RANK / WORLD_SIZE as torchrun or the deepspeed launcher set them): 5
    videos (one broken), 1 per batch — rank 1 gets a padding repeat in the prediction loader, which
    the gathering drops; feature shards are written by both ranks and indexed once."""
    names = sorted(v for v in os.listdir(demo["videos"]) if v.startswith("demo"))[:4]
    inputs = [os.path.join(demo["videos"], v) for v in names[:2]] + [os.path.join(demo["videos"], "broken.mp4")] + \
        [os.path.join(demo["videos"], v) for v in names[2:]]

    def args(tag):
        return {"predict": [f"checkpoint={demo['run']}", *inputs, "--output-dir", str(tmp_path / f"pred-{tag}"),
                            "--batch-size", "1"],
                "features": ["--config", PRE, f"checkpoint={demo['pre']}", *inputs, "--pool", "time",
                             "--output-dir", str(tmp_path / f"feat-{tag}"), "--batch-size", "1"]}

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=ROOT, MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), WORLD_SIZE="2", LOCAL_SIZE="2")
    code = _DRIVER.format(root=ROOT, args=args("2"))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    # meanwhile, the same in this process on one rank
    one = args("1")
    assert _tool("predict").main(one["predict"]) == 0 and _tool("extract_features").main(one["features"]) == 0
    for r, p in enumerate(procs):
        text = p.communicate(timeout=240)[0]
        assert p.returncode == 0, f"rank {r}:\n{text[-4000:]}"
    p1, p2 = json.load(open(tmp_path / "pred-1" / "predictions.json")), json.load(open(tmp_path / "pred-2" / "predictions.json"))
    assert p2["world_size"] == 2 and p1["world_size"] == 1
    assert [p["video"] for p in p2["predictions"]] == [p["video"] for p in p1["predictions"]] == inputs
    for a, b in zip(p1["predictions"], p2["predictions"]):
        assert a["status"] == b["status"] and [t["id"] for t in a["top"]] == [t["id"] for t in b["top"]]
        np.testing.assert_allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], atol=1e-6)
    assert [p["status"] for p in p2["predictions"]] == ["ok", "ok", "broken", "ok", "ok"]
    from videohpm.evaluation.features import load_features

    (f1, r1), (f2, r2) = load_features(str(tmp_path / "feat-1")), load_features(str(tmp_path / "feat-2"))
    meta = json.load(open(tmp_path / "feat-2" / "features.json"))
    assert meta["world_size"] == 2 and {s.split("-")[1] for s in meta["shards"]} == {"r000", "r001"}
    assert [r["video"] for r in r2] == [r["video"] for r in r1] and len(r2) == 4
    np.testing.assert_allclose(f2, f1, atol=1e-6)


def _readme_commands(first: str, last: str):
    """The `python tools/...` lines of the README between two headings (continuations joined)."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index(first):text.index(last)]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("python tools/"):
                cmds.append(line)
    return cmds


def test_readme_commands(demo, tmp_path):
    """The README's predict / extract_features lines, run as written (paths substituted)."""
    new = tmp_path / "new_videos"
    (new / "sub").mkdir(parents=True)
    vids = sorted(v for v in os.listdir(demo["videos"]) if v.startswith("demo"))
    shutil.copy(os.path.join(demo["videos"], vids[0]), new / "a.MP4")
    shutil.copy(os.path.join(demo["videos"], vids[1]), new / "sub" / "b.mp4")
    (tmp_path / "more_videos.txt").write_text(f"{vids[2]}\n{vids[3]}\n")  # relative to data.data_root
    subs = {"outputs/ft": demo["run"], "outputs/pre": demo["pre_run"], "/data/new_videos": str(new),
            "clip.mp4": os.path.join(demo["videos"], vids[4]), "more_videos.txt": str(tmp_path / "more_videos.txt"),
            "data_lists/k400/classes.txt": demo["classes_txt"], "data_lists/ssv2/val.csv": demo["lists"]["val"],
            "outputs/features": str(tmp_path / "features")}
    cmds = _readme_commands("## Predicting new videos", "## Visualization")
    assert [c.split()[1] for c in cmds] == ["tools/predict.py", "tools/extract_features.py", "tools/extract_features.py"]
    for c in cmds:
        for a, b in subs.items():
            c = c.replace(a, b)
        argv = shlex.split(c)
        assert _tool(os.path.splitext(os.path.basename(argv[1]))[0]).main(argv[2:]) == 0, c
    pred = json.load(open(os.path.join(demo["run"], "predict", "predictions.json")))
    assert [os.path.basename(p["video"]) for p in pred["predictions"]] == ["a.MP4", "b.mp4", vids[4], vids[2], vids[3]]
    assert pred["class_names"] == demo["classes"] and all(len(p["top"]) == 5 for p in pred["predictions"])
    from videohpm.evaluation.features import load_features

    val, rows = load_features(str(tmp_path / "features" / "val"))
    assert val.shape == (8, 64) and sorted(int(r["label"]) for r in rows) == list(range(8))
    time, rows = load_features(str(tmp_path / "features" / "time"))
    assert time.shape == (2, 2, 64) and all(r["label"] == "" for r in rows)
    assert json.load(open(tmp_path / "features" / "time" / "features.json"))["teacher"] is True
