"""The run configuration: schema, YAML inheritance, overrides, and every shipped config."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from videohpm.config import ConfigError, config_from_dict, config_problems, load_config, problem_key, save_config

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "test" / "pretrain_hpm_tiny.yaml")
SHIPPED = sorted(glob.glob(str(REPO / "configs" / "**" / "*.yaml"), recursive=True))


def test_overrides_apply_with_types():
    cfg = load_config(TINY, ["train.epochs=7", "optim.base_lr=3e-4", "optim.betas=[0.9,0.999]",
                             "model.kwargs.depth=3", "mask.kwargs.mask_ratio=0.5", "train.resume=auto"])
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.base_lr == pytest.approx(3e-4)
    assert list(cfg.optim.betas) == [0.9, 0.999]
    assert cfg.model.kwargs.depth == 3 and cfg.model.kwargs.embed_dim == 64  # merged, not replaced
    assert cfg.mask.kwargs.mask_ratio == 0.5 and cfg.mask.kwargs.alpha_T == 0.5
    assert cfg.train.resume == "auto"
    assert cfg.train.keep_latest == 1  # schema default where the YAML says nothing


@pytest.mark.parametrize("override, key", [
    ("train.epoch=3", "train.epoch"),                       # typo of a schema key
    ("optim.lr_base=1", "optim.lr_base"),
    ("data.numframes=4", "data.numframes"),                 # the data package's schema
    ("deepspeed.zero=2", "deepspeed.zero"),
    ("bogus.key=1", "bogus"),
])
def test_unknown_keys_fail_naming_the_dotted_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])


@pytest.mark.parametrize("override, key", [
    ("train.epochs=abc", "train.epochs"),                   # wrong type
    ("train.batch_size=0", "train.batch_size"),
    ("train.precision=bf17", "train.precision"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.warmup_epochs=5", "optim.warmup_epochs"),       # longer than train.epochs=2
    ("optim.layer_decay=1.5", "optim.layer_decay"),
    ("data.num_frames=0", "data.num_frames"),               # checked by videohpm.data.validate
    ("train.resume=/no/such/checkpoint", "train.resume"),
    ("deepspeed.config=configs/deepspeed/zero9.json", "deepspeed.config"),
    ("deepspeed.extra.zero_optimization.overlapcomm=true", "deepspeed.zero_optimization.overlapcomm"),
    ("deepspeed.extra.gradient_clipping=1.0", "optim.clip_grad"),  # owned by our config
    ("deepspeed.zero_stage=4", "deepspeed.zero_optimization.stage"),
])
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(TINY, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(REPO / "configs" / "nope.yaml"))


@pytest.mark.parametrize("override, key", [
    ("model.kwargs.decoder_dept=7", "model.kwargs"),        # typo inside free kwargs: the model says so
    ("model.name=vit_b", "model.name"),
    ("mask.kwargs.mask_ration=0.9", "mask.kwargs"),
    ("method.kwargs.momentom=0.9", "method"),
])
def test_unbuildable_models_fail_before_any_work(override, key):
    from videohpm.engine import build

    cfg = load_config(TINY, [override])  # free kwargs are checked by their consumers ...
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build.check_buildable(cfg)  # ... on the meta device, before process group / data / DeepSpeed
    import torch

    assert torch.zeros(1).device.type == "cpu"  # the meta mode did not leak


def test_base_inheritance_and_replace(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model: {name: pretrain_videomae_small_patch16_224, kwargs: {loss_predictor: true, depth: 2}}\n"
        "mask: {name: hpm, kwargs: {mask_ratio: 0.9, alpha_T: 0.5}}\n"
        "method: {name: hpm}\ntrain: {epochs: 10, batch_size: 4}\noptim: {warmup_epochs: 1}\n")
    (tmp_path / "child.yaml").write_text(
        "_base_: base.yaml\nmodel: {kwargs: {depth: 3}}\n"
        "mask: {_replace_: true, name: tube, kwargs: {mask_ratio: 0.75}}\ntrain: {epochs: 20}\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    assert cfg.model.kwargs == {"loss_predictor": True, "depth": 3}
    assert OmegaConf.to_container(cfg.mask) == {"name": "tube", "kwargs": {"mask_ratio": 0.75}}
    assert cfg.train.epochs == 20 and cfg.train.batch_size == 4
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(str(tmp_path / "loop.yaml"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(TINY, ["train.epochs=3"])
    save_config(cfg, str(tmp_path / "config.yaml"))
    again = load_config(str(tmp_path / "config.yaml"))
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)
    assert config_from_dict(OmegaConf.to_container(cfg)).train.epochs == 3


# Global batches of the paper settings, as documented in each file (8 GPUs per job).
PAPER_BATCH = {
    "pretrain/ssv2_vit_b_hpm.yaml": 2048, "pretrain/k400_vit_b_hpm.yaml": 2048,
    "pretrain/ssv2_vit_b_videomae.yaml": 2048,
    "pretrain/in1k_vit_b_hpm.yaml": 4096, "pretrain/in1k_vit_b_hpm_800ep.yaml": 4096,
    "pretrain/in1k_vit_l_hpm.yaml": 4096, "pretrain/in1k_vit_l_hpm_800ep.yaml": 4096,
    "finetune/ssv2_vit_b.yaml": 512, "finetune/k400_vit_b.yaml": 512,
    "finetune/in1k_vit_b.yaml": 1024, "finetune/in1k_vit_l.yaml": 1024,
}


def test_every_paper_config_is_shipped():
    shipped = {os.path.relpath(p, REPO / "configs") for p in SHIPPED}
    assert set(PAPER_BATCH) <= shipped


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, REPO / "configs"))
def test_every_shipped_config_loads_validates_and_builds(path):
    from videohpm.engine.build import check_buildable

    cfg = load_config(path)
    check_buildable(cfg)  # model, mask generator and recipe exist with these options
    rel = os.path.relpath(path, REPO / "configs")
    if rel in PAPER_BATCH:
        t = cfg.train
        assert t.batch_size * cfg.data.num_sample * t.accum_steps * 8 == PAPER_BATCH[rel]
        if rel.startswith("pretrain/"):
            assert list(cfg.optim.betas) == [0.9, 0.95] and cfg.optim.base_lr == 1.5e-4
            assert cfg.method.name in ("hpm", "mae")
        else:
            assert list(cfg.optim.betas) == [0.9, 0.999] and cfg.method.name == "classification"
            assert cfg.method.kwargs.mixup == 0.8 and cfg.method.kwargs.cutmix == 1.0
            assert cfg.method.kwargs.label_smoothing == 0.1 and cfg.model.kwargs.drop_path_rate == 0.1
        assert cfg.optim.weight_decay == 0.05
    if cfg.method.name == "hpm" and rel in PAPER_BATCH:
        assert cfg.method.kwargs.momentum == 0.999
        assert (cfg.mask.kwargs.alpha_0, cfg.mask.kwargs.alpha_T) == (0.0, 0.5)
        assert cfg.mask.kwargs.mask_ratio == (0.9 if cfg.data.kind == "video" else 0.75)


# --------------------------------------------------------------------------- linear probing, k-NN
LINPROBE = {"finetune/in1k_vit_b_linprobe.yaml": "image", "finetune/ssv2_vit_b_linprobe.yaml": "video"}


@pytest.mark.parametrize("rel", sorted(LINPROBE))
def test_linear_probe_configs_follow_table_s3(rel):
    """Supplement Table S3 (MoCo v3 protocol): SGD, momentum 0.9, base lr 1e-3 with the
    batch / 256 rule, weight decay 0, batch 4096 (8 GPUs), cosine, warm-up 10, 100 epochs,
    RandomResizedCrop only; a frozen pre-trained MAE encoder under BN + linear head."""
    from videohpm.engine.build import check_buildable
    from videohpm.engine.optim import scaled_lr

    cfg = load_config(str(REPO / "configs" / rel))
    check_buildable(cfg)
    o, t, d = cfg.optim, cfg.train, cfg.data
    assert (o.name, o.momentum, o.base_lr, o.lr, o.weight_decay, o.layer_decay) == ("sgd", 0.9, 1e-3, None, 0.0, 1.0)
    assert (o.warmup_epochs, t.epochs, o.min_lr, o.clip_grad) == (10, 100, 0.0, None)
    batch = t.batch_size * d.num_sample * t.accum_steps * 8
    assert batch == 4096 and scaled_lr(o.base_lr, batch) == pytest.approx(0.016)
    assert cfg.mask.name == "none" and cfg.method.name == "linear_probe"
    assert cfg.model.name.startswith("pretrain_") and cfg.model.pretrained.endswith("model_final.pth")
    assert cfg.method.kwargs.num_classes == d.num_classes
    assert (d.kind, d.rand_aug, d.reprob, d.num_sample) == (LINPROBE[rel], "", 0.0, 1)
    assert d.flip is (d.kind == "image")  # SSv2 keeps no flip: its labels name directions
    assert list(d.train_crop_scale) == [0.08, 1.0]


@pytest.mark.parametrize("override, key", [
    ("optim.name=lars", "optim.name"),
    ("optim.momentum=1.0", "optim.momentum"),
    ("optim.momentum=-0.1", "optim.momentum"),
    ("train.knn_every=-1", "train.knn_every"),
    ("train.knn_k=[]", "train.knn_k"),
    ("train.knn_k=[10,0]", "train.knn_k"),
    ("train.knn_temperature=0", "train.knn_temperature"),
    ("train.knn_every=1", "data.train"),                    # the tiny config has no lists ...
])
def test_sgd_and_knn_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])


def test_knn_needs_labelled_lists_and_sgd_is_accepted():
    cfg = load_config(TINY, ["optim.name=SGD", "optim.momentum=0.5"])
    assert cfg.optim.name == "SGD" and cfg.optim.momentum == 0.5 and cfg.train.knn_every == 0
    assert list(cfg.train.knn_k) == [10, 20, 100, 200] and cfg.train.knn_temperature == 0.07
    with pytest.raises(ConfigError, match=r"data\.val: not set, but train\.knn_every=2"):
        load_config(TINY, ["train.knn_every=2", "data.train=a.csv"])
    with pytest.raises(ConfigError, match=r"data\.num_classes: not set, but train\.knn_every=2"):
        load_config(TINY, ["train.knn_every=2", "data.train=a.csv", "data.val=b.csv"])  # ... nor labels
    cfg = load_config(TINY, ["train.knn_every=2", "data.train=a.csv", "data.val=b.csv", "data.num_classes=8"])
    assert cfg.train.knn_every == 2


def test_base_that_is_not_a_yaml_config_gives_a_short_error(tmp_path):
    """`_base_:` naming a list file (it parses as one YAML string) or any other non-YAML file:
    one short line naming the file, never its content."""
    lst = tmp_path / "train.csv"
    lst.write_text("".join(f"video_{i:05d}.webm {i % 8}\n" for i in range(200)))
    readme = Path(__file__).resolve().parents[1] / "README.md"
    for target in (lst, readme):
        child = tmp_path / "child.yaml"
        child.write_text(f"_base_: {target}\n")
        with pytest.raises(ConfigError) as e:
            load_config(str(child))
        msg = str(e.value)
        assert "_base_" in msg and str(target) in msg and "not a YAML config" in msg
        assert "video_00001.webm" not in msg and len(msg) < 400
    with pytest.raises(ConfigError, match="not a YAML config") as e:  # the list given as --config itself
        load_config(str(lst))
    assert "video_00001.webm" not in str(e.value)


def test_all_settings_problems_reported_together():
    """One launch, one error: every bad value of the config named, each with its key."""
    with pytest.raises(ConfigError) as e:
        load_config(TINY, ["train.batch_size=0", "optim.warmup_epochs=5", "optim.layer_decay=1.5",
                           "data.num_frames=0", "deepspeed.zero_stage=4"])
    lines = str(e.value).splitlines()
    assert lines[0] == f"{TINY}: 5 settings problems:"
    keys = [ln.strip().split(":")[0].split(" ")[0] for ln in lines[1:]]
    assert keys == ["optim.warmup_epochs", "optim.layer_decay", "train.batch_size", "data.num_frames",
                    "deepspeed.zero_optimization.stage"]
    # a warm-up longer than the run names a warm-up that fits
    assert "optim.warmup_epochs: 5 warm-up epochs do not fit the train.epochs=2 schedule; set " \
           "optim.warmup_epochs=0.2" in str(e.value)
    with pytest.raises(ConfigError) as one:  # a single problem stays one line
        load_config(TINY, ["train.batch_size=0"])
    assert str(one.value) == f"{TINY}: train.batch_size: must be >= 1, got 0"


def test_the_first_hour_scenario_comes_in_one_error(tmp_path):
    """A 13-video list with a big-data recipe's warm-up and accumulation, one epoch to try: both
    problems and their fixes in one message, before any work."""
    lst = tmp_path / "train.csv"
    lst.write_text("".join(f"v{i}.mp4 {i % 3}\n" for i in range(13)) + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [f"data.train={lst}", "train.epochs=1", "optim.warmup_epochs=5", "train.batch_size=2",
                           "train.accum_steps=8"])
    msg = str(e.value)
    assert msg.startswith(f"{TINY}: 2 settings problems:\n")
    assert "optim.warmup_epochs: 5 warm-up epochs do not fit the train.epochs=1 schedule; set " \
           "optim.warmup_epochs=0.1" in msg
    assert "data.train: 13 videos are too few for one optimizer step with 1 rank(s) × train.batch_size=2 × " \
           "train.accum_steps=8; set train.accum_steps=6" in msg
    load_config(TINY, [f"data.train={lst}", "train.epochs=1", "optim.warmup_epochs=0.1", "train.batch_size=2",
                       "train.accum_steps=6"])  # the fixes it names are enough


def test_values_left_to_the_caller_are_listed_not_raised():
    """`check=False` (tools/train.py: the trainer reports them with its own checks): keys, types and
    interpolations are still refused here; the value problems come back from `config_problems` as
    `key: reason` lines, the same lines `validate_config` raises."""
    bad = ["train.batch_size=0", "optim.layer_decay=1.5"]
    cfg = load_config(TINY, bad, check=False)
    problems = config_problems(cfg)
    assert problems == ["optim.layer_decay: must be in (0, 1], got 1.5", "train.batch_size: must be >= 1, got 0"]
    assert [problem_key(p) for p in problems] == ["optim.layer_decay", "train.batch_size"]
    with pytest.raises(ConfigError) as e:
        load_config(TINY, bad)
    assert str(e.value).splitlines()[1:] == [f"  {p}" for p in problems]
    assert config_problems(load_config(TINY)) == []
    with pytest.raises(ConfigError, match="train.batch_sise"):  # a typo is no value problem
        load_config(TINY, ["train.batch_sise=2"], check=False)
