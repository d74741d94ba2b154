from videohpm.masking import make_mask_generator

from .helpers import IMAGE, ODD, VIDEO, assert_valid_mask, gen, per_slice_counts


def test_counts_per_slice_and_sample():
    g = make_mask_generator("frame", mask_ratio=0.9)
    m = g(VIDEO, generator=gen(0))
    assert per_slice_counts(m, VIDEO).eq(176).all()
    assert_valid_mask(m, VIDEO, 8 * 176)
    g = make_mask_generator("frame", mask_ratio=0.75)
    assert_valid_mask(g(IMAGE, generator=gen(0)), IMAGE, 147)
    g = make_mask_generator("frame", mask_ratio=0.6)
    m = g(ODD, generator=gen(0))
    assert per_slice_counts(m, ODD).eq(21).all()


def test_slices_differ_and_are_uniform():
    g = make_mask_generator("frame", mask_ratio=0.9)
    m = g(VIDEO, generator=gen(3)).view(2, 8, 196)
    distinct = {tuple(m[b, t].tolist()) for b in range(2) for t in range(8)}
    assert len(distinct) == 16
    m = g((3000, 2, 2, 5), generator=gen(4)).view(3000, 2, 10)  # int(0.9·10) = 9 per slice
    assert m.sum(-1).eq(9).all()
    # slices independent: P(same visible token in both slices) = 1/10, not 1 as with tube
    same = (~m[:, 0] & ~m[:, 1]).any(-1).float().mean()
    assert abs(same.item() - 0.1) < 0.03
