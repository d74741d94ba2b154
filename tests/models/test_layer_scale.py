"""Layer scale (VideoMAE's ``init_values`` → ``gamma_1``/``gamma_2``) and VideoMAE argument names."""
from __future__ import annotations

import pytest
import torch

from videohpm.models import create_model, load_pretrained
from videohpm.models.registry import FOREIGN_KWARGS

from .helpers import TINY_VIDEO, clip, random_mask
from .reference import block, layer_norm, patch_tokens, videomae_classifier, videomae_table

D, DEPTH, HEADS, K = 32, 2, 2, 6


def v1_finetune_checkpoint(seed: int = 0) -> dict:
    """``modeling_finetune.vit_small_patch16_224``-style ``VisionTransformer(img_size=32,
    patch_size=8, all_frames=4, tubelet_size=2, embed_dim=32, depth=2, num_heads=2, num_classes=6,
    init_values=0.1, use_mean_pooling=True)``: its names and shapes, random values, and gammas far
    from their initial value (as after training)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    sd = {"patch_embed.proj.weight": r(D, 3, 2, 8, 8), "patch_embed.proj.bias": r(D),
          "fc_norm.weight": 1 + r(D), "fc_norm.bias": r(D), "head.weight": r(K, D), "head.bias": r(K)}
    for i in range(DEPTH):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(D), p + "norm1.bias": r(D), p + "attn.q_bias": r(D),
                   p + "attn.v_bias": r(D), p + "attn.qkv.weight": r(3 * D, D), p + "attn.proj.weight": r(D, D),
                   p + "attn.proj.bias": r(D), p + "norm2.weight": 1 + r(D), p + "norm2.bias": r(D),
                   p + "mlp.fc1.weight": r(4 * D, D), p + "mlp.fc1.bias": r(4 * D),
                   p + "mlp.fc2.weight": r(D, 4 * D), p + "mlp.fc2.bias": r(D),
                   p + "gamma_1": r(D, s=1.0), p + "gamma_2": r(D, s=1.0)})
    return sd


def classifier(**kw):
    return create_model("vit_small_patch16_224", img_size=32, patch_size=8, num_frames=4, embed_dim=D,
                        depth=DEPTH, num_heads=HEADS, num_classes=K, **kw).eval()


def test_v1_checkpoint_with_layer_scale_loads_exactly():
    sd = v1_finetune_checkpoint()
    model = classifier(init_values=0.1)
    report = load_pretrained(model, {"model": sd, "epoch": 10}, strict=True)
    assert report.source_format == "videomae" and report.ok
    assert torch.equal(model.encoder.blocks[1].gamma_2, sd["blocks.1.gamma_2"])
    x = clip(seed=1)
    with torch.no_grad():
        ours = model(x)
        ref = videomae_classifier(x, sd, DEPTH, HEADS)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    # without layer scale the gammas are not silently dropped: they are unexpected keys
    report = load_pretrained(classifier(), sd)
    assert sorted(report.unexpected) == sorted("encoder." + k for k in sd if "gamma" in k)
    # and a model that drops them computes something else
    plain = classifier()
    load_pretrained(plain, {k: v for k, v in sd.items() if "gamma" not in k}, strict=True)
    with torch.no_grad():
        assert (plain(x) - ref).abs().max() > 1e-2


def test_layer_scale_in_pretraining_model_encoder_and_decoder():
    """VideoMAE's PretrainVisionTransformer passes init_values to both stacks."""
    m = create_model("pretrain_videomae_tiny_patch16_224", **TINY_VIDEO, init_values=0.25).eval()
    keys = [k for k in m.state_dict() if "gamma" in k]
    assert len(keys) == 2 * (TINY_VIDEO["depth"] + TINY_VIDEO["decoder_depth"])
    assert all(torch.all(m.state_dict()[k] == 0.25) for k in keys)
    with torch.no_grad():
        for k in keys:
            m.state_dict()[k].uniform_(-1, 1)
    sd = {k: v for k, v in m.state_dict().items()}
    x, mask = clip(seed=2), random_mask(2, 32, 24, seed=2)
    with torch.no_grad():
        latent = m.encode(x, mask)
        tok = patch_tokens(x, sd["encoder.patch_embed.proj.weight"], sd["encoder.patch_embed.proj.bias"])
        tok = (tok + videomae_table(32, 32))[~mask].view(2, 8, 32)
        for i in range(TINY_VIDEO["depth"]):
            tok = block(tok, sd, f"encoder.blocks.{i}.", 2)
        ref = layer_norm(tok, sd, "encoder.norm")
    torch.testing.assert_close(latent, ref, rtol=1e-4, atol=1e-5)
    assert m.decode(latent, mask).shape == (2, 24, 2 * 8 * 8 * 3)
    grads = {}
    m.train()
    m.decode(m.encode(x, mask), mask).sum().backward()
    grads = [k for k, p in m.named_parameters() if "gamma" in k and p.grad is not None and p.grad.abs().sum() > 0]
    assert len(grads) == len(keys)


@pytest.mark.parametrize("foreign,ours,model", [
    ("with_cp", "use_checkpoint", "pretrain_videomae_tiny_patch16_224"),
    ("with_cp", "use_checkpoint", "vit_tiny_patch16_224"),
    ("head_drop_rate", "fc_drop_rate", "vit_tiny_patch16_224"),
    ("all_frames", "num_frames", "vit_tiny_patch16_224"),
    ("layer_scale_init_value", "init_values", "vit_tiny_patch16_224"),
    ("init_value", "init_values", "pretrain_videomae_tiny_patch16_224"),
    ("class_token", "cls_token", "pretrain_mae_base_patch16_224"),
])
def test_foreign_argument_names_are_refused_naming_ours(foreign, ours, model):
    with pytest.raises(TypeError, match=f"'{foreign}' \\(did you mean '{ours}'\\?"):
        create_model(model, **{foreign: 1})
    assert FOREIGN_KWARGS[foreign] == ours


def test_foreign_name_for_an_option_the_model_lacks_says_so():
    with pytest.raises(TypeError, match="another code base's name for 'fc_drop_rate', which MaskedAutoencoder "
                                        "does not take"):
        create_model("pretrain_videomae_tiny_patch16_224", head_drop_rate=0.1)


def test_init_values_is_accepted_and_zero_means_off():
    assert not any("gamma" in k for k in create_model("vit_tiny_patch16_224", init_values=0.0).state_dict())
    m = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_frames=4, init_values=1e-5)
    assert torch.all(m.encoder.blocks[0].gamma_1 == 1e-5)
