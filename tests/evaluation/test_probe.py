"""The time-keeping linear probe (videohpm.evaluation.probe)."""
import math

import numpy as np
import pytest
import torch

from videohpm.evaluation.probe import binomial_stderr, fit_logistic, linear_probe


def _motion_like(n, rng, d=6):
    """Two time slices; the class is the sign of the change between them — invisible to the mean
    over time (the mean has the same distribution for both classes)."""
    y = rng.integers(0, 2, n)
    a = rng.normal(size=(n, d))
    delta = np.where(y[:, None] == 1, 1.0, -1.0) * 1.5
    x = np.stack([a - delta / 2, a + delta / 2], axis=1)  # [n, T'=2, d]
    return x, y


def test_time_probe_sees_order_that_the_mean_loses():
    rng = np.random.default_rng(0)
    xtr, ytr = _motion_like(200, rng)
    xva, yva = _motion_like(200, rng)
    xte, yte = _motion_like(400, rng)
    timed = linear_probe(xtr, ytr, xva, yva, xte, yte)
    pooled = linear_probe(xtr.mean(1), ytr, xva.mean(1), yva, xte.mean(1), yte)
    assert timed["test_top1"] > 95.0
    assert pooled["test_top1"] < 65.0  # the mean over time carries no class information
    assert timed["num_features"] == 12 and timed["n_test"] == 400


def test_logistic_optimum_satisfies_the_stationarity_condition():
    """Written from the objective: at the optimum (1/n) Σ_i (p_i − e_{y_i}) z_iᵀ + 2λW = 0 and
    (1/n) Σ_i (p_i − e_{y_i}) = 0 (no penalty on b) — checked with an explicit loop over samples."""
    rng = np.random.default_rng(1)
    n, f, c, lam = 30, 4, 3, 0.05
    x = torch.as_tensor(rng.normal(size=(n, f)))
    y = torch.as_tensor(rng.integers(0, c, n))
    w, b = fit_logistic(x, y, c, lam)
    gw = torch.zeros(c, f, dtype=torch.float64)
    gb = torch.zeros(c, dtype=torch.float64)
    for i in range(n):
        logits = [float(w[k] @ x[i] + b[k]) for k in range(c)]
        m = max(logits)
        e = [math.exp(v - m) for v in logits]
        for k in range(c):
            r = e[k] / sum(e) - (1.0 if int(y[i]) == k else 0.0)
            gw[k] += r * x[i] / n
            gb[k] += r / n
    gw += 2 * lam * w
    assert gw.abs().max() < 1e-5 and gb.abs().max() < 1e-5


def test_weight_decay_is_chosen_on_val_ties_to_the_larger():
    rng = np.random.default_rng(2)
    xtr, ytr = _motion_like(40, rng)
    xva, yva = _motion_like(40, rng)
    r = linear_probe(xtr, ytr, xva, yva, weight_decays=(1e-3, 1e-2, 1e-1))
    best = max(r["val_top1_by_weight_decay"].values())
    winners = [float(k) for k, v in r["val_top1_by_weight_decay"].items() if v == best]
    assert r["weight_decay"] == max(winners)
    assert r["val_top1"] == best and r["test_top1"] is None


def test_bad_input_is_refused():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="labels outside"):
        linear_probe(x, np.array([0, 1, 2, 5]), x, np.array([0, 1, 1, 0]), num_classes=3)
    with pytest.raises(ValueError, match="dimensions"):
        linear_probe(x, np.zeros(4), np.zeros((4, 2)), np.zeros(4))


def test_binomial_stderr():
    assert binomial_stderr(50.0, 100) == pytest.approx(5.0)
    assert binomial_stderr(100.0, 10) == 0.0
