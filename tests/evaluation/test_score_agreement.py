"""Row-wise agreement of two token rankings (`videohpm.evaluation.score_agreement`): Spearman's ρ
against scipy, the top-k overlap against a brute-force set count."""
import pytest
import torch
from scipy.stats import spearmanr

from videohpm.evaluation.score_agreement import compare, spearman_rows, topk_overlap_rows


def test_metrics_match_scipy_and_brute_force():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    b[0] = a[0] * 3 + 1  # same ranking
    b[1] = -a[1]  # reversed
    rho = spearman_rows(a, b)
    ref = torch.tensor([spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(6)], dtype=torch.float32)
    torch.testing.assert_close(rho, ref, rtol=1e-5, atol=1e-6)
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0)
    k = 6
    ov = topk_overlap_rows(a, b, k)
    brute = [len(set(a[i].argsort(descending=True)[:k].tolist()) & set(b[i].argsort(descending=True)[:k].tolist())) / k
             for i in range(6)]
    assert ov.tolist() == pytest.approx(brute) and ov[0] == 1.0 and ov[1] == 0.0
    # rows are time slices for video, whole samples for images
    full, cheap = torch.randn(2, 32, generator=g), torch.randn(2, 32, generator=g)
    assert compare(full, cheap, (2, 4, 4), 6)["overlap"].shape == (4,)
    assert compare(full, cheap, (1, 4, 8), 6)["spearman"].shape == (2,)
