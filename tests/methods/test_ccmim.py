"""ccMIM recipe (seed 004 Eq. 4–10) on a tiny autoencoder with the [CLS] hooks it needs."""
import pytest
import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from videohpm.masking import make_mask_generator
from videohpm.methods.ccmim import CCMIM
from videohpm.models.autoencoder import MaskedAutoencoder
from videohpm.models.patches import mask_split

from .conftest import TINY


class ClsMAE(MaskedAutoencoder):
    """Reference implementation of the hooks ccMIM asks of the model (test-only):
    ``encode(x, mask, cls=True[, return_cls_logits=True])`` with a learned [CLS] token."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.embed_dim = self.encoder.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        trunc_normal_(self.cls_token, std=0.02)

    def encode(self, x, mask=None, cls=False, return_cls_logits=False):
        if not cls:
            return super().encode(x, mask)
        enc = self.encoder
        B, N = x.shape[0], enc.num_patches
        pos = enc.pos_table(self.grid(x))[0]
        ids = torch.arange(N).expand(B, N) if mask is None else mask_split(mask)[0]
        patches = enc.patch_embed.patches(x)
        patches = torch.gather(patches, 1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        tok = torch.cat([self.cls_token.expand(B, 1, -1), enc.patch_embed.forward_patches(patches) + pos[ids]], 1)
        logits = []
        for blk in enc.blocks:
            if return_cls_logits:
                a = blk.attn
                bias = torch.cat((a.q_bias, a.k_bias, a.v_bias))
                qkv = F.linear(blk.norm1(tok), a.qkv.weight, bias)
                q, k, _ = qkv.view(B, tok.shape[1], 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
                logits.append((q[:, :, :1] @ k[:, :, 1:].transpose(-1, -2)).squeeze(2) * a.head_dim ** -0.5)
            tok = blk(tok)
        tok = enc.norm(tok)
        return (tok, logits) if return_cls_logits else tok


def make(contrast="nce", gen=None, **kw):
    torch.manual_seed(0)
    model = ClsMAE(**TINY)
    gen = gen or make_mask_generator("importance", mask_ratio=0.75)
    return CCMIM(model, gen, contrast=contrast, proj_dim=8, pred_hidden=16, **kw)


def spy_encode(recipe):
    calls = []
    orig = recipe.model.encode

    def encode(x, mask=None, **kw):
        out = orig(x, mask, **kw)
        t = out[0] if isinstance(out, tuple) else out
        calls.append((None if mask is None else int(mask[0].sum()), t.shape[1], t.requires_grad))
        return out

    recipe.model.encode = encode
    return calls


@pytest.mark.parametrize("contrast", ["nce", "align"])
def test_step_parts_gradients_and_stop_gradient(contrast, clip):
    recipe = make(contrast)
    calls = spy_encode(recipe)
    out = recipe({"video": clip}, progress=0.3)
    assert set(out) == {"loss", "loss_rec", "loss_contrast"}
    torch.testing.assert_close(out["loss"].detach(), out["loss_rec"] + 0.2 * out["loss_contrast"])
    # importance pass (all 32 tokens + [CLS], no graph), visible pass (grad), masked pass (SG)
    assert calls == [(None, 33, False), (24, 9, True), (8, 25, False)]
    out["loss"].backward()
    m = recipe.model
    assert m.cls_token.grad.abs().sum() > 0
    assert all(p.grad is not None for p in recipe.projector.parameters())
    if contrast == "align":
        assert all(p.grad is not None for p in recipe.predictor.parameters())
    assert all(p.grad is not None for p in m.encoder.parameters() if p.requires_grad)


def test_mask_hides_the_most_important_patches(clip):
    gen = make_mask_generator("importance", mask_ratio=0.75, temperature=1e-4)  # ≈ top-k
    recipe = make(gen=gen)
    seen = {}
    orig = recipe.mask_generator.__call__

    class Spy:
        needs_scores = True

        def __call__(self, grid, scores=None, **kw):
            seen["scores"] = scores
            seen["mask"] = orig(grid, scores=scores, **kw)
            return seen["mask"]

    recipe.mask_generator = Spy()
    recipe({"video": clip})
    s, mask = seen["scores"], seen["mask"]
    assert s.shape == (2, 32) and torch.allclose(s.sum(1), torch.ones(2))
    top = s.topk(24, dim=1).indices
    assert torch.equal(mask, torch.zeros_like(mask).scatter_(1, top, True))
    torch.testing.assert_close(s, recipe.importance(clip))


def test_random_dividing_ablation_skips_importance_pass(clip):
    recipe = make(gen=make_mask_generator("random", mask_ratio=0.75))
    calls = spy_encode(recipe)
    recipe({"video": clip})
    assert [c[0] for c in calls] == [24, 8]


def test_needs_cls_hooks_and_validates_options(tiny_model):
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        CCMIM(tiny_model(), make_mask_generator("importance"))
    with pytest.raises(ValueError, match="contrast"):
        make("simclr")
    with pytest.raises(ValueError, match="importance_layers"):
        make(importance_layers="first")
