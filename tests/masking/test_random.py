import torch

from videohpm.masking import make_mask_generator

from .helpers import IMAGE, ODD, VIDEO, assert_valid_mask, gen


def test_counts_video_image_odd():
    g = make_mask_generator("random", mask_ratio=0.9)
    # MAE: len_keep = int(N·(1−γ)) = int(1568·0.1) = 156 visible → 1412 masked
    assert g.num_masked_per_sample(VIDEO) == 1412
    assert_valid_mask(g(VIDEO, generator=gen(0)), VIDEO, 1412)
    g = make_mask_generator("random", mask_ratio=0.75)
    assert_valid_mask(g(IMAGE, generator=gen(0)), IMAGE, 147)  # 196 − int(196·0.25)
    g = make_mask_generator("random", mask_ratio=0.6)
    n = 3 * 5 * 7
    assert_valid_mask(g(ODD, generator=gen(0)), ODD, n - int(n * (1 - 0.6)))


def test_samples_independent_and_uniform():
    g = make_mask_generator("random", mask_ratio=0.75)
    m = g((4000, 1, 4, 4), generator=gen(0))  # 4000 draws over 16 tokens, 12 masked each
    assert m.sum(1).eq(12).all()
    freq = m.float().mean(0)  # each token masked with probability 12/16
    assert torch.allclose(freq, torch.full_like(freq, 0.75), atol=0.04)
    assert len({tuple(r) for r in m[:50].tolist()}) > 40  # rows differ


def test_not_tube_like():
    g = make_mask_generator("random", mask_ratio=0.9)
    m = g(VIDEO, generator=gen(1)).view(2, 8, -1)
    assert not all(torch.equal(m[:, 0], m[:, t]) for t in range(1, 8))
