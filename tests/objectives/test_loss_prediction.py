"""L_pred: relative BCE (HPM journal Eq. 5–7) and absolute MSE (Eq. 4) vs brute-force loops."""
import math

import pytest
import torch

from videohpm.objectives import absolute_loss_prediction, loss_prediction_loss, relative_loss_prediction


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def brute_relative(pred, rec):
    """Eq. 5 written as the double sum over i ≠ j, normalized by the counted pairs."""
    total, count = 0.0, 0
    B, n = pred.shape
    for b in range(B):
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                d = float(pred[b, i]) - float(pred[b, j])
                plus = float(rec[b, i]) > float(rec[b, j])  # Eq. 6
                minus = float(rec[b, i]) < float(rec[b, j])  # Eq. 7
                if plus:
                    total -= math.log(sigmoid(d))
                if minus:
                    total -= math.log(1.0 - sigmoid(d))
                count += plus or minus
    return total / max(count, 1), count


def tied_inputs(B=3, n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(B, n, generator=g, dtype=torch.float64)
    rec = torch.randint(0, 4, (B, n), generator=g).double()  # many ties
    return pred, rec


def test_relative_matches_double_loop_with_ties():
    pred, rec = tied_inputs()
    ref, count = brute_relative(pred, rec)
    assert count < 3 * 9 * 8  # ties were really excluded
    out = relative_loss_prediction(pred.float(), rec.float())
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref, rel=1e-5)


def test_relative_gradient_matches_and_stops_at_rec():
    pred, rec = tied_inputs(seed=1)
    pred_ref = pred.clone().requires_grad_()
    # autograd through an explicit pairwise loop in float64
    terms, count = [], 0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            for j in range(pred.shape[1]):
                if i != j and rec[b, i] != rec[b, j]:
                    d = pred_ref[b, i] - pred_ref[b, j]
                    terms.append(-torch.nn.functional.logsigmoid(d if rec[b, i] > rec[b, j] else -d))
                    count += 1
    (torch.stack(terms).sum() / count).backward()

    p = pred.float().requires_grad_()
    r = rec.float().requires_grad_()  # must receive no gradient (detached ground truth)
    relative_loss_prediction(p, r).backward()
    assert r.grad is None
    torch.testing.assert_close(p.grad.double(), pred_ref.grad, rtol=1e-4, atol=1e-6)


def test_chunking_does_not_change_value_or_grad():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(5, 40, generator=g)
    rec = torch.rand(5, 40, generator=g)
    a = pred.clone().requires_grad_()
    la = relative_loss_prediction(a, rec)  # one chunk
    la.backward()
    b = pred.clone().requires_grad_()
    lb = relative_loss_prediction(b, rec, chunk_pairs=2 * 40 * 40)  # 3 chunks
    lb.backward()
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(a.grad, b.grad)


def test_relative_gradcheck_float64():
    pred, rec = tied_inputs(B=2, n=6, seed=3)
    pred.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: relative_loss_prediction(p, rec, chunk_pairs=36), (pred,))
    # only differences enter Eq. 5: a common shift (a head bias) gets zero gradient
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    relative_loss_prediction(pred.detach() + shift, rec).backward()
    assert abs(shift.grad.item()) < 1e-12


def test_relative_ordered_pairs_double_count_equals_unordered_mean():
    pred, rec = tied_inputs(seed=4)
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            for j in range(i + 1, pred.shape[1]):
                if rec[b, i] != rec[b, j]:
                    s = 1.0 if rec[b, i] > rec[b, j] else -1.0
                    total -= math.log(sigmoid(s * float(pred[b, i] - pred[b, j])))
                    count += 1
    assert relative_loss_prediction(pred, rec).item() == pytest.approx(total / count, rel=1e-5)


def test_relative_stable_extremes_autocast_mask_and_all_ties():
    pred = torch.tensor([[1e4, -1e4, 0.0, 3e4]], requires_grad=True)
    rec = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    loss = relative_loss_prediction(pred, rec)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert loss.item() > 1e3  # pairs (0,1),(0,2) are badly wrong by ~1e4
    # bf16 inputs under autocast: pair matrix is fp32
    p = torch.randn(2, 16).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = relative_loss_prediction(p, torch.rand(2, 16))
    assert out.dtype == torch.float32
    out.backward()
    assert p.grad is not None and torch.isfinite(p.grad.float()).all()
    # full-length inputs + mask == pre-selected masked tokens
    g = torch.Generator().manual_seed(5)
    full_p, full_r = torch.randn(2, 12, generator=g), torch.rand(2, 12, generator=g)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, [1, 3, 4, 8, 9, 11]] = True
    mask[1, [0, 2, 5, 6, 7, 10]] = True
    torch.testing.assert_close(
        relative_loss_prediction(full_p, full_r, mask),
        relative_loss_prediction(full_p[mask].view(2, 6), full_r[mask].view(2, 6)),
    )
    # [B, Nm, 1] head output; all ties → no counted pair → 0 with a (zero) gradient
    q = torch.randn(2, 6, 1, requires_grad=True)
    z = relative_loss_prediction(q, torch.ones(2, 6))
    z.backward()
    assert z.item() == 0.0 and q.grad.abs().sum() == 0


def test_relative_video_size_runs_chunked():
    g = torch.Generator().manual_seed(6)
    pred = torch.randn(2, 1411, generator=g, requires_grad=True)
    rec = torch.rand(2, 1411, generator=g)
    loss = relative_loss_prediction(pred, rec, chunk_pairs=1411 * 1411)
    loss.backward()
    # ranking perfectly aligned with rec gives a lower loss than random predictions
    aligned = relative_loss_prediction(rec * 10, rec)
    assert aligned < loss.detach() and torch.isfinite(pred.grad).all()


def test_absolute_matches_loop_and_stops_at_rec():
    g = torch.Generator().manual_seed(7)
    pred = torch.randn(3, 8, generator=g, requires_grad=True)
    rec = torch.rand(3, 8, generator=g, requires_grad=True)
    P, R = pred.detach(), rec.detach()
    ref = sum((float(P[b, i]) - float(R[b, i])) ** 2 for b in range(3) for i in range(8)) / 24
    out = absolute_loss_prediction(pred, rec)
    assert out.item() == pytest.approx(ref, rel=1e-6)
    out.backward()
    assert rec.grad is None and pred.grad is not None
    # per-sample standardized target, the official HPM code's: (L - mean) / sqrt(var_unbiased + 1e-6)
    std = absolute_loss_prediction(pred.detach(), rec.detach(), standardize=True)
    ref = 0.0
    for b in range(3):
        vals = [float(v) for v in R[b]]
        m = sum(vals) / 8
        var = sum((v - m) ** 2 for v in vals) / 7
        ref += sum((float(P[b, i]) - (vals[i] - m) / math.sqrt(var + 1e-6)) ** 2 for i in range(8))
    assert std.item() == pytest.approx(ref / 24, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 masked tokens"):
        absolute_loss_prediction(pred[:, :1].detach(), rec[:, :1].detach(), standardize=True)


def test_dispatch():
    pred, rec = tied_inputs()
    assert loss_prediction_loss("relative", pred, rec) == relative_loss_prediction(pred, rec)
    assert loss_prediction_loss("absolute", pred, rec) == absolute_loss_prediction(pred, rec)
    with pytest.raises(ValueError, match="'ranking'"):
        loss_prediction_loss("ranking", pred, rec)
    with pytest.raises(ValueError, match="pred"):
        relative_loss_prediction(torch.zeros(2, 3), torch.zeros(2, 4))
