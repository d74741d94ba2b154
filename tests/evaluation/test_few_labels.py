"""LP-FT on a few labelled videos: the probe head file (exact weights into a time-pooling
classifier and the `classification` recipe, refusals before work), `train.keep_best` (the
probe-initialised step 0 is validated and never beaten by a worse epoch), and README's one
command on class folders of real videos (tools/make_lists.py folder → tools/few_labels.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import videohpm.data  # noqa: F401  (loads PyAV before decord, see videohpm/data/video.py)
from videohpm.evaluation.probe import linear_probe
from videohpm.methods import build_recipe
from videohpm.models import create_model
from videohpm.models.probe_head import load_probe_head, read_probe_head, write_probe_head

from .helpers import load_tool

REPO = Path(__file__).resolve().parents[2]
TINY = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=1, num_heads=2)


def _classifier(num_classes: int = 3, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit_tiny_patch16_224", num_classes=num_classes, **{**TINY, "time_pooling": True, **kw})


def _fitted(tmp_path: Path, num_classes: int = 3):
    """A probe fitted on separable `[n, T'=2, D=32]` features, and its head file."""
    rng = np.random.default_rng(0)
    y = np.arange(30) % num_classes
    x = rng.normal(size=(30, 2, 32)) * rng.uniform(0.1, 3.0, size=(1, 2, 32)) + 2.0 * y[:, None, None]
    r = linear_probe(x[:18], y[:18], x[18:], y[18:], num_classes=num_classes, return_head=True)
    path = write_probe_head(str(tmp_path / "probe_head.safetensors"), r["head"], 2, 32, {"val_top1": r["val_top1"]})
    return x, r, path


def test_probe_head_loads_exactly_and_predicts_as_the_probe(tmp_path):
    x, r, path = _fitted(tmp_path)
    tensors, meta = read_probe_head(path)
    assert meta["format"] == "videohpm-probe-head" and meta["num_slices"] == "2" and meta["num_classes"] == "3"
    model = _classifier()
    load_probe_head(model, path)
    for k, v in r["head"].items():
        assert torch.equal(model.state_dict()[k], v), k
    z = torch.as_tensor(x, dtype=torch.float64).reshape(30, -1)  # vec(F), slices in order
    ref = ((z - r["head"]["feat_norm.mean"].double()) / r["head"]["feat_norm.std"].double()) @ \
        r["head"]["head.weight"].double().T + r["head"]["head.bias"].double()  # the probe's W ẑ + b
    with torch.no_grad():
        got = model.head(model.feat_norm(z.float()))
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), ref.argmax(1))


def test_time_pooling_head_reads_the_slices_in_order():
    model = _classifier().eval()
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        tokens = model.encoder(clip)  # [2, 2·4·4, 32], time-major
        feats = model.time_features(clip)
    assert feats.shape == (2, 64)
    torch.testing.assert_close(feats[:, 32:], tokens[:, 16:].mean(1))  # slice 1 = tokens 16..31
    with pytest.raises(ValueError, match="time slices"):
        model(torch.randn(1, 3, 8, 32, 32))


def test_classification_recipe_starts_from_the_probe_head(tmp_path):
    _, r, path = _fitted(tmp_path)
    recipe = build_recipe("classification", _classifier(), None, mixup=0.0, cutmix=0.0, label_smoothing=0.0,
                          model_ema=True, probe_head=path)
    assert torch.equal(recipe.model.head.weight, r["head"]["head.weight"])
    assert torch.equal(recipe.model.head.bias, r["head"]["head.bias"])
    assert torch.equal(recipe.teacher.head.weight, r["head"]["head.weight"])  # the EMA starts there too
    assert recipe.probe_head["val_top1"] == f"{r['val_top1']}"


def test_probe_head_refusals(tmp_path):
    from safetensors.torch import save_file

    _, _, path = _fitted(tmp_path)
    with pytest.raises(ValueError, match="time_pooling"):
        load_probe_head(create_model("vit_tiny_patch16_224", num_classes=3, **TINY), path)
    with pytest.raises(ValueError, match="head.weight"):
        load_probe_head(_classifier(num_classes=4), path)
    with pytest.raises(ValueError, match="time slices"):
        load_probe_head(_classifier(num_frames=8), path)
    other = tmp_path / "other.safetensors"
    save_file({"head.weight": torch.zeros(3, 64)}, str(other))
    with pytest.raises(ValueError, match="not a probe head"):
        read_probe_head(str(other))
    with pytest.raises(ValueError, match="no such file"):
        read_probe_head(str(tmp_path / "none.safetensors"))
    model = _classifier()
    before = model.head.weight.clone()
    with pytest.raises(ValueError):
        load_probe_head(model, str(other))
    assert torch.equal(model.head.weight, before)  # nothing copied


def test_a_missing_probe_head_fails_the_config_check(tmp_path):
    from videohpm.config import ConfigError, load_config
    from videohpm.engine.build import check_buildable

    cfg = load_config(str(REPO / "configs/test/few_labels_tiny.yaml"),
                      [f"method.kwargs.probe_head={tmp_path / 'none.safetensors'}", "data.num_classes=3"])
    with pytest.raises(ConfigError, match="probe head"):
        check_buildable(cfg)


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    """3 classes × 5 rendered demo videos (webm) as class folders, and make_lists' lists of them."""
    from videohpm.data.demo import CLASSES, make_demo_data
    from videohpm.data.lists import read_list

    base = tmp_path_factory.mktemp("few")
    demo = make_demo_data(base / "demo", seed=0, train_per_class=5, val_per_class=1, num_frames=16, size=32,
                          formats=("ssv2",), images=False)
    videos = read_list(demo.lists["ssv2"]["train"], demo.video_dirs["ssv2"])
    root = base / "my_videos"
    for c in range(3):
        (root / CLASSES[c][0]).mkdir(parents=True)
        for i, p in enumerate(p for p, l in zip(videos.paths, videos.labels) if l == c):
            shutil.copyfile(p, root / CLASSES[c][0] / f"clip{i}.webm")
    assert load_tool("make_lists").main(["folder", str(root), str(base / "lists"), "--val-ratio", "0.4"]) == 0
    return base, root


def test_lpft_one_command_on_class_folders(class_folders):
    base, root = class_folders
    out = base / "run"
    rc = load_tool("few_labels").main(["--config", str(REPO / "configs/test/few_labels_tiny.yaml"),
                                       "--lists", str(base / "lists"), "--data-root", str(root),
                                       "--output-dir", str(out), "--seed", "1"])
    assert rc == 0
    doc = json.loads((out / "few_labels.json").read_text())
    probe, ft = doc["probe"], doc["finetune"]
    assert probe["n_train"] == 9 and probe["n_val"] == 6
    # step 0 is the probe exactly (same features, same head): its validation top-1 is the probe's
    assert ft["start_val_top1"] == pytest.approx(probe["val_top1"], abs=1e-9)
    assert ft["kept_val_top1"] >= probe["val_top1"]
    assert ft["kept_val_top1"] == max(ft["val_top1_by_epoch"].values())
    final = torch.load(out / "finetune" / "model_final.pth", map_location="cpu", weights_only=True)
    best = torch.load(out / "finetune" / "model_best.pth", map_location="cpu", weights_only=True)
    assert final["epoch"] == ft["kept_epoch"] == best["epoch"]
    head, _ = read_probe_head(probe["head_path"])
    if ft["kept_epoch"] == 0:  # kept the start: the file's head, bit for bit
        assert torch.equal(final["model"]["head.weight"], head["head.weight"])
    assert torch.equal(final["model"]["feat_norm.std"], head["feat_norm.std"])  # fixed statistics
    # the probe tool on the chain's feature folders writes the same head, bit for bit (the tools compose)
    assert load_tool("probe").main(["--train", str(out / "features" / "train"), "--val", str(out / "features" / "val"),
                                    "--num-classes", "3", "--output-dir", str(base / "probe")]) == 0
    again, meta = read_probe_head(str(base / "probe" / "probe_head.safetensors"))
    assert all(torch.equal(again[k], v) for k, v in head.items()) and meta["num_classes"] == "3"


def test_lpft_command_refuses_bad_input_before_work(class_folders, tmp_path, capsys):
    base, root = class_folders
    tool = load_tool("few_labels")
    args = ["--lists", str(base / "lists"), "--data-root", str(root), "--output-dir", str(tmp_path / "run")]
    assert tool.main(["--config", str(REPO / "configs/test/finetune_generic_tiny.yaml"), *args]) == 2
    assert "not an LP-FT config" in capsys.readouterr().err
    assert tool.main(["--config", str(REPO / "configs/test/few_labels_tiny.yaml"), *args[:1], str(tmp_path),
                      *args[2:]]) == 2
    assert "no train.csv, val.csv" in capsys.readouterr().err
    assert tool.main(["--config", str(REPO / "configs/test/few_labels_tiny.yaml"), *args,
                      f"model.pretrained={tmp_path / 'none.pth'}"]) == 2
    assert "model.pretrained: no such file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()



def test_keep_best_needs_a_validation_split(class_folders, tmp_path):
    from videohpm.config import ConfigError, load_config
    from videohpm.engine.trainer import train

    cfg_path = str(REPO / "configs/test/few_labels_tiny.yaml")
    with pytest.raises(ConfigError, match="train.keep_best"):
        load_config(cfg_path, ["train.eval_every=0"])
    base, root = class_folders
    cfg = load_config(cfg_path, [f"data.train={base / 'lists' / 'train.csv'}", "data.val=", f"data.data_root={root}",
                                 "data.num_classes=3", f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="train.keep_best: chooses on the validation split"):
        train(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before the run folder is written


def test_a_time_pooling_classifier_is_refused_by_export(tmp_path):
    from videohpm.config import load_config
    from videohpm.tasks.weights import load_for_export

    cfg = load_config(str(REPO / "configs/test/few_labels_tiny.yaml"), ["data.num_classes=3"])
    path = tmp_path / "model_final.pth"
    torch.save({"model": _classifier(embed_dim=64, depth=2).state_dict()}, path)
    with pytest.raises(ValueError, match="time_pooling: its head .* has no slot in the export formats"):
        load_for_export(cfg, str(path))
