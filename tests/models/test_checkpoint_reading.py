"""The one checkpoint reader and strict weight loading: official
VideoMAE files with their `argparse.Namespace` load, DeepSpeed folders resolve, a file that would
run code is refused with a message that names what it holds; weights that do not fit stop the
run instead of leaving parts of the network at random."""
import argparse
import os
from collections import OrderedDict

import pytest
import torch

from videohpm.models import MaskedAutoencoder, VideoClassifier, export_state_dict, load_pretrained
from videohpm.models.loading import PretrainedMismatchError
from videohpm.models.formats import CheckpointRefusedError, read_checkpoint_file, resolve_checkpoint_path

from .helpers import TINY_VIDEO, clip

CLS = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2, num_heads=2)


def classifier(seed=0, **kw) -> VideoClassifier:
    torch.manual_seed(seed)
    return VideoClassifier(**{**CLS, "num_classes": 5, **kw}).eval()


def _official_file(model: torch.nn.Module, path) -> None:
    """What VideoMAE / VideoMAE V2 `utils.save_model` writes (without DeepSpeed): the model in V1
    key names, AdamW's state, the epoch, the loss scaler's state and the run's argparse options."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(clip()).sum().backward()
    opt.step()
    args = argparse.Namespace(model="vit_base_patch16_224", batch_size=8, epochs=40, tubelet_size=2, input_size=224,
                              drop_path=0.1, layer_decay=0.75, lr=1e-3, mixup=0.8, smoothing=0.1, nb_classes=174,
                              data_path="/data/ssv2", output_dir="out", mean=(0.485, 0.456, 0.406), dist_eval=True,
                              enable_deepspeed=False, finetune="", model_key="model|module", init_scale=0.001)
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 0}
    torch.save({"model": export_state_dict(model, "videomae"), "optimizer": opt.state_dict(), "epoch": 39,
                "scaler": scaler, "args": args}, path)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sb = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, sb[k]), k


def test_official_videomae_save_model_file_loads(tmp_path):
    src = classifier(seed=1)
    path = tmp_path / "checkpoint-39.pth"
    _official_file(src, path)
    obj = read_checkpoint_file(path)
    assert isinstance(obj["args"], argparse.Namespace) and obj["args"].nb_classes == 174 and obj["epoch"] == 39
    dst = classifier(seed=2)
    report = load_pretrained(dst, path, strict=True)
    assert report.source_format == "videomae" and report.ok
    _assert_same_weights(dst, src)


def test_deepspeed_checkpoint_folders_resolve_to_their_model_states(tmp_path):
    """VideoMAE with --enable_deepspeed: `<output_dir>/checkpoint-N/mp_rank_00_model_states.pt`
    (DeepSpeed's entries, the model under `module`) and `<output_dir>/latest` naming the tag."""
    src = classifier(seed=3)
    tag = tmp_path / "checkpoint-7"
    tag.mkdir()
    shapes = [OrderedDict((k, v.shape) for k, v in src.named_parameters())]
    torch.save({"module": export_state_dict(src, "videomae"), "buffer_names": [], "optimizer": None,
                "param_shapes": shapes, "global_steps": 70, "skipped_steps": 0, "dp_world_size": 8,
                "ds_config": {"train_micro_batch_size_per_gpu": 8}, "ds_version": "0.9.5", "epoch": 7},
               tag / "mp_rank_00_model_states.pt")
    (tmp_path / "latest").write_text("checkpoint-7")
    assert resolve_checkpoint_path(tag) == str(tag / "mp_rank_00_model_states.pt")
    assert resolve_checkpoint_path(tmp_path) == str(tag / "mp_rank_00_model_states.pt")
    for where in (tag, tmp_path):
        dst = classifier(seed=4)
        assert load_pretrained(dst, where, strict=True).ok
        _assert_same_weights(dst, src)
    (tmp_path / "latest").write_text("checkpoint-8")
    with pytest.raises(FileNotFoundError, match="checkpoint-8"):
        resolve_checkpoint_path(tmp_path)


class _RunsACommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_file_that_would_run_code_is_refused_and_named(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"model": classifier().state_dict(), "hook": _RunsACommand(f"touch {marker}")}, evil)
    with pytest.raises(CheckpointRefusedError) as e:
        read_checkpoint_file(evil)
    msg = str(e.value)
    assert "'posix.system'" in msg and "weights_only=True" in msg and "weights.pth" in msg
    with pytest.raises(CheckpointRefusedError, match="posix.system"):
        load_pretrained(classifier(), evil)
    assert not marker.exists()
    junk = tmp_path / "notes.pth"
    junk.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointRefusedError, match="not a torch.save file"):
        read_checkpoint_file(junk)


def test_a_checkpoint_of_which_nothing_fits_is_an_error(tmp_path):
    wide = MaskedAutoencoder(**{**TINY_VIDEO, "embed_dim": 48, "decoder_embed_dim": 24})
    path = tmp_path / "wide.pth"
    torch.save({"model": wide.state_dict()}, path)
    narrow = classifier()
    before = {k: v.clone() for k, v in narrow.state_dict().items()}
    for strict in (False, "parts"):
        with pytest.raises(PretrainedMismatchError, match="not one tensor") as e:
            load_pretrained(narrow, path, strict=strict)
        assert "encoder.blocks.0.attn.qkv.weight (144, 48) -> (96, 32)" in str(e.value)
    for k, v in narrow.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_tubelet_mismatch_counts_as_missing_and_stops_fine_tuning():
    src = MaskedAutoencoder(**TINY_VIDEO)  # tubelet 2
    dst = classifier(tubelet_size=1, num_frames=2)  # same grid (2 x 4 x 4), another patch embedding
    report = load_pretrained(dst, src.state_dict())
    key = "encoder.patch_embed.proj.weight"
    assert [m[0] for m in report.mismatched] == [key]
    assert key in report.missing and key in report.problem_keys()
    with pytest.raises(PretrainedMismatchError, match=r"mismatched \(1.*encoder\.patch_embed\.proj\.weight"):
        load_pretrained(classifier(tubelet_size=1, num_frames=2), src.state_dict(), strict="parts")


def test_fine_tuning_ignores_only_the_documented_pretraining_parts():
    src = MaskedAutoencoder(**TINY_VIDEO, loss_predictor=True)
    sd = dict(src.state_dict())
    teacher = {f"teacher.{k}": v.clone() for k, v in sd.items() if k.startswith("encoder.")}  # an EMA copy
    for source in (export_state_dict(src, "videomae") | teacher, sd | teacher):  # V1 names (no d_ψ), ours
        report = load_pretrained(classifier(), source, strict="parts")
        assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
        assert report.expected_missing == report.missing and report.problem_keys() == []
        assert {"decoder.mask_token", "decoder.embed.weight", "encoder.norm.weight"} <= set(report.ignored)
        assert set(teacher) <= set(report.ignored)
    assert any(k.startswith("loss_predictor.") for k in report.ignored)
    # a key of no known part: stops, named
    with pytest.raises(PretrainedMismatchError, match=r"unexpected \(1, not in the model\): encoder\.blocks\.0\.extra"):
        load_pretrained(classifier(), {**sd, "encoder.blocks.0.extra": torch.zeros(3)}, strict="parts")


def test_layer_scale_checkpoint_needs_a_layer_scale_model():
    """VideoMAE V2 / some V1 fine-tuned ViTs carry `blocks.N.gamma_1/2` (layer scale): dropping
    them computes another network, so a model without layer scale refuses them; with
    `init_values` set the checkpoint loads exactly and computes the same logits."""
    src = classifier(seed=5, init_values=0.1)
    with torch.no_grad():
        for blk in src.encoder.blocks:
            blk.gamma_1.uniform_(0.05, 0.5)
            blk.gamma_2.uniform_(0.05, 0.5)
    v1 = export_state_dict(src, "videomae")
    assert "blocks.0.gamma_1" in v1
    with pytest.raises(PretrainedMismatchError, match="gamma_1"):
        load_pretrained(classifier(), v1, strict="parts")
    dst = classifier(seed=6, init_values=1e-5)
    assert load_pretrained(dst, v1, strict=True).ok
    x = clip(seed=7)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
