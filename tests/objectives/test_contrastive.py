"""ccMIM L_NCE (ccMIM paper Eq. 7) and L_align (Eq. 8) vs loops; stop-gradient; cross-rank gather."""
import math
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

from videohpm.objectives import align_loss, gather_batch, nce_loss


def cos(a, b):
    return float(a @ b) / (float(a.norm()) * float(b.norm()))


def eq7_loop(hv, hm, tau, visible_negatives=True):
    """Per-anchor ℓ_i of Eq. 7 with explicit sums over j."""
    B = hv.shape[0]
    losses = []
    for i in range(B):
        num = math.exp(cos(hm[i], hv[i]) / tau)
        den = sum(math.exp(cos(hm[i], hv[j]) / tau) for j in range(B))
        if visible_negatives:
            den += sum(math.exp(cos(hv[i], hv[j]) / tau) for j in range(B) if j != i)
        losses.append(-math.log(num / den))
    return losses


def embeddings(B=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)


@pytest.mark.parametrize("visible_negatives", [True, False])
@pytest.mark.parametrize("tau", [0.5, 0.2])
def test_nce_matches_loop(visible_negatives, tau):
    hv, hm = embeddings()
    ref = sum(eq7_loop(hv, hm, tau, visible_negatives)) / 5
    out = nce_loss(hv, hm, tau, visible_negatives=visible_negatives)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref, rel=1e-5)


def test_nce_default_temperature_and_stop_gradient():
    hv, hm = embeddings(seed=1)
    assert nce_loss(hv, hm).item() == pytest.approx(sum(eq7_loop(hv, hm, 0.5)) / 5, rel=1e-5)
    hv.requires_grad_()
    hm.requires_grad_()
    nce_loss(hv, hm).backward()
    assert hm.grad is None  # SG on the masked (teacher) branch
    assert hv.grad is not None and hv.grad.abs().sum() > 0
    # aligned pairs score lower than shuffled ones
    v, _ = embeddings(B=16, seed=2)
    assert nce_loss(v, v + 0.01) < nce_loss(v, v.roll(1, 0))
    with pytest.raises(ValueError, match="h_vis and h_mask"):
        nce_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        nce_loss(hv, hm, 0.0)


def test_align_matches_loop_and_stops_gradient():
    pv, hm = embeddings(seed=3)
    ref = sum(1 - cos(pv[i], hm[i]) for i in range(5)) / 5
    pv.requires_grad_()
    hm.requires_grad_()
    out = align_loss(pv, hm)
    assert out.item() == pytest.approx(ref, rel=1e-5)
    out.backward()
    assert hm.grad is None and pv.grad.abs().sum() > 0


def test_gather_single_process_is_identity():
    x = torch.randn(3, 4)
    y, off = gather_batch(x)
    assert y is x and off == 0
    with pytest.raises(ValueError, match="gather grad"):
        gather_batch(x, grad="none")


def _worker(rank, world, init_file, hv_all, hm_all, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)
    b = hv_all.shape[0] // world
    res = {}
    for mode in ("local", "all"):
        hv = hv_all[rank * b:(rank + 1) * b].clone().requires_grad_()
        hm = hm_all[rank * b:(rank + 1) * b].clone()
        loss = nce_loss(hv, hm, 0.5, gather_grad=mode)
        loss.backward()
        res[mode] = (loss.detach(), hv.grad.clone())
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_negatives_gathered_across_two_ranks():
    hv_all, hm_all = embeddings(B=6, D=8, seed=4)
    world, b = 2, 3
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), hv_all, hm_all, tmp), nprocs=world)
        res = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]
    per_anchor = eq7_loop(hv_all, hm_all, 0.5)  # negatives over the global batch of 6
    ref_v = hv_all.clone().requires_grad_()
    nce_loss(ref_v, hm_all, 0.5).backward()  # single process, global batch: mean over 6 anchors
    for r in range(world):
        for mode in ("local", "all"):
            assert res[r][mode][0].item() == pytest.approx(sum(per_anchor[r * b:(r + 1) * b]) / b, rel=1e-5)
        # "all": after averaging over ranks (DDP), the gradient equals the single-process one
        torch.testing.assert_close(res[r]["all"][1] / world, ref_v.grad[r * b:(r + 1) * b],
                                   rtol=1e-4, atol=1e-6)
    # "local": the local rows' gradient only carries this rank's own anchors' terms
    v_loc = hv_all[:b].clone().requires_grad_()
    v_glob = torch.cat([v_loc, hv_all[b:]])
    loss0 = 0.0
    for i in range(b):
        loss0 = loss0 + _loss_i(v_glob, hm_all, i, 0.5)
    (loss0 / b).backward()
    torch.testing.assert_close(res[0]["local"][1], v_loc.grad, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(res[0]["local"][1], res[0]["all"][1])


def _loss_i(v, m, i, tau):
    v = torch.nn.functional.normalize(v, dim=-1)
    m = torch.nn.functional.normalize(m, dim=-1)
    mv = m[i] @ v.t() / tau
    vv = v[i] @ v.t() / tau
    vv = torch.cat([vv[:i], vv[i + 1:]])
    return -(mv[i] - torch.logsumexp(torch.cat([mv, vv]), 0))
