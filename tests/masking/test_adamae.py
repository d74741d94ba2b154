"""AdaMAE's adaptive mask (AdaMAE, CVPR 2023, §3): N_v = int(N·(1−γ)) visible tokens drawn from the
sampler's categorical p without replacement; every other token masked."""
import itertools

import pytest
import torch

from videohpm.masking import AdaMAEMaskGenerator, available_mask_generators, make_mask_generator
from videohpm.masking.adamae import gumbel_keys

from .helpers import IMAGE, ODD, VIDEO, assert_valid_mask, gen


def _probs(grid, seed=0, sharp=1.0):
    B, T, H, W = grid
    g = torch.Generator().manual_seed(seed)
    return (sharp * torch.randn(B, T * H * W, generator=g)).softmax(-1)


@pytest.mark.parametrize("grid", [VIDEO, IMAGE, ODD, (4, 2, 2, 2)])
@pytest.mark.parametrize("ratio", [0.95, 0.9, 0.75, 0.5, 0.3])
def test_exact_visible_count_per_sample(grid, ratio):
    B, T, H, W = grid
    n = T * H * W
    m = make_mask_generator("adamae", mask_ratio=ratio)
    mask = m(grid, scores=_probs(grid, sharp=4.0), generator=gen(1))
    n_vis = int(n * (1 - ratio))  # the official visible_patches = int(num_patches·(1 − mask_ratio))
    assert m.num_visible_per_sample(grid) == n_vis and m.num_masked_per_sample(grid) == n - n_vis
    assert_valid_mask(mask, grid, n - n_vis)


def test_paper_default_ratio_on_the_vit_b_grid():
    m = AdaMAEMaskGenerator()
    assert m.mask_ratio == 0.95 and m.num_visible_per_sample((1, 8, 14, 14)) == 78  # 1568 tokens → 78 visible


def _subset_law(p, k):
    """Exact law of the set drawn by k sequential draws without replacement from p: a loop over orders."""
    law = {}
    for order in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, 1.0
        for i in order:
            prob *= p[i] / left
            left -= p[i]
        key = tuple(sorted(order))
        law[key] = law.get(key, 0.0) + prob
    return law


def test_visible_set_follows_sampling_without_replacement():
    """The visible set's frequencies match the sequential without-replacement law (and
    torch.multinomial(replacement=False), the official code's call) within 5 binomial SE."""
    p = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    rows, k = 100_000, 2
    m = make_mask_generator("adamae", mask_ratio=0.6)  # 5 tokens → int(5·0.4) = 2 visible
    mask = m((rows, 1, 1, 5), scores=p.expand(rows, 5), generator=gen(0))
    vis = (~mask).nonzero()[:, 1].view(rows, k)
    assert (vis[:, 0] != vis[:, 1]).all()  # never the same token twice
    law = _subset_law(p.tolist(), k)
    multi = torch.multinomial(p.expand(rows, 5), k, replacement=False, generator=gen(1)).sort(dim=1).values
    for key, prob in law.items():
        se = (prob * (1 - prob) / rows) ** 0.5
        freq = ((vis[:, 0] == key[0]) & (vis[:, 1] == key[1])).float().mean().item()
        freq_mn = ((multi[:, 0] == key[0]) & (multi[:, 1] == key[1])).float().mean().item()
        assert abs(freq - prob) < 5 * se + 1e-4, (key, freq, prob)
        assert abs(freq_mn - prob) < 5 * se + 1e-4, (key, freq_mn, prob)


def test_certain_and_impossible_tokens():
    """Mass on exactly N_v tokens: they are always the visible ones; zero-probability tokens never are."""
    grid = (3, 2, 2, 4)  # N = 16, γ = 0.75 → 4 visible
    p = torch.zeros(3, 16)
    chosen = torch.tensor([[0, 5, 9, 15], [1, 2, 3, 4], [12, 13, 14, 8]])
    p.scatter_(1, chosen, 0.25)
    mask = make_mask_generator("adamae", mask_ratio=0.75)(grid, scores=p, generator=gen(3))
    expect = torch.ones(3, 16, dtype=torch.bool).scatter_(1, chosen, False)
    assert torch.equal(mask, expect)


def test_deterministic_with_generator_and_scores_carry_no_gradient():
    grid = (2, 2, 4, 4)
    logits = torch.randn(2, 32, requires_grad=True)
    m = make_mask_generator("adamae", mask_ratio=0.75)
    a = m(grid, scores=logits.softmax(-1), generator=gen(7))
    b = m(grid, scores=logits.softmax(-1), generator=gen(7))
    assert torch.equal(a, b) and not a.requires_grad
    keys = gumbel_keys(torch.full((1, 4), 0.25), gen(0))
    assert keys.shape == (1, 4) and torch.isfinite(keys).all()


def test_registered_and_bad_input_raises_before_work():
    assert "adamae" in available_mask_generators()
    m = make_mask_generator("adamae", mask_ratio=0.9)
    with pytest.raises(ValueError, match="needs scores"):
        m(VIDEO)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        m(VIDEO, scores=torch.ones(2, 7))
    with pytest.raises(TypeError, match="per_frame"):
        make_mask_generator("adamae", mask_ratio=0.9, per_frame=True)
    with pytest.raises(ValueError, match="mask_ratio"):
        make_mask_generator("adamae", mask_ratio=1.0)
