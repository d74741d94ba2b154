"""tools/lib/pretext_check.py: the visible-only "copy from another frame" prediction against a loop
written from its definition, and the per-group sums of a clip against what they must add up to."""
import pytest
import torch

from tests.evaluation.helpers import tiny_autoencoder
from tools.lib.pretext_check import GROUPS, PREDICTIONS, clip_breakdown, copy_from_visible
from videohpm.evaluation.visualize import masked_patch_loss
from videohpm.masking import make_mask_generator


def _copy_loop(target, mask, grid):
    """Token (τ, h, w) hidden: the visible (τ', h, w), τ' ≠ τ, nearest in time, the earlier on a tie;
    none: the mean of the sample's visible targets."""
    B, N, P = target.shape
    T = grid[0]
    S = N // T
    pred = torch.empty_like(target)
    copied = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        vis = [i for i in range(N) if not mask[b, i]]
        fallback = target[b, vis].mean(0) if vis else torch.zeros(P)
        for t in range(T):
            for s in range(S):
                sources = [u for u in range(T) if u != t and not mask[b, u * S + s]]
                if sources:
                    u = min(sources, key=lambda u: (abs(u - t), u))
                    pred[b, t * S + s] = target[b, u * S + s]
                    copied[b, t * S + s] = True
                else:
                    pred[b, t * S + s] = fallback
    return pred, copied


@pytest.mark.parametrize("T,S,ratio", [(4, 6, 0.75), (5, 3, 0.5), (8, 4, 0.9), (2, 4, 0.75), (1, 9, 0.5)])
def test_copy_from_visible_matches_the_loop(T, S, ratio):
    g = torch.Generator().manual_seed(T * 100 + S)
    B, P = 3, 5
    target = torch.randn(B, T * S, P, generator=g)
    mask = torch.rand(B, T * S, generator=g) < ratio
    mask[0, :S] = False  # a whole time slot visible
    mask[1, torch.arange(T) * S] = True  # place 0 hidden at every time: no source
    pred, copied = copy_from_visible(target, mask, (T, S, 1))
    ref_pred, ref_copied = _copy_loop(target, mask, (T, S, 1))
    assert torch.equal(copied, ref_copied)
    assert torch.allclose(pred, ref_pred, atol=1e-6, rtol=0)
    assert not copied[1, torch.arange(T) * S].any()
    if T > 1:
        assert copied[0, S:].all()  # every later slot copies from the visible first one


def test_copy_from_visible_prefers_the_earlier_slot_on_a_tie():
    target = torch.arange(3.0).view(1, 3, 1)  # T = 3, one place: values 0, 1, 2
    pred, copied = copy_from_visible(target, torch.tensor([[False, True, False]]), (3, 1, 1))
    assert copied.tolist() == [[True, True, True]] and pred[0, 1, 0] == 0.0  # slots 0 and 2 tie for 1


def _clip(T=4, size=32, seed=0):
    """A textured static background with a bright 8×8 square moving right by 8 px per 2 frames."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.rand(3, 1, size, size, generator=g) * 0.5
    x = bg.expand(3, T, size, size).clone()
    for t in range(T):
        c = 8 * (t // 2)
        x[:, t, 8:16, c:c + 8] = 2.0
    return x[None]


def test_clip_breakdown_against_a_loop_over_the_hidden_patches():
    model = tiny_autoencoder(patch_size=8).eval()  # 4 frames of 32² → grid (2, 4, 4), 24 tokens hidden
    x = _clip()
    grid = (1, *model.grid(x))
    gen = torch.Generator().manual_seed(0)
    masker = make_mask_generator("random", mask_ratio=0.75)
    masks = [masker(grid, generator=gen) for _ in range(6)]
    sums, counts = clip_breakdown(model, x, masks, threshold=0.15)
    assert set(sums) == set(PREDICTIONS) and set(counts) == set(GROUPS)

    # moving: a voxel off the temporal median (the lower middle of 4 frames: the background) — the
    # square's place (1, 0) in time slot 0 and (1, 1) in slot 1; everything else is static
    moving = {4, 16 + 5}
    target = model.target(x)[0]  # [32, P]
    median = x.median(dim=2, keepdim=True).values.expand_as(x).contiguous()
    ref = {k: {g: 0.0 for g in GROUPS} for k in ("copy", "median", "mean")}
    ref_counts = {g: 0 for g in GROUPS}
    for m in masks:
        copy, _ = _copy_loop(target[None], m, (2, 4, 4))
        loss = {"copy": (copy[0] - target).pow(2).mean(-1),
                "median": (model.target(median)[0] - target).pow(2).mean(-1),
                "mean": (target.mean(0) - target).pow(2).mean(-1)}
        for i in range(32):
            if not m[0, i]:
                continue
            copyable = not m[0, (i + 16) % 32]  # the same place in the other time slot
            groups = ["moving"] if i in moving else ["static", "static_copyable" if copyable else "static_hidden"]
            for g in groups:
                ref_counts[g] += 1
                for k in ref:
                    ref[k][g] += float(loss[k][i])
    assert counts == ref_counts and counts["moving"] + counts["static"] == 6 * 24
    assert counts["moving"] > 0 and counts["static_copyable"] > 0 and counts["static_hidden"] > 0
    for k in ref:
        for g in GROUPS:
            assert sums[k][g] == pytest.approx(ref[k][g], rel=1e-5, abs=1e-9), (k, g)
    # the median over time is exact on the static background; the copy is exact where its place
    # stayed background in both slots, not on the two places the square passes
    assert sums["median"]["static"] == 0.0 and sums["copy"]["static_hidden"] > 0.0
    # the model's figures are its Eq. 3 losses under the same masks
    total = sum(float(masked_patch_loss(model, x, m).sum()) for m in masks)
    assert sums["model"]["moving"] + sums["model"]["static"] == pytest.approx(total, rel=1e-5)
    assert sums["model"]["static_copyable"] + sums["model"]["static_hidden"] == \
        pytest.approx(sums["model"]["static"], rel=1e-5)


def test_the_tool_reports_every_bad_input_together_before_any_work(tmp_path, capsys):
    from tests.evaluation.helpers import load_tool

    tool = load_tool("pretext_check")
    listed = tmp_path / "val.csv"
    listed.write_text("a.webm 0\nb.webm 1\n")
    rc = tool.main(["--list", str(listed), "--data-root", str(tmp_path), "--videos", "0", "--threshold", "2",
                    f"checkpoint={tmp_path / 'none.pth'}"])
    err = capsys.readouterr().err
    assert rc == 2
    for part in ("--videos must be at least 1", "--threshold is a difference", "none.pth: no such file"):
        assert part in err, err
    rc = tool.main(["--list", str(tmp_path / "absent.csv"), "--masks", "2", f"checkpoint={tmp_path / 'none.pth'}"])
    assert rc == 2 and "list file not found" in capsys.readouterr().err
    (tmp_path / "a.webm").write_bytes(b"")
    rc = tool.main(["--list", str(listed), "--data-root", str(tmp_path), f"checkpoint={tmp_path / 'none.pth'}"])
    assert rc == 2 and "1 of the 2 videos read are missing" in capsys.readouterr().err
