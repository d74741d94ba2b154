"""L_rec, HPM journal Eq. 3, against a loop over samples and masked patches."""
import pytest
import torch

from videohpm.objectives import per_patch_mse, reconstruction_loss, select_masked


def loop_per_patch(pred, target):
    B, Nm, P = pred.shape
    out = torch.empty(B, Nm, dtype=torch.float64)
    for b in range(B):
        for i in range(Nm):
            out[b, i] = sum((float(pred[b, i, c]) - float(target[b, i, c])) ** 2 for c in range(P)) / P
    return out


def random_mask(B, N, k, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(B, N, generator=g).argsort(1)[:, :k]
    return torch.zeros(B, N, dtype=torch.bool).scatter_(1, idx, True)


def test_per_patch_and_mean_match_loop():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 7, 12, generator=g), torch.randn(3, 7, 12, generator=g)
    ref = loop_per_patch(pred, target)
    out = reconstruction_loss(pred, target)
    assert out.per_patch.shape == (3, 7) and out.per_patch.dtype == torch.float32
    torch.testing.assert_close(out.per_patch.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss.double(), ref.mean(), rtol=1e-5, atol=1e-6)


def test_full_target_with_mask_selects_masked_tokens_in_order():
    g = torch.Generator().manual_seed(1)
    B, N, P = 2, 20, 6
    mask = random_mask(B, N, 15, seed=2)
    target_all = torch.randn(B, N, P, generator=g)
    pred = torch.randn(B, 15, P, generator=g)
    sel = select_masked(target_all, mask)
    for b in range(B):  # ascending token index (VideoMAE's x[mask] order)
        torch.testing.assert_close(sel[b], target_all[b, mask[b].nonzero().flatten()])
    a = reconstruction_loss(pred, target_all, mask)
    b_ = reconstruction_loss(pred, sel)
    torch.testing.assert_close(a.loss, b_.loss)
    torch.testing.assert_close(a.per_patch, loop_per_patch(pred, sel).float())


def test_gradient_to_prediction_only():
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 5, 4, generator=g, requires_grad=True)
    target = torch.randn(2, 5, 4, generator=g, requires_grad=True)
    reconstruction_loss(pred, target).loss.backward()
    assert target.grad is None
    torch.testing.assert_close(pred.grad, 2 * (pred - target).detach() / pred.numel())


def test_fp32_under_autocast():
    pred = torch.randn(2, 5, 8).bfloat16()
    target = torch.randn(2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = reconstruction_loss(pred, target)
    assert out.per_patch.dtype == torch.float32 and out.loss.dtype == torch.float32


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        per_patch_mse(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(TypeError, match="bool"):
        select_masked(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="disagree"):
        select_masked(torch.zeros(2, 4, 1), torch.zeros(2, 3, dtype=torch.bool))
