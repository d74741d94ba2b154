import torch

from videohpm.masking import make_mask_generator

from .helpers import IMAGE, ODD, VIDEO, assert_valid_mask, gen, per_slice_counts


def test_counts_per_slice_and_sample():
    g = make_mask_generator("tube", mask_ratio=0.9)
    m = g(VIDEO, generator=gen(0))
    assert per_slice_counts(m, VIDEO).eq(176).all()  # int(0.9·196) = 176
    assert_valid_mask(m, VIDEO, 8 * 176)
    g = make_mask_generator("tube", mask_ratio=0.75)
    assert_valid_mask(g(IMAGE, generator=gen(0)), IMAGE, 147)
    g = make_mask_generator("tube", mask_ratio=0.6)
    m = g(ODD, generator=gen(0))
    assert per_slice_counts(m, ODD).eq(int(0.6 * 35)).all()
    assert_valid_mask(m, ODD, 3 * 21)


def test_identical_across_time_slices_and_different_across_samples():
    g = make_mask_generator("tube", mask_ratio=0.9)
    m = g(VIDEO, generator=gen(2)).view(2, 8, 196)
    for t in range(8):
        assert torch.equal(m[:, t], m[:, 0])
    assert not torch.equal(m[0, 0], m[1, 0])
    m = g(ODD, generator=gen(2)).view(3, 3, 35)
    assert (m == m[:, :1]).all()
