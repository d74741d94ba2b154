"""HPM easy-to-hard masking (HPM journal §3.4 Eq. 8, supplement Alg. S1)."""
import numpy as np
import pytest
import torch

from videohpm.masking import make_mask_generator

from .helpers import IMAGE, ODD, VIDEO, assert_valid_mask, gen, per_slice_counts


def planted_scores(grid, seed=0):
    """Distinct random scores [B, N]."""
    B, T, H, W = grid
    return torch.randperm(B * T * H * W, generator=gen(seed)).float().view(B, -1)


def top_set(scores_row: torch.Tensor, p: int, largest=True) -> set:
    order = sorted(range(len(scores_row)), key=lambda i: scores_row[i].item(), reverse=largest)
    return set(order[:p])


def alg_s1(pred_t: np.ndarray, mask_ratio: float, alpha_t: float, len_masked: int, rng, argmin=False):
    """Brute-force, one row at a time, Alg. S1 of HPM supplement (True = masked)."""
    L = len(pred_t)
    len_keep = L - len_masked
    len_pred = int(L * mask_ratio * alpha_t)
    ids_shuffle = np.argsort(-pred_t if argmin else pred_t, kind="stable")  # hardest last
    hard = ids_shuffle[L - len_pred:] if len_pred > 0 else np.array([], dtype=int)
    remain = np.array([i for i in range(L) if i not in set(hard.tolist())])
    rng.shuffle(remain)
    ids_shuffle = np.concatenate([remain, hard])
    mask = np.ones(L, dtype=bool)  # True = masked (Alg. S1's "0 is remove")
    mask[ids_shuffle[:len_keep]] = False
    return mask


# -- schedule (Eq. 8) -------------------------------------------------------------------
def test_alpha_schedule_easy_to_hard_and_hard_to_easy():
    g = make_mask_generator("hpm", mask_ratio=0.9, alpha_0=0.0, alpha_T=0.5)
    assert [g.alpha(p) for p in (0.0, 0.5, 1.0)] == [0.0, 0.25, 0.5]
    assert [g.num_hard_per_row(VIDEO, p) for p in (0.0, 0.5, 1.0)] == [0, 44, 88]
    h = make_mask_generator("hpm", mask_ratio=0.9, alpha_0=0.5, alpha_T=0.0)
    assert [h.alpha(p) for p in (0.0, 0.5, 1.0)] == [0.5, 0.25, 0.0]
    const = make_mask_generator("hpm", alpha_0=0.3, alpha_T=0.3)
    assert const.alpha(None) == 0.3


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(alpha_0=1.2), "alpha_0"),
        (dict(alpha_T=-0.1), "alpha_T"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(mode="max"), "mode"),
    ],
)
def test_option_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        make_mask_generator("hpm", **kw)
    with pytest.raises(TypeError, match="per_frame"):
        make_mask_generator("hpm", per_frame="yes")


def test_call_validation():
    g = make_mask_generator("hpm", mask_ratio=0.9, alpha_0=0.0, alpha_T=0.5)
    s = planted_scores(VIDEO)
    with pytest.raises(ValueError, match="progress"):
        g(VIDEO, scores=s)
    with pytest.raises(ValueError, match="progress"):
        g(VIDEO, scores=s, progress=1.5)
    with pytest.raises(ValueError, match="scores"):
        g(VIDEO, progress=1.0)
    with pytest.raises(ValueError, match=r"scores must have shape \[B, N\] = \[2, 1568\]"):
        g(VIDEO, scores=s[:, :100], progress=1.0)
    # no score-driven token at progress 0 (α_0 = 0): scores may be omitted (skip the teacher)
    assert_valid_mask(g(VIDEO, progress=0.0, generator=gen(0)), VIDEO, 1408)
    # the loss head's [B, N, 1] output is accepted, and gradients never reach the mask
    s1 = s.unsqueeze(-1).requires_grad_()
    m = g(VIDEO, scores=s1, progress=1.0, generator=gen(0))
    assert not m.requires_grad and torch.equal(m, g(VIDEO, scores=s, progress=1.0, generator=gen(0)))


# -- counts ------------------------------------------------------------------------------
@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0])
def test_counts_video_per_slice(progress):
    g = make_mask_generator("hpm", mask_ratio=0.9, alpha_0=0.0, alpha_T=0.5)
    m = g(VIDEO, scores=planted_scores(VIDEO), progress=progress, generator=gen(0))
    assert per_slice_counts(m, VIDEO).eq(176).all()
    assert_valid_mask(m, VIDEO, 1408)


def test_counts_image_and_odd():
    g = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.0, alpha_T=0.5)
    m = g(IMAGE, scores=planted_scores(IMAGE), progress=1.0, generator=gen(0))
    assert_valid_mask(m, IMAGE, 147)  # image: over all patches, 196 − int(196·0.25)
    assert g.num_hard_per_row(IMAGE, 1.0) == 73  # int(196·0.75·0.5)
    g = make_mask_generator("hpm", mask_ratio=0.6, alpha_0=0.2, alpha_T=0.9)
    m = g(ODD, scores=planted_scores(ODD), progress=0.5, generator=gen(0))
    assert per_slice_counts(m, ODD).eq(21).all()  # int(0.6·35)
    g = make_mask_generator("hpm", mask_ratio=0.6, per_frame=False)
    m = g(ODD, scores=planted_scores(ODD), progress=0.5, generator=gen(0))
    assert_valid_mask(m, ODD, 105 - int(105 * 0.4))


# -- the hard set is always masked -------------------------------------------------------
@pytest.mark.parametrize("mode", ["argmax", "argmin"])
def test_top_scores_always_masked_per_slice(mode):
    g = make_mask_generator("hpm", mask_ratio=0.9, alpha_0=0.0, alpha_T=0.5, mode=mode)
    B, T, H, W = VIDEO
    s = planted_scores(VIDEO, seed=7)
    p = g.num_hard_per_row(VIDEO, 1.0)
    assert p == 88
    for seed in range(5):
        m = g(VIDEO, scores=s, progress=1.0, generator=gen(seed)).view(B, T, H * W)
        for b in range(B):
            for t in range(T):
                row = s.view(B, T, -1)[b, t]
                hard = top_set(row, p, largest=mode == "argmax")
                assert all(m[b, t, i] for i in hard)
                # the opposite extreme is not forced: not all of the easy end is masked
                other = top_set(row, p, largest=mode != "argmax")
                assert not all(m[b, t, i] for i in other)


def test_per_slice_independence_vs_global():
    """Scores rising with time: per-frame picks the top of *each* slice, global the top overall."""
    B, T, H, W = VIDEO
    s = planted_scores(VIDEO, seed=3).view(B, T, -1) / 10_000 + torch.arange(T).view(1, T, 1) * 10
    s = s.reshape(B, -1)
    g = make_mask_generator("hpm", mask_ratio=0.9, alpha_0=1.0, alpha_T=1.0)
    m = g(VIDEO, scores=s, generator=gen(0)).view(B, T, -1)
    for b in range(B):
        for t in range(T):  # α = 1: the mask of each slice is exactly its own top-176
            assert set(m[b, t].nonzero().flatten().tolist()) == top_set(s.view(B, T, -1)[b, t], 176)
    g = make_mask_generator("hpm", mask_ratio=0.9, alpha_0=0.5, alpha_T=0.5, per_frame=False)
    m = g(VIDEO, scores=s, generator=gen(0))
    assert_valid_mask(m, VIDEO, 1412)  # global counts: 1568 − int(1568·0.1)
    p = g.num_hard_per_row(VIDEO, None)
    assert p == int(1568 * 0.9 * 0.5) == 705
    for b in range(B):
        assert all(m[b, i] for i in top_set(s[b], p))
    assert m.view(B, T, -1)[:, 5:].all()  # the three last slices (588 tokens) fully hard


def test_alpha_zero_is_per_frame_random():
    g = make_mask_generator("hpm", mask_ratio=0.9, alpha_0=0.0, alpha_T=0.0)
    f = make_mask_generator("frame", mask_ratio=0.9)
    s = planted_scores(VIDEO)
    m = g(VIDEO, scores=s, progress=0.4, generator=gen(11))
    assert torch.equal(m, f(VIDEO, generator=gen(11)))  # same draw, scores ignored
    assert torch.equal(m, g(VIDEO, scores=-s, progress=0.4, generator=gen(11)))
    assert not torch.equal(m, g(VIDEO, scores=s, progress=0.4, generator=gen(12)))
    # image: α = 0 is MAE random masking
    gi = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.0, alpha_T=0.0)
    ri = make_mask_generator("random", mask_ratio=0.75)
    assert torch.equal(gi(IMAGE, generator=gen(2)), ri(IMAGE, generator=gen(2)))


def test_rest_is_uniformly_random():
    """Outside the hard set, each token is masked with probability (k − p)/(n − p)."""
    grid = (3000, 2, 2, 5)  # n_s = 10; k = int(0.8·10) = 8; p = int(10·0.8·0.5) = 4
    g = make_mask_generator("hpm", mask_ratio=0.8, alpha_0=0.0, alpha_T=0.5)
    s = torch.arange(20.0).repeat(3000, 1)  # same planted scores for every sample
    m = g(grid, scores=s, progress=1.0, generator=gen(0)).view(3000, 2, 10).float()
    freq = m.mean(0)  # [2, 10]
    assert freq[:, 6:].eq(1).all()  # top-4 of each slice: always
    assert torch.allclose(freq[:, :6], torch.full((2, 6), 4 / 6), atol=0.04)


def test_agrees_with_brute_force_alg_s1():
    rng = np.random.default_rng(0)
    for grid, ratio, a0, aT, prog, mode, per_frame in [
        (VIDEO, 0.9, 0.0, 0.5, 1.0, "argmax", True),
        (VIDEO, 0.9, 0.0, 0.75, 0.6, "argmin", True),
        (IMAGE, 0.75, 0.0, 0.5, 0.8, "argmax", True),
        (ODD, 0.6, 0.5, 0.0, 0.25, "argmax", False),
        (ODD, 0.6, 1.0, 1.0, 0.0, "argmax", True),
    ]:
        g = make_mask_generator("hpm", mask_ratio=ratio, alpha_0=a0, alpha_T=aT, mode=mode,
                                per_frame=per_frame)
        B, T, H, W = grid
        s = planted_scores(grid, seed=5)
        m = g(grid, scores=s, progress=prog, generator=gen(1))
        rows = B * T if (per_frame and T > 1) else B
        srows, mrows = s.view(rows, -1).numpy(), m.view(rows, -1)
        k = g.num_masked_per_row(grid)
        p = int(srows.shape[1] * ratio * g.alpha(prog))
        for r in range(rows):
            ref = alg_s1(srows[r], ratio, g.alpha(prog), k, rng, argmin=mode == "argmin")
            assert ref.sum() == mrows[r].sum().item() == k
            hard = top_set(torch.from_numpy(srows[r]), p, largest=mode == "argmax")
            assert all(ref[i] for i in hard) and all(mrows[r, i] for i in hard)
            if p == k:  # fully determined by the scores
                assert np.array_equal(ref, mrows[r].numpy())


def test_device_argument():
    g = make_mask_generator("hpm", mask_ratio=0.9)
    m = g(VIDEO, scores=planted_scores(VIDEO), progress=1.0, device=torch.device("cpu"))
    assert m.device.type == "cpu"
    assert per_slice_counts(m, VIDEO).eq(176).all()
