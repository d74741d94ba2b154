import pytest
import torch

from videohpm.models import VideoClassifier, param_groups_layer_decay

from .helpers import clip

CFG = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=3, num_heads=2,
           num_classes=5)


def make(**kw) -> VideoClassifier:
    torch.manual_seed(0)
    return VideoClassifier(**{**CFG, **kw})


def test_mean_pooling_head():
    model = make().eval()
    x = clip()
    logits = model(x)
    assert logits.shape == (2, 5)
    tokens = model.encoder(x)  # final norm is Identity with mean pooling
    assert isinstance(model.encoder.norm, torch.nn.Identity)
    ref = model.head(model.fc_norm(tokens.mean(1)))
    torch.testing.assert_close(logits, ref)


def test_no_mean_pooling_uses_final_norm_and_first_token():
    model = make(use_mean_pooling=False).eval()
    assert model.fc_norm is None and isinstance(model.encoder.norm, torch.nn.LayerNorm)
    x = clip()
    torch.testing.assert_close(model(x), model.head(model.encoder(x)[:, 0]))


def test_head_init_scale_and_other_input_size():
    small = make(init_scale=0.001).head.weight.detach()
    big = make(init_scale=1.0).head.weight.detach()
    torch.testing.assert_close(small, big * 0.001)
    assert make()(clip(t=8, hw=48)).shape == (2, 5)


def test_layer_decay_groups():
    model = make(use_learnable_pos_emb=True)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    name_of = {id(p): n for n, p in model.named_parameters()}
    depth = 3
    seen = set()
    for g in groups:
        for p in g["params"]:
            n = name_of[id(p)]
            seen.add(n)
            if n.startswith("encoder.blocks."):
                layer = int(n.split(".")[2]) + 1
            elif n.startswith(("encoder.patch_embed", "encoder.pos_embed")):
                layer = 0
            else:  # fc_norm, head
                layer = depth + 1
            assert g["lr_scale"] == pytest.approx(0.5 ** (depth + 1 - layer)), n
            no_wd = p.ndim <= 1 or n == "encoder.pos_embed"
            assert g["layer_id"] == layer, n
            assert g["weight_decay"] == (0.0 if no_wd else 0.05), n
    assert seen == set(name_of.values())
    assert model.no_weight_decay() == {"encoder.pos_embed"}


def test_classifier_gradients_everywhere():
    model = make(fc_drop_rate=0.5, drop_path_rate=0.1)
    model(clip()).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
