import pytest
import torch

from videohpm.models import VideoClassifier

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


def test_classifier_gradients_everywhere():
    model = make(fc_drop_rate=0.5, drop_path_rate=0.1)
    model(clip()).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
