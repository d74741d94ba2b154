"""The optional learned [CLS] token of the encoder (ccMIM §3.2 / §4 "Backbone") and its
[CLS]-row attention logits (Eq. 4), against a brute-force transformer written from the equations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from videohpm.models import create_model
from videohpm.models.autoencoder import MaskedAutoencoder

from .helpers import TINY_VIDEO, clip, random_mask


def _model(cls_token: bool = True, seed: int = 0, **kw) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    m = MaskedAutoencoder(**{**TINY_VIDEO, **kw}, cls_token=cls_token)
    with torch.no_grad():  # non-trivial q/v biases, so that a wrong bias slice shows
        for blk in m.encoder.blocks:
            blk.attn.q_bias.normal_(0, 0.5)
            blk.attn.v_bias.normal_(0, 0.5)
    return m


def _brute_force(m: MaskedAutoencoder, x: torch.Tensor, mask=None):
    """[CLS] + visible tokens through the encoder with explicit per-head softmax attention and a
    per-(head, patch) dot-product loop for the [CLS] row: ``q_0 · k_j / √d_h``."""
    enc = m.encoder
    b = x.shape[0]
    tok = enc.patch_embed.proj(x).flatten(2).transpose(1, 2) + enc.pos_embed  # [B, N, D] all tokens
    if mask is not None:
        tok = tok[~mask].view(b, -1, tok.shape[-1])
    tok = torch.cat([enc.cls_token.expand(b, 1, -1), tok], 1)  # the [CLS] position is zero
    logits = []
    for blk in enc.blocks:
        a = blk.attn
        h, hd = a.num_heads, a.head_dim
        y = blk.norm1(tok)
        q = F.linear(y, a.qkv.weight[: enc.embed_dim], a.q_bias)
        k = F.linear(y, a.qkv.weight[enc.embed_dim: 2 * enc.embed_dim])
        v = F.linear(y, a.qkv.weight[2 * enc.embed_dim:], a.v_bias)
        q, k, v = (t.view(b, -1, h, hd).transpose(1, 2) for t in (q, k, v))  # [B, h, 1+n, hd]
        row = torch.zeros(b, h, tok.shape[1] - 1)
        for i in range(h):
            for j in range(1, tok.shape[1]):
                row[:, i, j - 1] = (q[:, i, 0] * k[:, i, j]).sum(-1) / math.sqrt(hd)
        logits.append(row)
        att = (q @ k.transpose(-1, -2) / math.sqrt(hd)).softmax(-1) @ v
        tok = tok + a.proj(att.transpose(1, 2).reshape(tok.shape))
        tok = tok + blk.mlp(blk.norm2(tok))
    return enc.norm(tok), logits


@pytest.mark.parametrize("masked", [False, True])
def test_cls_tokens_and_logits_match_brute_force(masked):
    m = _model().eval()
    x = clip()
    mask = random_mask(2, 32, 24, seed=3) if masked else None
    with torch.no_grad():
        tokens, logits = m.encode(x, mask, cls=True, return_cls_logits=True)
        ref_tokens, ref_logits = _brute_force(m, x, mask)
        plain = m.encode(x, mask, cls=True)
    n = 8 if masked else 32
    assert tokens.shape == (2, 1 + n, 32) and len(logits) == 2
    assert all(t.shape == (2, 2, n) for t in logits)
    torch.testing.assert_close(tokens, ref_tokens, rtol=1e-4, atol=1e-4)
    for got, ref in zip(logits, ref_logits):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain, tokens, rtol=0, atol=0)  # same path without the logits


def test_default_model_unchanged_and_cls_adds_one_key():
    """cls_token=False keeps VideoMAE's state-dict keys (checkpoint conversion depends on them);
    the same weights give the same encodings without [CLS] whatever the flag."""
    plain, withcls = _model(cls_token=False), _model(cls_token=True)
    assert not any("cls" in k for k in plain.state_dict())
    assert set(withcls.state_dict()) - set(plain.state_dict()) == {"encoder.cls_token"}
    assert set(plain.state_dict()) <= set(withcls.state_dict())
    assert withcls.encoder.cls_token.shape == (1, 1, 32) and withcls.encoder.cls_token.abs().sum() > 0
    withcls.load_state_dict(plain.state_dict(), strict=False)
    x, mask = clip(), random_mask(2, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(withcls.encode(x, mask), plain.encode(x, mask), rtol=0, atol=0)
        torch.testing.assert_close(withcls.encode(x), plain.encode(x), rtol=0, atol=0)
    assert (plain.has_cls_token, withcls.has_cls_token) == (False, True)
    assert "encoder.cls_token" in withcls.no_weight_decay() and "encoder.cls_token" not in plain.no_weight_decay()
    assert plain.embed_dim == withcls.embed_dim == 32


def test_cls_gets_gradient_and_decoder_takes_patch_tokens():
    m = _model()
    x, mask = clip(), random_mask(2, 32, 24)
    lat = m.encode(x, mask, cls=True)
    pred = m.decode(lat[:, 1:], mask)
    assert pred.shape == (2, 24, 2 * 8 * 8 * 3)
    (pred.square().mean() + lat[:, 0].square().mean()).backward()
    assert m.encoder.cls_token.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.encoder.parameters())


def test_cls_with_checkpointing_matches_and_other_grid():
    m = _model()
    x, mask = clip(), random_mask(2, 32, 24)
    ref = m.encode(x, mask, cls=True)
    m.set_grad_checkpointing(True)
    torch.testing.assert_close(m.encode(x, mask, cls=True), ref, rtol=0, atol=0)
    tok, logits = m.encode(clip(t=2, hw=48), None, cls=True, return_cls_logits=True)  # grid 1×6×6
    assert tok.shape == (2, 37, 32) and logits[-1].shape == (2, 2, 36)


def test_errors_and_registry():
    with pytest.raises(ValueError, match="cls_token=True"):
        _model(cls_token=False).encode(clip(), cls=True)
    with pytest.raises(ValueError, match="cls=True"):
        _model().encode(clip(), return_cls_logits=True)
    m = create_model("pretrain_videomae_tiny_patch16_224", cls_token=True, img_size=32, patch_size=8,
                     num_frames=4, depth=1)
    assert m.has_cls_token and m.encode(clip(), cls=True).shape == (2, 33, 192)
    with pytest.raises(TypeError, match="cls_tokens"):
        create_model("pretrain_videomae_tiny_patch16_224", cls_tokens=True)


def test_ccmim_checkpoint_cls_token_is_ignored_by_a_classifier_without_cls():
    from videohpm.models import create_model
    from videohpm.models.loading import load_pretrained

    kw = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=1, num_heads=2)
    pre = create_model("pretrain_videomae_tiny_patch16_224", cls_token=True, decoder_embed_dim=16,
                       decoder_depth=1, decoder_num_heads=2, **kw)
    clf = create_model("vit_tiny_patch16_224", num_classes=3, **kw)
    report = load_pretrained(clf, pre.state_dict())
    assert "encoder.cls_token" in report.ignored and not report.unexpected
    assert torch.equal(clf.state_dict()["encoder.patch_embed.proj.weight"],
                       pre.state_dict()["encoder.patch_embed.proj.weight"])
