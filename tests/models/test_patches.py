import pytest
import torch

from videohpm.models import IMAGENET_MEAN, IMAGENET_STD, mask_split, patchify, pixel_target, unpatchify

from .helpers import clip, random_mask


def test_patchify_order_matches_a_loop():
    x = clip(b=1, t=4, hw=16)
    t, p = 2, 8
    patches = patchify(x, t, p)  # [1, N, t*p*p*C]
    assert patches.shape == (1, 2 * 2 * 2, t * p * p * 3)
    for n in range(patches.shape[1]):
        tau, rem = divmod(n, 2 * 2)  # time-major token index
        h, w = divmod(rem, 2)
        vec = []
        for dt in range(t):
            for dh in range(p):
                for dw in range(p):
                    for c in range(3):  # (t p p c): channel fastest
                        vec.append(x[0, c, tau * t + dt, h * p + dh, w * p + dw])
        assert torch.equal(patches[0, n], torch.stack(vec))


def test_unpatchify_inverts_patchify():
    x = clip(b=2, t=4, hw=32)
    for t, p in ((2, 8), (1, 16), (4, 4)):
        patches = patchify(x, t, p)
        grid = (4 // t, 32 // p, 32 // p)
        assert torch.equal(unpatchify(patches, grid, t, p, 3), x)
    with pytest.raises(ValueError, match="grid"):
        unpatchify(patchify(x, 2, 8), (1, 4, 4), 2, 8, 3)


def test_patchify_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 3, 3, 32, 32), 2, 8)


@pytest.mark.parametrize("normalize", [True, False])
def test_pixel_target_matches_brute_force(normalize):
    x = clip(b=2, t=2, hw=16, seed=3)
    t, p = 2, 8
    out = pixel_target(x, t, p, normalize=normalize)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    for b in range(2):
        pix = x[b] * std + mean  # un-normalized to [0, 1] space: [C, T, H, W]
        for n in range(4):
            h, w = divmod(n, 2)
            cube = pix[:, :, h * p:(h + 1) * p, w * p:(w + 1) * p]  # [C, t, p, p]
            per_c = cube.reshape(3, -1)  # [C, t*p*p]
            if normalize:
                sd = per_c.var(1, unbiased=True, keepdim=True).sqrt()
                per_c = (per_c - per_c.mean(1, keepdim=True)) / (sd + 1e-6)
            expect = per_c.t().reshape(-1)  # (t p p c)
            torch.testing.assert_close(out[b, n], expect, rtol=1e-5, atol=1e-5)


def test_mask_split_matches_boolean_indexing():
    mask = random_mask(3, 20, 15, seed=1)
    keep, masked = mask_split(mask)
    ar = torch.arange(20).expand(3, 20)
    assert torch.equal(keep, ar[~mask].view(3, -1))
    assert torch.equal(masked, ar[mask].view(3, -1))
    bad = mask.clone()
    bad[0, (~bad[0]).nonzero()[0]] = True
    with pytest.raises(ValueError, match="same number"):
        mask_split(bad)
