"""tools/export.py and its formats, each loaded back by the library that owns it: Hugging Face
folders through ``transformers.from_pretrained``, timm backbones through ``timm.create_model``,
the VideoMAE V1 layout against the official classes' parameter inventory (written out below from
``modeling_pretrain.py`` / ``modeling_finetune.py``) and through our loader."""
from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification  # noqa: E402

from videohpm.models import MaskedAutoencoder, VideoClassifier, create_model, load_pretrained  # noqa: E402
from videohpm.models.formats import export_state_dict, timm_model_args, write_export  # noqa: E402

from .helpers import TINY_IMAGE, TINY_VIDEO, clip, random_mask  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLS_VIDEO = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2, num_heads=2)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial values everywhere (norms, biases, gammas), so that a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1 or "gamma" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


# --- Hugging Face -------------------------------------------------------------------------------
def test_hf_folder_reproduces_pretraining_model(tmp_path):
    model = _randomize(MaskedAutoencoder(**TINY_VIDEO, loss_predictor=True))
    files = write_export(model, "hf", tmp_path / "hf")
    assert sorted(os.path.basename(f) for f in files) == ["config.json", "model.safetensors"]
    hf = VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.layer_norm_eps == 1e-6  # HF honours it in every block and the encoder norm
    x, mask = clip(seed=3), random_mask(2, 32, 24, seed=3)
    with torch.no_grad():
        out = hf(x.permute(0, 2, 1, 3, 4), bool_masked_pos=mask)
        enc = hf.videomae(x.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).last_hidden_state
        latent = model.encode(x, mask)
        pred = model.decode(latent, mask)
    # HF's decoder norm is LayerNorm(eps=1e-5) whatever the config says: within 1e-4, not exact
    assert (enc - latent).abs().max() < 1e-4
    assert (out.logits - pred).abs().max() < 1e-4


def test_hf_folder_reproduces_classifier_with_class_names(tmp_path):
    model = _randomize(VideoClassifier(**CLS_VIDEO, num_classes=3))
    write_export(model, "hf", tmp_path / "hf", class_names=["push", "pull", "spin"])
    hf = VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.id2label == {0: "push", 1: "pull", 2: "spin"}
    x = clip(seed=4)
    with torch.no_grad():
        assert (hf(x.permute(0, 2, 1, 3, 4)).logits - model(x)).abs().max() < 1e-4  # fc_norm eps 1e-5 in HF


def test_hf_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="layer scale"):
        write_export(MaskedAutoencoder(**TINY_VIDEO, init_values=0.1), "hf", tmp_path / "a")
    with pytest.raises(ValueError, match=r"\[CLS\] token"):
        write_export(MaskedAutoencoder(**TINY_IMAGE, cls_token=True), "hf", tmp_path / "b")
    assert not os.listdir(tmp_path)  # nothing written, not even a temporary folder


# --- VideoMAE V1 --------------------------------------------------------------------------------
def _v1_block(pre: str, d: int, layer_scale: bool) -> dict:
    """``modeling_finetune.Block(dim=d, qkv_bias=True, init_values=...)`` parameters."""
    inv = {f"{pre}.norm1.weight": (d,), f"{pre}.norm1.bias": (d,), f"{pre}.attn.q_bias": (d,),
           f"{pre}.attn.v_bias": (d,), f"{pre}.attn.qkv.weight": (3 * d, d), f"{pre}.attn.proj.weight": (d, d),
           f"{pre}.attn.proj.bias": (d,), f"{pre}.norm2.weight": (d,), f"{pre}.norm2.bias": (d,),
           f"{pre}.mlp.fc1.weight": (4 * d, d), f"{pre}.mlp.fc1.bias": (4 * d,), f"{pre}.mlp.fc2.weight": (d, 4 * d),
           f"{pre}.mlp.fc2.bias": (d,)}
    if layer_scale:  # init_values > 0
        inv.update({f"{pre}.gamma_1": (d,), f"{pre}.gamma_2": (d,)})
    return inv


def official_pretrain_inventory(d, depth, dd, ddepth, t, p, c, layer_scale):
    """``modeling_pretrain.PretrainVisionTransformer(encoder_embed_dim=d, encoder_depth=depth,
    decoder_embed_dim=dd, decoder_depth=ddepth, decoder_num_classes=c·t·p·p, tubelet_size=t,
    patch_size=p, qkv_bias=True, init_values=..., use_learnable_pos_emb=False)``: the sin-cos tables
    are plain tensor attributes (no state), ``encoder.head`` is Identity (encoder_num_classes=0)."""
    inv = {"encoder.patch_embed.proj.weight": (d, c, t, p, p), "encoder.patch_embed.proj.bias": (d,),
           "encoder.norm.weight": (d,), "encoder.norm.bias": (d,),
           "decoder.norm.weight": (dd,), "decoder.norm.bias": (dd,),
           "decoder.head.weight": (c * t * p * p, dd), "decoder.head.bias": (c * t * p * p,),
           "encoder_to_decoder.weight": (dd, d), "mask_token": (1, 1, dd)}
    for i in range(depth):
        inv.update(_v1_block(f"encoder.blocks.{i}", d, layer_scale))
    for i in range(ddepth):
        inv.update(_v1_block(f"decoder.blocks.{i}", dd, layer_scale))
    return inv


def official_finetune_inventory(d, depth, t, p, c, num_classes, layer_scale):
    """``modeling_finetune.VisionTransformer(..., use_mean_pooling=True, init_values=...)``: norm is
    Identity, fc_norm and head hold the pooled feature's LayerNorm and the classifier."""
    inv = {"patch_embed.proj.weight": (d, c, t, p, p), "patch_embed.proj.bias": (d,),
           "fc_norm.weight": (d,), "fc_norm.bias": (d,), "head.weight": (num_classes, d), "head.bias": (num_classes,)}
    for i in range(depth):
        inv.update(_v1_block(f"blocks.{i}", d, layer_scale))
    return inv


@pytest.mark.parametrize("layer_scale", [False, True])
def test_videomae_v1_pretrain_export_matches_official_inventory_and_round_trips(tmp_path, layer_scale):
    model = _randomize(MaskedAutoencoder(**TINY_VIDEO, loss_predictor=True, init_values=0.1 if layer_scale else None))
    path = tmp_path / "v1.pth"
    assert write_export(model, "videomae", path) == [str(path)]
    sd = torch.load(path, weights_only=True)["model"]  # VideoMAE's {"model": ...} file
    got = {k: tuple(v.shape) for k, v in sd.items()}
    assert got == official_pretrain_inventory(32, 2, 16, 2, 2, 8, 3, layer_scale)
    back = MaskedAutoencoder(**TINY_VIDEO, init_values=0.1 if layer_scale else None).eval()
    report = load_pretrained(back, path, strict=True)
    assert report.source_format == "videomae" and report.ok
    x, mask = clip(seed=6), random_mask(2, 32, 24, seed=6)
    with torch.no_grad():
        assert torch.equal(back.decode(back.encode(x, mask), mask), model.decode(model.encode(x, mask), mask))


def test_videomae_v1_finetune_export_matches_official_inventory(tmp_path):
    model = _randomize(VideoClassifier(**CLS_VIDEO, num_classes=5, init_values=0.1))
    write_export(model, "videomae", tmp_path / "ft.pth")
    sd = torch.load(tmp_path / "ft.pth", weights_only=True)["model"]
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_finetune_inventory(32, 2, 2, 8, 3, 5, True)
    back = VideoClassifier(**CLS_VIDEO, num_classes=5, init_values=0.1).eval()
    assert load_pretrained(back, tmp_path / "ft.pth", strict=True).ok
    x = clip(seed=7)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_videomae_v1_refuses_mae_parts(tmp_path):
    with pytest.raises(ValueError, match="decoder embedding bias"):
        write_export(MaskedAutoencoder(**TINY_IMAGE, decoder_embed_bias=True), "videomae", tmp_path / "x.pth")
    assert not os.listdir(tmp_path)


# --- timm ---------------------------------------------------------------------------------------
def test_timm_backbone_of_mae_style_image_encoder(tmp_path):
    """[CLS], MAE's 2-D table and layer scale: timm_model_args rebuilds it, strict=True loads it."""
    model = _randomize(MaskedAutoencoder(**TINY_IMAGE, cls_token=True, sincos_table="2d", init_values=0.1,
                                         decoder_embed_bias=True))
    files = write_export(model, "timm", tmp_path / "timm")
    assert {"config.json", "model.safetensors", "pytorch_model.bin"} <= {os.path.basename(f) for f in files}
    net = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    x = clip(t=1, seed=8)
    with torch.no_grad():
        ours = model.encode(x, cls=True)  # [B, 1 + N, D] after the final norm
        theirs = net.forward_features(x[:, :, 0])
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max() < 1e-4
    # the plain state dict that detectron2 ViTDet / mmseg read, into a timm model built by hand
    arch, kwargs = timm_model_args(model)
    sd = torch.load(tmp_path / "timm" / "pytorch_model.bin", weights_only=True)
    assert sd["patch_embed.proj.weight"].shape == (32, 3, 8, 8) and sd["pos_embed"].shape == (1, 17, 32)
    assert "blocks.1.ls2.gamma" in sd and "cls_token" in sd
    hand = timm.create_model(arch, **kwargs).eval()
    hand.load_state_dict(sd, strict=True)
    with torch.no_grad():
        assert (hand.forward_features(x[:, :, 0]) - ours).abs().max() < 1e-4


def test_timm_backbone_of_image_classifier(tmp_path):
    model = _randomize(VideoClassifier(**{**CLS_VIDEO, "num_frames": 1, "tubelet_size": 1}, num_classes=4))
    write_export(model, "timm", tmp_path / "timm")
    net = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    assert net.num_classes == 0 and net.pos_embed.shape == (1, 16, 32)  # no [CLS]: class_token=False
    x = clip(t=1, seed=9)
    with torch.no_grad():
        assert (net(x[:, :, 0]) - model.forward_features(x)).abs().max() < 1e-4  # pooled + fc_norm


def test_timm_refuses_video_and_existing_output(tmp_path):
    with pytest.raises(ValueError, match="video model"):
        write_export(MaskedAutoencoder(**TINY_VIDEO), "timm", tmp_path / "t")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        write_export(MaskedAutoencoder(**TINY_IMAGE), "timm", tmp_path / "taken")
    assert os.listdir(tmp_path) == ["taken"] and not os.listdir(tmp_path / "taken")


def test_timm_layout_reads_back_through_our_loader(tmp_path):
    model = _randomize(MaskedAutoencoder(**TINY_IMAGE, cls_token=True, sincos_table="2d", init_values=0.1))
    sd = export_state_dict(model, "timm")
    back = create_model("vit_base_patch16_224", img_size=32, patch_size=8, num_frames=1, tubelet_size=1,
                        embed_dim=32, depth=2, num_heads=2, num_classes=0, cls_token=True, sincos_table="2d",
                        init_values=0.1, use_mean_pooling=False).eval()
    report = load_pretrained(back, sd, strict=True)
    assert report.source_format == "timm" and report.ok
    x = clip(t=1, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(back.forward_features(x), model.encode(x, cls=True)[:, 0], rtol=1e-5, atol=1e-6)


# --- the tool -----------------------------------------------------------------------------------
def _fake_run(tmp_path, config: str) -> str:
    """A run folder as the engine leaves it: config.yaml and model_final.pth (student + teacher)."""
    from videohpm.config import load_config, save_config
    from videohpm.engine.build import build_model

    cfg = load_config(config, [f"train.output_dir={tmp_path / 'run'}"])
    torch.manual_seed(0)
    student, teacher = _randomize(build_model(cfg), 1), _randomize(build_model(cfg), 2)
    os.makedirs(tmp_path / "run")
    save_config(cfg, str(tmp_path / "run" / "config.yaml"))
    from omegaconf import OmegaConf

    torch.save({"model": student.state_dict(), "weights": "model", "teacher": teacher.state_dict(),
                "config": OmegaConf.to_container(cfg, resolve=True), "global_step": 4},
               tmp_path / "run" / "model_final.pth")
    return str(tmp_path / "run")


def _tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_tool", os.path.join(ROOT, "tools", "export.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_exports_a_run_to_hf_and_v1_and_never_overwrites(tmp_path, capsys):
    run = _fake_run(tmp_path, os.path.join(ROOT, "configs/test/pretrain_hpm_tiny.yaml"))
    tool = _tool()
    out = tmp_path / "hf"
    assert tool.main(["--format", "hf", f"checkpoint={run}", "--out", str(out), "--teacher"]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    hf = VideoMAEForPreTraining.from_pretrained(out).eval()
    ck = torch.load(os.path.join(run, "model_final.pth"), weights_only=True)
    teacher = create_model("pretrain_videomae_tiny_patch16_224", img_size=32, patch_size=8, num_frames=4,
                           embed_dim=64, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                           decoder_num_heads=2, loss_predictor=True).eval()
    teacher.load_state_dict(ck["teacher"])
    x, mask = clip(seed=11), random_mask(2, 32, 24, seed=11)
    with torch.no_grad():
        assert (hf(x.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).logits
                - teacher.decode(teacher.encode(x, mask), mask)).abs().max() < 1e-4
    before = sorted(os.listdir(out))
    stamp = os.path.getmtime(out / "model.safetensors")
    assert tool.main(["--format", "hf", f"checkpoint={run}", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == before and os.path.getmtime(out / "model.safetensors") == stamp
    v1 = tmp_path / "v1.pth"
    assert tool.main(["--format", "videomae", f"checkpoint={run}/model_final.pth", "--out", str(v1)]) == 0
    sd = torch.load(v1, weights_only=True)["model"]
    assert "encoder_to_decoder.weight" in sd and not any(k.startswith("loss_predictor") for k in sd)
    assert torch.equal(sd["encoder.blocks.1.attn.qkv.weight"], ck["model"]["encoder.blocks.1.attn.qkv.weight"])
    # a config whose model does not fit the weights: refused, nothing written
    assert tool.main(["--format", "videomae", f"checkpoint={run}", "--out", str(tmp_path / "bad.pth"),
                      "model.kwargs.embed_dim=32"]) == 2
    assert "does not fit" in capsys.readouterr().err and not (tmp_path / "bad.pth").exists()
