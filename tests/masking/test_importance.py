"""ccMIM importance (ccMIM paper Eq. 4) and importance-sampled masking (Eq. 5–6)."""
import math

import pytest
import torch

from videohpm.masking import ImportanceMaskGenerator, cls_attention_importance, make_mask_generator

from .helpers import IMAGE, ODD, VIDEO, assert_valid_mask, gen, per_slice_counts


def qk(B=2, h=3, N=6, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, h, N + 1, d, generator=g), torch.randn(B, h, N + 1, d, generator=g)


def eq4_loop(q, k):
    """s_j = softmax_j( mean_h q_h,0 · k_h,j / √d ), j = 1..N, written as loops."""
    B, h, N1, d = q.shape
    out = torch.empty(B, N1 - 1, dtype=torch.float64)
    for b in range(B):
        logits = []
        for j in range(1, N1):
            logits.append(sum(float(q[b, hh, 0] @ k[b, hh, j]) / math.sqrt(d) for hh in range(h)) / h)
        z = sum(math.exp(v) for v in logits)
        for j, v in enumerate(logits):
            out[b, j] = math.exp(v) / z
    return out


def test_eq4_from_qk_and_from_attention_probabilities():
    q, k = qk()
    ref = eq4_loop(q, k)
    s = cls_attention_importance(q=q, k=k)
    assert s.shape == (2, 6)
    torch.testing.assert_close(s.double(), ref, rtol=1e-5, atol=1e-7)
    # the full attention map (softmax over the [CLS] and all patch keys, per head) gives Eq. 4 too
    attn = ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1)  # d = 4 → √d = 2
    torch.testing.assert_close(cls_attention_importance(attn).double(), ref, rtol=1e-5, atol=1e-7)
    # several layers: logits averaged over layers and heads
    q2, k2 = qk(seed=1)
    attn2 = ((q2 @ k2.transpose(-1, -2)) / 2.0).softmax(-1)
    both = cls_attention_importance([attn, attn2])

    def head_mean_logits(qq, kk):  # [B, N]: mean_h q_h,0 · k_h,j / √d
        return ((qq[:, :, :1] @ kk[:, :, 1:].transpose(-1, -2)).squeeze(2) / 2.0).mean(1)

    ref2 = ((head_mean_logits(q, k) + head_mean_logits(q2, k2)) / 2).softmax(-1)
    torch.testing.assert_close(both, ref2, rtol=1e-5, atol=1e-7)
    # the [CLS]-row logits a model hook returns (one layer, or a list over layers)
    torch.testing.assert_close(cls_attention_importance(cls_logits=(q[:, :, :1] @ k[:, :, 1:].transpose(-1, -2)).squeeze(2) / 2.0).double(), ref, rtol=1e-5, atol=1e-7)
    lg = [(qq[:, :, :1] @ kk[:, :, 1:].transpose(-1, -2)).squeeze(2) / 2.0 for qq, kk in ((q, k), (q2, k2))]
    torch.testing.assert_close(cls_attention_importance(cls_logits=lg), ref2, rtol=1e-5, atol=1e-7)


def test_official_direction_patch_to_cls():
    q, k = qk(seed=2)
    attn = ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1)
    s = cls_attention_importance([attn, attn], direction="patch_to_cls")
    B, h, N1, _ = attn.shape
    for b in range(B):
        col = [2 * sum(float(attn[b, hh, j, 0]) for hh in range(h)) / h for j in range(1, N1)]
        z = sum(math.exp(c) for c in col)
        for j, c in enumerate(col):
            assert s[b, j].item() == pytest.approx(math.exp(c) / z, rel=1e-5)


def test_importance_errors():
    q, k = qk()
    with pytest.raises(ValueError, match="both q and k"):
        cls_attention_importance(q=q)
    with pytest.raises(ValueError, match="cls_logits"):
        cls_attention_importance(cls_logits=torch.zeros(2, 6))
    with pytest.raises(ValueError, match="direction"):
        cls_attention_importance(q=q, k=k, direction="sideways")
    with pytest.raises(ValueError, match=r"attn\[0\]"):
        cls_attention_importance(torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError, match="sampler"):
        make_mask_generator("importance", sampler="topk")
    with pytest.raises(ValueError, match="temperature"):
        make_mask_generator("importance", temperature=0.0)
    with pytest.raises(ValueError, match="scores"):
        make_mask_generator("importance")(IMAGE)


@pytest.mark.parametrize("sampler", ["gumbel", "official"])
def test_exact_counts(sampler):
    g = make_mask_generator("importance", mask_ratio=0.9, sampler=sampler, per_frame=True)
    s = torch.rand(2, 1568, generator=gen(0))
    m = g(VIDEO, scores=s, generator=gen(1))
    assert per_slice_counts(m, VIDEO).eq(176).all()
    assert_valid_mask(m, VIDEO, 1408)
    g = make_mask_generator("importance", mask_ratio=0.9, sampler=sampler)  # over all N
    assert_valid_mask(g(VIDEO, scores=s, generator=gen(1)), VIDEO, 1412)
    g = make_mask_generator("importance", mask_ratio=0.75, sampler=sampler)
    assert_valid_mask(g(IMAGE, scores=torch.rand(3, 196), generator=gen(1)), IMAGE, 147)
    g = make_mask_generator("importance", mask_ratio=0.6, sampler=sampler, per_frame=True)
    m = g(ODD, scores=torch.rand(3, 105), generator=gen(1))
    assert per_slice_counts(m, ODD).eq(21).all()


def test_gumbel_is_importance_sampling():
    """k = 1: token j is masked with probability s_j (Gumbel-top-k = sampling ∝ importance)."""
    g = make_mask_generator("importance", mask_ratio=0.25)  # n = 4 → 4 − int(4·0.75) = 1 masked
    s = torch.tensor([0.1, 0.2, 0.3, 0.4]).repeat(20000, 1)
    m = g((20000, 1, 2, 2), scores=s, generator=gen(0))
    assert m.sum(1).eq(1).all()
    torch.testing.assert_close(m.float().mean(0), s[0], atol=0.015, rtol=0)


@pytest.mark.parametrize("sampler", ["gumbel", "official"])
def test_bias_towards_important_but_random(sampler):
    n = 16
    s = torch.linspace(1, 3, n).log().softmax(0) if sampler == "gumbel" else torch.linspace(0, 0.9, n).exp()
    s = s.repeat(4000, 1)
    g = make_mask_generator("importance", mask_ratio=0.5, sampler=sampler)  # 8 of 16
    freq = g((4000, 1, 4, 4), scores=s, generator=gen(2)).float().mean(0)
    # more important → masked more often (monotone up to sampling noise) ...
    assert freq[-4:].mean() > freq[:4].mean() + 0.15
    assert (freq[1:] - freq[:-1]).min() > -0.05
    # ... yet not deterministically: every token is sometimes visible and sometimes masked
    assert freq.max() < 0.98 and freq.min() > 0.02


def test_official_noise_is_bounded_and_gumbel_temperature():
    # log-importance gaps > 1 cannot be overturned by the official sampler's U[0, 1) noise
    s = torch.tensor([1.0, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 10.0]).repeat(500, 1)
    off = make_mask_generator("importance", mask_ratio=0.5, sampler="official")
    m = off((500, 1, 2, 4), scores=s, generator=gen(0))
    assert m[:, 4:].all() and not m[:, :4].any()
    gum = make_mask_generator("importance", mask_ratio=0.5, sampler="gumbel")
    m = gum((500, 1, 2, 4), scores=s, generator=gen(0))
    assert not m[:, 4:].all()  # Gumbel keeps some randomness at this gap ...
    cold = make_mask_generator("importance", mask_ratio=0.5, sampler="gumbel", temperature=0.01)
    assert cold((500, 1, 2, 4), scores=s, generator=gen(0))[:, 4:].all()  # ... unless cold


def test_deterministic_and_repr():
    g = make_mask_generator("importance", mask_ratio=0.75)
    assert isinstance(g, ImportanceMaskGenerator) and "gumbel" in repr(g)
    s = torch.rand(3, 196, generator=gen(0))
    assert torch.equal(g(IMAGE, scores=s, generator=gen(5)), g(IMAGE, scores=s, generator=gen(5)))
    assert not torch.equal(g(IMAGE, scores=s, generator=gen(5)), g(IMAGE, scores=s, generator=gen(6)))
