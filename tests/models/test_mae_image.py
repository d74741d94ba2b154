"""Image mode in MAE's conventions: the joint per-patch standardisation of the normalized-pixel
target for T = 1 (of the un-normalised pixels by default; MAE's own target, of the normalised
input, is ``target_unnormalize=False``: tests/models/test_hpm_official.py), MAE's 2-D sin-cos table
and [CLS] token, and official MAE checkpoints (``mae_pretrain_vit_base.pth`` layout of
``models_mae.py``) loading key for key, against brute-force references of MAE's forward."""
from __future__ import annotations

import pytest
import torch

from videohpm.models import create_model, load_pretrained, pixel_target
from videohpm.models.vit import sincos_table_2d

from .helpers import TINY_IMAGE, TINY_VIDEO, clip, random_mask
from .reference import mae_forward, mae_table

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x * IMAGENET_STD + IMAGENET_MEAN


def test_image_target_standardises_each_patch_jointly_as_mae():
    """Per patch of p·p·3 values, (v - mean) / sqrt(var_unbiased + 1e-6) as MAE's forward_loss —
    here of the un-normalised pixels (the default ``target_unnormalize``); MAE patchifies the
    normalised input itself, which gives other values (the standardisation is not invariant to
    the per-channel affine map)."""
    model = create_model("pretrain_mae_base_patch16_224", **TINY_IMAGE).eval()
    x = clip(t=1, seed=4)
    out = model.target(x)  # [B, N, p*p*3]
    px = _pixels(x)[:, :, 0]  # [B, 3, H, W]
    b, p = x.shape[0], 8
    ref = torch.empty_like(out)
    for i in range(b):
        for h in range(4):
            for w in range(4):
                v = px[i, :, h * p:(h + 1) * p, w * p:(w + 1) * p].permute(1, 2, 0).reshape(-1)  # (p p c)
                ref[i, h * 4 + w] = (v - v.mean()) / (v.var(unbiased=True) + 1e-6) ** 0.5
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # and it is not VideoMAE's per-channel standardisation, which differs a lot
    per_channel = pixel_target(x, 1, 8, per_patch=False)
    assert (per_channel - ref).abs().max() > 0.1
    # nor MAE's own target (the normalised input patchified): target_unnormalize=False gives that
    official = create_model("pretrain_mae_base_patch16_224", **TINY_IMAGE, target_unnormalize=False).target(x)
    torch.testing.assert_close(official, pixel_target(x, 1, 8, mean=None, std=None), rtol=0, atol=0)
    assert (official - ref).abs().max() > 0.1


def test_video_target_keeps_videomae_per_channel_tubelets():
    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY_VIDEO).eval()
    x = clip(seed=5)
    out = model.target(x)  # [B, N, t*p*p*3]
    px = _pixels(x)
    ref = torch.empty_like(out)
    for i in range(2):
        for tt in range(2):
            for h in range(4):
                for w in range(4):
                    v = px[i, :, 2 * tt:2 * tt + 2, h * 8:(h + 1) * 8, w * 8:(w + 1) * 8]  # [3, 2, 8, 8]
                    v = v.permute(1, 2, 3, 0).reshape(-1, 3)  # (t p p) x c
                    z = (v - v.mean(0)) / (v.std(0, unbiased=True) + 1e-6)
                    ref[i, tt * 16 + h * 4 + w] = z.reshape(-1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_sincos_2d_table_is_maes():
    torch.testing.assert_close(sincos_table_2d(4, 4, 32), mae_table(4, 32, cls_row=False), rtol=0, atol=1e-6)
    torch.testing.assert_close(sincos_table_2d(14, 14, 64), mae_table(14, 64, cls_row=False), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="one time slice"):
        create_model("pretrain_videomae_tiny_patch16_224", **TINY_VIDEO, sincos_table="2d")
    with pytest.raises(ValueError, match="sincos_table"):
        create_model("pretrain_mae_base_patch16_224", **TINY_IMAGE, sincos_table="4d")


# --- an official MAE checkpoint, built key by key from models_mae.MaskedAutoencoderViT -----------
D, DEPTH, HEADS, DD, DDEPTH, DHEADS, P, GRID = 32, 2, 2, 16, 2, 2, 8, 4


def mae_checkpoint(seed: int = 0, decoder: bool = True) -> dict:
    """``MaskedAutoencoderViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
    decoder_embed_dim=16, decoder_depth=2, decoder_num_heads=2)``'s state dict: its exact names and
    shapes, random values (non-zero key biases too), the fixed 2-D tables it stores."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    def one(*shape):
        return 1 + r(*shape, s=0.1)

    def blk(pre, d):
        return {f"{pre}.norm1.weight": one(d), f"{pre}.norm1.bias": r(d), f"{pre}.attn.qkv.weight": r(3 * d, d),
                f"{pre}.attn.qkv.bias": r(3 * d), f"{pre}.attn.proj.weight": r(d, d), f"{pre}.attn.proj.bias": r(d),
                f"{pre}.norm2.weight": one(d), f"{pre}.norm2.bias": r(d), f"{pre}.mlp.fc1.weight": r(4 * d, d),
                f"{pre}.mlp.fc1.bias": r(4 * d), f"{pre}.mlp.fc2.weight": r(d, 4 * d), f"{pre}.mlp.fc2.bias": r(d)}

    sd = {"cls_token": r(1, 1, D), "pos_embed": mae_table(GRID, D), "patch_embed.proj.weight": r(D, 3, P, P),
          "patch_embed.proj.bias": r(D), "norm.weight": one(D), "norm.bias": r(D)}
    for i in range(DEPTH):
        sd.update(blk(f"blocks.{i}", D))
    if decoder:
        sd.update({"decoder_embed.weight": r(DD, D), "decoder_embed.bias": r(DD), "mask_token": r(1, 1, DD),
                   "decoder_pos_embed": mae_table(GRID, DD), "decoder_norm.weight": one(DD),
                   "decoder_norm.bias": r(DD), "decoder_pred.weight": r(P * P * 3, DD),
                   "decoder_pred.bias": r(P * P * 3)})
        for i in range(DDEPTH):
            sd.update(blk(f"decoder_blocks.{i}", DD))
    return sd


def mae_model(**kw):
    return create_model("pretrain_mae_base_patch16_224", img_size=32, patch_size=P, embed_dim=D, depth=DEPTH,
                        num_heads=HEADS, decoder_embed_dim=DD, decoder_depth=DDEPTH, decoder_num_heads=DHEADS,
                        **{**dict(cls_token=True, sincos_table="2d", decoder_embed_bias=True), **kw}).eval()


def test_official_mae_checkpoint_loads_exactly():
    sd = mae_checkpoint()
    model = mae_model()
    report = load_pretrained(model, {"model": sd}, strict=True)  # MAE saves {"model": ...}
    assert report.source_format == "timm" and report.ok and not report.ignored
    x = clip(t=1, seed=7)
    n, n_vis = GRID * GRID, 4
    g = torch.Generator().manual_seed(3)
    ids_shuffle = torch.argsort(torch.rand(2, n, generator=g), dim=1)  # MAE's random_masking
    ids_keep = ids_shuffle[:, :n_vis]
    mask = torch.ones(2, n, dtype=torch.bool)
    mask.scatter_(1, ids_keep, False)
    with torch.no_grad():
        ref_latent, ref_pred = mae_forward(x, sd, ids_keep, DEPTH, HEADS, DDEPTH, DHEADS)
        latent = model.encode(x, mask, cls=True)  # [CLS] + visible in ascending order
        pred = model.decode(latent, mask, cls=True)  # masked tokens, ascending
        pred_all = model.decode(model.encode(x, None, cls=True), None, cls=True)
        ref_all, ref_pred_all = mae_forward(x, sd, torch.arange(n).expand(2, n), DEPTH, HEADS, DDEPTH, DHEADS)
    order = torch.sort(ids_keep, dim=1)
    ref_sorted = torch.gather(ref_latent[:, 1:], 1, order.indices.unsqueeze(-1).expand(-1, -1, D))
    torch.testing.assert_close(latent[:, 0], ref_latent[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(latent[:, 1:], ref_sorted, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred, ref_pred[mask].view(2, n - n_vis, -1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred_all, ref_pred_all, rtol=1e-4, atol=1e-5)
    # MAE's loss (norm_pix_loss) on the same prediction equals ours
    target = model.target(x)
    ref_loss = ((ref_pred - target) ** 2).mean(-1)[mask].mean()
    ours = ((pred - target[mask].view(2, n - n_vis, -1)) ** 2).mean()
    assert abs(ours.item() - ref_loss.item()) < 1e-5


def test_mae_layout_needs_the_mae_options():
    sd = mae_checkpoint()
    # a default (1-D table, no [CLS]) image model cannot hold it: the keys say what is extra
    report = load_pretrained(mae_model(cls_token=False, sincos_table="1d", decoder_embed_bias=False), sd)
    assert {"encoder.pos_embed", "decoder.pos_embed", "decoder.embed.bias"} <= set(report.unexpected)
    # the encoder-only release file into an image classifier with MAE's [CLS] and table: fine-tuning
    clf = create_model("vit_base_patch16_224", img_size=32, patch_size=P, num_frames=1, tubelet_size=1,
                       embed_dim=D, depth=DEPTH, num_heads=HEADS, num_classes=5, cls_token=True,
                       sincos_table="2d").eval()
    enc_only = mae_checkpoint(decoder=False)
    report = load_pretrained(clf, enc_only)
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(report.ignored) == ["encoder.norm.bias", "encoder.norm.weight"] and not report.unexpected
    x = clip(t=1, seed=8)
    with torch.no_grad():
        feats = clf.encoder.forward_cls(x)
        ref, _ = mae_forward(x, {**enc_only, "norm.weight": torch.ones(D), "norm.bias": torch.zeros(D)},
                             torch.arange(GRID * GRID).expand(2, -1), DEPTH, HEADS, 0, 0, decoder=False)
        # our classifier has no final norm (mean pooling + fc_norm, as MAE's global_pool): compare
        # the pre-norm tokens through the same LayerNorm
        ours = torch.nn.functional.layer_norm(feats, (D,), eps=1e-6)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_mae_cls_decode_requires_cls_model():
    m = create_model("pretrain_mae_base_patch16_224", **TINY_IMAGE).eval()
    x = clip(t=1)
    mask = random_mask(2, 16, 12)
    with pytest.raises(ValueError, match="cls_token=True"):
        m.decode(m.encode(x, mask), mask, cls=True)
