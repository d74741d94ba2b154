"""Checkpoint conversion, and the peer-equivalence test against Hugging Face VideoMAE."""
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification  # noqa: E402

from videohpm.models import (MaskedAutoencoder, VideoClassifier, export_state_dict, hf_config_from_model,  # noqa: E402
                             interpolate_pos_embed, load_pretrained)
from videohpm.models.formats import detect_format, unwrap_state_dict  # noqa: E402

from .helpers import TINY_VIDEO, clip, random_mask  # noqa: E402

HF_TINY = dict(image_size=32, patch_size=8, num_channels=3, num_frames=4, tubelet_size=2, hidden_size=32,
               num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, decoder_hidden_size=16,
               decoder_num_hidden_layers=2, decoder_num_attention_heads=2, decoder_intermediate_size=64,
               layer_norm_eps=1e-6, attn_implementation="sdpa")


def hf_pretrain(norm_pix_loss: bool) -> VideoMAEForPreTraining:
    torch.manual_seed(0)
    # use_mean_pooling=False: the HF pre-training checkpoints keep VideoMAE's final encoder norm
    # (videomae.layernorm); with True HF drops it.
    return VideoMAEForPreTraining(VideoMAEConfig(**HF_TINY, norm_pix_loss=norm_pix_loss, use_mean_pooling=False)).eval()


def ours(**kw) -> MaskedAutoencoder:
    torch.manual_seed(1)
    return MaskedAutoencoder(**{**TINY_VIDEO, **kw}).eval()


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_peer_equivalence_with_hf_videomae(norm_pix_loss):
    hf = hf_pretrain(norm_pix_loss)
    model = ours(norm_pix_loss=norm_pix_loss)
    report = load_pretrained(model, hf.state_dict(), strict=True)
    assert report.source_format == "hf" and report.ok
    x = clip(seed=5)
    mask = random_mask(2, 32, 24, seed=5)
    with torch.no_grad():
        hf_out = hf(pixel_values=x.permute(0, 2, 1, 3, 4), bool_masked_pos=mask)  # HF wants [B, T, C, H, W]
        hf_enc = hf.videomae(x.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).last_hidden_state
        latent = model.encode(x, mask)
        pred = model.decode(latent, mask)
        target = model.target(x)[mask].view(2, 24, -1)
        loss = torch.nn.functional.mse_loss(pred, target)
    assert (latent - hf_enc).abs().max() < 1e-4
    assert (pred - hf_out.logits).abs().max() < 1e-4
    assert abs(loss.item() - hf_out.loss.item()) < 1e-4


def test_export_to_hf_and_back():
    model = ours(loss_predictor=True)
    sd = export_state_dict(model, "hf")
    assert not any(k.startswith("loss_predictor") for k in sd)  # no slot for d_ψ in HF
    hf = VideoMAEForPreTraining(hf_config_from_model(model, attn_implementation="sdpa")).eval()
    hf.load_state_dict(sd, strict=True)
    x = clip(seed=2)
    mask = random_mask(2, 32, 24, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(hf(x.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).logits,
                                   model.decode(model.encode(x, mask), mask), rtol=1e-4, atol=1e-4)
    for source in (hf.state_dict(), export_state_dict(model, "hf_file")):  # module names, file names
        back = ours()
        report = load_pretrained(back, source, strict=True)
        assert report.ok
        for k, v in back.state_dict().items():
            assert torch.equal(v, model.state_dict()[k]), k


def test_videomae_v1_round_trip_with_wrappers_and_prefixes():
    model = ours(loss_predictor=True)
    v1 = export_state_dict(model, "videomae")
    assert "encoder_to_decoder.weight" in v1 and "mask_token" in v1
    assert "encoder.blocks.0.attn.q_bias" in v1 and "encoder.blocks.0.attn.qkv.weight" in v1
    assert detect_format(v1) == "videomae"
    wrapped = {"model": {"_orig_mod." + k: v for k, v in v1.items()}, "epoch": 3}
    back = ours()
    report = load_pretrained(back, wrapped, strict=True)
    assert report.source_format == "videomae" and report.ok
    for k, v in back.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    # our own format, DeepSpeed/DDP-style wrapped, keeps the loss predictor
    full = ours(loss_predictor=True)
    report = load_pretrained(full, {"module": {"module." + k: v for k, v in model.state_dict().items()}}, strict=True)
    assert report.source_format == "videohpm" and report.ok
    assert torch.equal(full.loss_predictor.head.weight, model.loss_predictor.head.weight)


def test_classifier_from_hf_classification_model():
    torch.manual_seed(0)
    hf = VideoMAEForVideoClassification(VideoMAEConfig(**HF_TINY, use_mean_pooling=True, num_labels=6)).eval()
    model = VideoClassifier(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
                            num_heads=2, num_classes=6).eval()
    report = load_pretrained(model, hf.state_dict(), strict=True)
    assert report.ok
    x = clip(seed=3)
    with torch.no_grad():
        # HF's fc_norm uses LayerNorm's default eps (1e-5) while ours uses VideoMAE's 1e-6.
        torch.testing.assert_close(model(x), hf(x.permute(0, 2, 1, 3, 4)).logits, rtol=1e-4, atol=1e-4)
    sd = export_state_dict(model, "hf")
    assert "classifier.weight" in sd and "fc_norm.weight" in sd
    hf.load_state_dict(sd, strict=True)


def test_pretrained_encoder_into_classifier_reports_parts():
    pre = ours(loss_predictor=True)
    clf = VideoClassifier(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
                          num_heads=2, num_classes=3)
    report = load_pretrained(clf, export_state_dict(pre, "videomae"))
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert "encoder.norm.weight" in report.ignored and "decoder.embed.weight" in report.ignored
    assert not report.unexpected and not report.mismatched
    assert torch.equal(clf.encoder.blocks[1].attn.qkv.weight, pre.encoder.blocks[1].attn.qkv.weight)
    with pytest.raises(RuntimeError, match="missing"):
        load_pretrained(clf, pre.state_dict(), strict=True)


def test_v1_finetuned_layout_learned_pos_interpolation_and_mismatch(tmp_path):
    # A V1 fine-tuned ViT (no prefix) with a learned pos_embed for 2x2x2 tokens, loaded into a
    # classifier with a 4x4x4 grid and another class count.
    src = VideoClassifier(img_size=16, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
                          num_heads=2, num_classes=4, use_learnable_pos_emb=True)
    v1 = export_state_dict(src, "videomae")
    assert "pos_embed" in v1 and "blocks.0.norm1.weight" in v1 and "head.weight" in v1
    path = tmp_path / "ckpt.pth"
    torch.save({"model": v1}, path)
    dst = VideoClassifier(img_size=32, patch_size=8, num_frames=8, tubelet_size=2, embed_dim=32, depth=2,
                          num_heads=2, num_classes=6, use_learnable_pos_emb=True)
    with pytest.raises(ValueError, match="src_grid"):  # time and space both changed: ambiguous
        load_pretrained(dst, path)
    report = load_pretrained(dst, path, src_grid=(2, 2, 2))
    assert report.interpolated == ["encoder.pos_embed"]
    assert {m[0] for m in report.mismatched} == {"head.weight", "head.bias"}
    assert dst.encoder.pos_embed.shape == (1, 4 * 4 * 4, 32)
    src_pos = src.encoder.pos_embed.detach()
    torch.testing.assert_close(dst.encoder.pos_embed.detach(), interpolate_pos_embed(src_pos, (2, 2, 2), (4, 4, 4)))
    # same number of time slices: the (square) source grid is inferred
    same_t = VideoClassifier(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
                             num_heads=2, num_classes=4, use_learnable_pos_emb=True)
    report = load_pretrained(same_t, {"module": v1}, strict=True)
    assert report.interpolated == ["encoder.pos_embed"]
    torch.testing.assert_close(same_t.encoder.pos_embed.detach(), interpolate_pos_embed(src_pos, (2, 2, 2), (2, 4, 4)))


def test_load_from_hf_save_pretrained_folder(tmp_path):
    hf = hf_pretrain(True)
    hf.save_pretrained(tmp_path)  # writes Hub-style names (attention.attention.q_bias ...)
    model = ours()
    assert load_pretrained(model, tmp_path, strict=True).ok
    assert torch.equal(model.decoder.embed.weight, hf.encoder_to_decoder.weight)
    assert torch.equal(model.encoder.blocks[1].attn.q_bias,
                       hf.videomae.encoder.layer[1].attention.attention.query.bias)
    # and our Hub-style export loads through transformers' own loader
    ref = ours()
    from safetensors.torch import save_file
    export_dir = tmp_path / "export"
    hf.save_pretrained(export_dir)
    save_file({k: v.contiguous() for k, v in export_state_dict(ref, "hf_file").items()},
              str(export_dir / "model.safetensors"), metadata={"format": "pt"})
    reloaded = VideoMAEForPreTraining.from_pretrained(export_dir).eval()
    assert torch.equal(reloaded.videomae.encoder.layer[0].attention.attention.value.bias,
                       ref.encoder.blocks[0].attn.v_bias)


def test_unwrap_errors_name_the_problem():
    with pytest.raises(ValueError, match="top-level keys"):
        unwrap_state_dict({"epoch": 1, "args": "x"})
    with pytest.raises(ValueError, match="unrecognised"):
        detect_format({"foo.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        load_pretrained(ours(), "/nonexistent/ckpt.pth")
