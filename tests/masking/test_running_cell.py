"""VideoMAE V2 running-cell decoder mask and the choice of decoded tokens."""
import pytest
import torch

from videohpm.masking import RunningCellMaskGenerator, decoder_token_ids, make_mask_generator, num_decoded

GRID = (3, 4, 4, 6)  # B, T', H', W'


def cells(mask, grid):
    """[B, T, H/2, W/2, 4] view of a mask: the 4 positions of every 2×2 cell (row-major)."""
    B, T, H, W = grid
    m = mask.view(B, T, H // 2, 2, W // 2, 2).permute(0, 1, 2, 4, 3, 5)
    return m.reshape(B, T, H // 2, W // 2, 4)


def v2_cell_pattern(k, phase, T):
    """VideoMAE V2's Cell, written out as a loop: queue [1]*k+[0]*(4-k), pointer advanced per frame."""
    queue = [1] * k + [0] * (4 - k)
    out = []
    for tau in range(T):
        out.append([queue[(j - phase - tau) % 4] for j in range(4)])
    return torch.tensor(out, dtype=torch.bool)  # [T, 4]


@pytest.mark.parametrize("ratio, k", [(0.25, 1), (0.5, 2), (0.75, 3)])
def test_exact_count_in_every_cell_and_slice(ratio, k):
    gen = make_mask_generator("running_cell", mask_ratio=ratio)
    mask = gen(GRID, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 4 * 4 * 6) and mask.dtype == torch.bool
    c = cells(mask, GRID)
    assert c.sum(-1).eq(k).all()
    # every cell of a slice carries the same pattern
    assert (c == c[:, :, :1, :1]).all()
    assert mask.sum(1).eq(gen.num_masked_per_sample(GRID)).all()
    assert gen.num_masked_per_sample(GRID) == 4 * 6 * k


def test_pattern_runs_over_time_like_videomae_v2():
    gen = RunningCellMaskGenerator(0.5)
    T = 6
    for phase in range(4):
        mask = gen.pattern((1, T, 2, 2), torch.tensor([phase]))
        assert torch.equal(mask.view(T, 4), v2_cell_pattern(2, phase, T))
    mask = gen((8, T, 4, 4), generator=torch.Generator().manual_seed(1))
    c = cells(mask, (8, T, 4, 4))[:, :, 0, 0]  # [B, T, 4]
    # the hidden run advances by one cell position per slice; with k = 2, slices two apart are
    # complements, so every position is reconstructed in exactly 2 of any 4 consecutive slices
    assert torch.equal(c[:, 1:], c[:, :-1].roll(1, dims=-1))
    assert torch.equal(c[:, 2:], ~c[:, :-2])
    assert c[:, :4].sum(1).eq(2).all()


def test_random_phase_per_sample_and_reproducible():
    gen = RunningCellMaskGenerator(0.5)
    a = gen((64, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    b = gen((64, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert len({tuple(r.tolist()) for r in a}) == 4  # all four phases drawn


def test_bad_grid_and_ratio_fail_clearly():
    with pytest.raises(ValueError, match="even token grid"):
        RunningCellMaskGenerator(0.5)((1, 2, 7, 7))
    with pytest.raises(ValueError, match="2x2 cell"):
        RunningCellMaskGenerator(0.2)  # int(4·0.2) = 0 hidden per cell


def test_decoder_token_ids_exact_count_masked_only_prefers_decoder_visible():
    B, T, H, W = 4, 2, 4, 4
    g = torch.Generator().manual_seed(0)
    enc = make_mask_generator("tube", mask_ratio=0.75)((B, T, H, W), generator=g)
    dec = RunningCellMaskGenerator(0.5)((B, T, H, W), generator=g)
    m = 24
    k = num_decoded(m, 0.5)
    assert k == 12
    ids = decoder_token_ids(enc, dec, k, generator=g)
    assert ids.shape == (B, k)
    assert (ids[:, 1:] > ids[:, :-1]).all()  # ascending, distinct
    assert enc.gather(1, ids).all()  # only encoder-masked tokens are decoded
    for b in range(B):  # brute force: as many decoder-visible ones as exist (up to K)
        avail = int((enc[b] & ~dec[b]).sum())
        got = int((~dec[b][ids[b]]).sum())
        assert got == min(k, avail)
    with pytest.raises(ValueError, match="disagree"):
        decoder_token_ids(enc, dec[:, :5], k)
