"""MTO (MTO paper Eq. 2–5, Algorithm 1) vs loops written from the equations."""
import math

import pytest
import torch

from videohpm.objectives import heterogeneity, mto_losses, sparsity_loss


def entropy_of_softmax(logits):
    z = max(logits)
    e = [math.exp(v - z) for v in logits]
    s = sum(e)
    p = [v / s for v in e]
    return -sum(pi * math.log(pi) for pi in p if pi > 0)


def H_loop(x, mask, scale=1.0):
    """Eq. 2 per sample: −(1/|δ_M|) Σ_i Σ_j A_ij log A_ij, A = rowsoftmax(X_M X_V^T)."""
    out = []
    for b in range(x.shape[0]):
        M = [i for i in range(x.shape[1]) if mask[b, i]]
        V = [i for i in range(x.shape[1]) if not mask[b, i]]
        tot = sum(entropy_of_softmax([scale * float(x[b, i] @ x[b, j]) for j in V]) for i in M)
        out.append(tot / len(M))
    return out


def spa_loop(x, mask, scale=1.0):
    """Eq. 3 per sample: −Σ_{i∉δ_M} Σ_j p_ij log p_ij, p = rowsoftmax(X X^T)."""
    out = []
    for b in range(x.shape[0]):
        V = [i for i in range(x.shape[1]) if not mask[b, i]]
        out.append(sum(entropy_of_softmax([scale * float(x[b, i] @ x[b, j]) for j in range(x.shape[1])])
                       for i in V))
    return out


def setup(B=2, N=7, D=5, L=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = [torch.randn(B, N, D, generator=g) * 0.5 for _ in range(L + 1)]
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[0, [0, 2, 3, 6]] = True
    mask[1, [1, 2, 4, 5]] = True
    return tokens, mask


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_heterogeneity_and_sparsity_match_loops(scale):
    tokens, mask = setup()
    x = tokens[0]
    torch.testing.assert_close(heterogeneity(x, mask, scale).double(),
                               torch.tensor(H_loop(x, mask, scale), dtype=torch.float64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sparsity_loss(x, mask, scale).double(),
                               torch.tensor(spa_loop(x, mask, scale), dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_total_matches_algorithm_1():
    tokens, mask = setup(L=3)
    eps = 1e-6
    H = [H_loop(t, mask) for t in tokens]  # [L+1][B]
    B = 2
    le = sum(1 / (H[0][b] + eps) for b in range(B)) / B  # Eq. 4
    lr = sum(sum(math.log(1 + math.exp(H[l - 1][b] - H[l][b])) for l in range(1, 4)) for b in range(B)) / B
    lspa = sum(spa_loop(tokens[0], mask)) / B  # Eq. 3 on layer 0
    out = mto_losses(tokens, mask, w_spa=0.5, w_e=2.0, w_r=3.0, eps=eps)
    assert out["loss_e"].item() == pytest.approx(le, rel=1e-5)
    assert out["loss_r"].item() == pytest.approx(lr, rel=1e-5)
    assert out["loss_spa"].item() == pytest.approx(lspa, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * lspa + 2.0 * le + 3.0 * lr, rel=1e-5)
    torch.testing.assert_close(out["heterogeneity"].double(),
                               torch.tensor([sum(h) / B for h in H], dtype=torch.float64), rtol=1e-5, atol=1e-6)
    lspa_all = sum(sum(spa_loop(t, mask)) / B for t in tokens) / 4
    assert mto_losses(tokens, mask, spa_layers="all")["loss_spa"].item() == pytest.approx(lspa_all, rel=1e-5)


def test_gradients_follow_the_equations():
    tokens, mask = setup(L=1, seed=1)
    t0 = tokens[0].clone().requires_grad_()
    mto_losses([t0, tokens[1]], mask, w_spa=0.0, w_r=0.0)["loss"].backward()
    with torch.no_grad():  # a descent step on L_e raises H^0 (Eq. 4 maximizes it)
        assert heterogeneity(t0 - 0.05 * t0.grad, mask).mean() > heterogeneity(t0, mask).mean()
    t1 = tokens[1].clone().requires_grad_()
    mto_losses([tokens[0], t1], mask, w_spa=0.0, w_e=0.0)["loss"].backward()
    with torch.no_grad():  # Eq. 5 as written rewards H^1 > H^0 (see module docstring)
        assert heterogeneity(t1 - 0.05 * t1.grad, mask).mean() > heterogeneity(t1, mask).mean()
    t = tokens[0].clone().requires_grad_()
    mto_losses([t], mask, w_e=0.0)["loss"].backward()  # L_spa reaches every token
    assert t.grad[~mask].abs().sum() > 0 and t.grad[mask].abs().sum() > 0


def test_videomae_decoder_order_and_errors():
    g = torch.Generator().manual_seed(2)
    B, N, Nv = 2, 12, 3  # VideoMAE decoder input is [visible; masked]
    tokens = [torch.randn(B, N, 4, generator=g) for _ in range(3)]
    order_mask = (torch.arange(N) >= Nv).expand(B, N)
    out = mto_losses(tokens, order_mask)
    assert torch.isfinite(out["loss"]) and out["heterogeneity"].shape == (3,)
    assert out["heterogeneity"].max() <= math.log(Nv) + 1e-5  # entropy over Nv visible tokens
    with pytest.raises(TypeError, match="mask must be bool"):
        mto_losses(tokens, order_mask.float())
    with pytest.raises(ValueError, match="spa_layers"):
        mto_losses(tokens, order_mask, spa_layers="last")
    with pytest.raises(ValueError, match="tokens must be"):
        heterogeneity(torch.zeros(B, N + 1, 4), order_mask)
