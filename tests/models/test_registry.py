import pytest
import torch

from videohpm.models import MaskedAutoencoder, VideoClassifier, create_model, list_models

SMALL_INPUT = dict(img_size=32, num_frames=4)


@pytest.mark.parametrize("size,dim,depth,heads,ddim,dheads", [
    ("tiny", 192, 12, 3, 128, 2),
    ("small", 384, 12, 6, 192, 3),
    ("base", 768, 12, 12, 384, 6),
    ("large", 1024, 24, 16, 512, 8),
    ("huge", 1280, 32, 16, 640, 8),
])
def test_video_pretrain_sizes(size, dim, depth, heads, ddim, dheads):
    # depth is overridden to 1 to keep the test cheap; the default depth is checked from the table.
    from videohpm.models.registry import MODEL_SIZES
    assert MODEL_SIZES[size]["depth"] == depth
    m = create_model(f"pretrain_videomae_{size}_patch16_224", depth=1, **SMALL_INPUT)
    assert isinstance(m, MaskedAutoencoder)
    assert m.encoder.embed_dim == dim and m.encoder.blocks[0].attn.num_heads == heads
    assert m.decoder.embed.out_features == ddim and m.decoder.blocks[0].attn.num_heads == dheads
    assert len(m.decoder.blocks) == 4  # VideoMAE's scripts: decoder depth 4 for video
    assert m.patch_size == 16 and m.tubelet_size == 2 and m.norm_pix_loss
    assert m.loss_predictor is None


def test_small_default_grid_is_videomae():
    m = create_model("pretrain_videomae_small_patch16_224", decoder_depth=1, depth=1)
    assert m.default_grid == (8, 14, 14) and m.num_patches == 1568


def test_image_pretrain_defaults():
    m = create_model("pretrain_mae_base_patch16_224", depth=1, img_size=32, loss_predictor=True)
    assert m.tubelet_size == 1 and m.default_grid == (1, 2, 2)
    assert m.decoder.embed.out_features == 512 and len(m.decoder.blocks) == 8
    assert m.decoder.blocks[0].attn.num_heads == 16
    assert m.loss_predictor is not None and m.loss_predictor.head.out_features == 1


def test_classifier_names():
    m = create_model("vit_small_patch16_224", num_classes=7, depth=1, **SMALL_INPUT)
    assert isinstance(m, VideoClassifier)
    assert m(torch.zeros(1, 3, 4, 32, 32)).shape == (1, 7)
    names = list_models()
    for size in ("tiny", "small", "base", "large", "huge"):
        assert f"vit_{size}_patch16_224" in names and f"pretrain_videomae_{size}_patch16_224" in names


def test_overrides_reach_the_model():
    m = create_model("pretrain_videomae_tiny_patch16_224", img_size=64, num_frames=8, tubelet_size=4, patch_size=8,
                     in_chans=1, drop_path_rate=0.1, decoder_depth=2, decoder_embed_dim=64, decoder_num_heads=4,
                     norm_pix_loss=False, loss_predictor=True, use_checkpoint=True, depth=2,
                     input_mean=None, input_std=None)
    assert m.default_grid == (2, 8, 8) and m.in_chans == 1 and not m.norm_pix_loss
    assert m.encoder.use_checkpoint and len(m.decoder.blocks) == 2 and m.decoder.embed.out_features == 64
    assert m.encoder.blocks[1].drop_path.drop_prob == pytest.approx(0.1)


def test_unknown_name_and_kwarg_raise_naming_them():
    with pytest.raises(ValueError, match="pretrain_videomae_smal_patch16_224"):
        create_model("pretrain_videomae_smal_patch16_224")
    with pytest.raises(TypeError, match="decoder_dept"):
        create_model("pretrain_videomae_small_patch16_224", decoder_dept=7)
    with pytest.raises(TypeError, match="fc_drop"):
        create_model("pretrain_videomae_small_patch16_224", fc_drop_rate=0.5)  # classifier-only option
