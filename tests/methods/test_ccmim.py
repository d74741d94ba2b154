"""ccMIM recipe (ccMIM paper Eq. 4–10) on the real ``MaskedAutoencoder(cls_token=True)``: one step's
parts and gradients, the stop-gradient on the masked branch, importance masking, a few optimizer
steps on the demo videos, and the tiny config through the engine."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe
from videohpm.methods.ccmim import CCMIM
from videohpm.models.autoencoder import MaskedAutoencoder

from .conftest import TINY

REPO = Path(__file__).resolve().parents[2]
CCMIM_CFG = REPO / "configs" / "test" / "pretrain_ccmim_tiny.yaml"


def make(contrast="nce", gen=None, **kw) -> CCMIM:
    torch.manual_seed(0)
    model = MaskedAutoencoder(**TINY, cls_token=True)
    gen = gen or make_mask_generator("importance", mask_ratio=0.75)
    return CCMIM(model, gen, contrast=contrast, proj_dim=8, pred_hidden=16, **kw)


def spy_encode(recipe):
    """Record ``(masked count or None, tokens out, requires_grad)`` of every encoder pass."""
    calls = []
    orig = recipe.model.encode

    def encode(x, mask=None, **kw):
        out = orig(x, mask, **kw)
        t = out[0] if isinstance(out, tuple) else out
        calls.append((None if mask is None else int(mask[0].sum()), t.shape[1], t.requires_grad))
        return out

    recipe.model.encode = encode
    return calls


def assert_every_parameter_has_grad(recipe):
    missing = [n for n, p in recipe.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient: {missing}"


@pytest.mark.parametrize("contrast", ["nce", "align"])
def test_step_parts_gradients_and_stop_gradient(contrast, clip):
    recipe = make(contrast)
    calls = spy_encode(recipe)
    out = recipe({"video": clip}, progress=0.3)
    assert set(out) == {"loss", "loss_rec", "loss_contrast"}
    torch.testing.assert_close(out["loss"].detach(), out["loss_rec"] + 0.2 * out["loss_contrast"])
    # importance pass (all 32 tokens + [CLS], no graph), visible pass (grad), masked pass (SG)
    assert calls == [(None, 33, False), (24, 9, True), (8, 25, False)]
    out["loss"].backward()
    assert_every_parameter_has_grad(recipe)  # incl. encoder.cls_token, decoder, projector (+ predictor)


def test_masked_branch_is_a_stop_gradient(clip):
    """Eq. 7: the gradient equals the one with h^M replaced by a constant computed beforehand."""
    recipe = make()
    gen = make_mask_generator("random", mask_ratio=0.75)
    mask = gen((2, 2, 4, 4), device=clip.device, generator=torch.Generator().manual_seed(0))
    recipe.mask_generator = lambda grid, **kw: mask
    recipe.projector.eval()  # BatchNorm with running stats: both passes see the same projector
    recipe({"video": clip})["loss"].backward()
    g_recipe = recipe.model.encoder.cls_token.grad.clone()

    from videohpm.objectives.contrastive import nce_loss
    from videohpm.objectives.reconstruction import reconstruction_loss, select_masked

    m = recipe.model
    m.zero_grad()
    h_m = recipe.projector(m.encode(clip, ~mask, cls=True)[:, 0]).detach()
    vis = m.encode(clip, mask, cls=True)
    pred = m.decode(vis[:, 1:], mask)
    loss = reconstruction_loss(pred, select_masked(m.target(clip), mask)).loss + 0.2 * nce_loss(
        recipe.projector(vis[:, 0]), h_m, 0.5)
    loss.backward()
    torch.testing.assert_close(m.encoder.cls_token.grad, g_recipe)


def test_mask_hides_the_most_important_patches(clip):
    gen = make_mask_generator("importance", mask_ratio=0.75, temperature=1e-4)  # ≈ top-k
    recipe = make(gen=gen)
    seen = {}
    orig = recipe.mask_generator.__call__

    class Spy:
        needs_scores = True

        def __call__(self, grid, scores=None, **kw):
            seen["scores"] = scores
            seen["mask"] = orig(grid, scores=scores, **kw)
            return seen["mask"]

    recipe.mask_generator = Spy()
    recipe.eval()  # no DropPath here anyway; keeps the two importance passes identical
    recipe({"video": clip})
    s, mask = seen["scores"], seen["mask"]
    assert s.shape == (2, 32) and torch.allclose(s.sum(1), torch.ones(2))
    top = s.topk(24, dim=1).indices
    assert torch.equal(mask, torch.zeros_like(mask).scatter_(1, top, True))
    torch.testing.assert_close(s, recipe.importance(clip))
    # Eq. 4 from the last block's [CLS] row: softmax over patches of the head-mean logits
    _, logits = recipe.model.encode(clip, None, cls=True, return_cls_logits=True)
    torch.testing.assert_close(s, logits[-1].mean(1).softmax(-1))


def test_per_frame_importance_masks_each_time_slice(clip):
    recipe = make(gen=make_mask_generator("importance", mask_ratio=0.75, per_frame=True))
    calls = spy_encode(recipe)
    seen = {}
    gen = recipe.mask_generator

    class Spy:
        needs_scores = True

        def __call__(self, grid, **kw):
            seen["mask"] = gen(grid, **kw)
            return seen["mask"]

    recipe.mask_generator = Spy()
    recipe({"video": clip})
    per_slice = seen["mask"].view(2, 2, 16).sum(-1)  # grid 2×4×4: 12 of 16 in each time slice
    assert torch.equal(per_slice, torch.full((2, 2), 12))
    assert [c[:2] for c in calls] == [(None, 33), (24, 9), (8, 25)]


def test_random_dividing_ablation_skips_importance_pass(clip):
    recipe = make(gen=make_mask_generator("random", mask_ratio=0.75))
    calls = spy_encode(recipe)
    recipe({"video": clip})
    assert [c[0] for c in calls] == [24, 8]


def test_needs_cls_hooks_and_validates_options(tiny_model):
    with pytest.raises(ValueError, match=r"\[CLS\].*cls_token"):
        CCMIM(tiny_model(), make_mask_generator("importance"))
    with pytest.raises(ValueError, match="contrast"):
        make("simclr")
    with pytest.raises(ValueError, match="importance_layers"):
        make(importance_layers="first")


# ------------------------------------------------------------------------------- on the demo set
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import videohpm.data  # noqa: F401  (PyAV before decord, see videohpm/data/video.py)
    from videohpm.data import make_demo_data

    d = make_demo_data(tmp_path_factory.mktemp("ccmim_demo"), seed=0, tiny=True, formats=("ssv2",), images=False)
    return {"train": d.lists["ssv2"]["train"], "root": d.video_dirs["ssv2"]}


def test_a_few_steps_on_demo_videos(demo):
    from videohpm.data import build_collate, build_dataset

    ds = build_dataset({"dataset": "ssv2", "train": demo["train"], "data_root": demo["root"], "num_frames": 4,
                        "sampling_rate": 2, "input_size": 32}, "pretrain")
    loader = DataLoader(ds, batch_size=2, shuffle=False, collate_fn=build_collate(None, "pretrain"))
    torch.manual_seed(0)
    model = MaskedAutoencoder(**TINY, cls_token=True)
    recipe = build_recipe("ccmim", model, make_mask_generator("importance", mask_ratio=0.75, per_frame=True),
                          proj_dim=8)
    opt = torch.optim.AdamW(recipe.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in recipe.named_parameters()}
    steps = 0
    for batch in itertools.islice(loader, 2):  # 2 steps of 2 videos (BatchNorm in g needs ≥ 2)
        assert batch["video"].shape == (2, 3, 4, 32, 32)
        out = recipe(batch, progress=steps / 2)
        assert all(math.isfinite(float(v.detach())) for v in out.values())
        opt.zero_grad()
        out["loss"].backward()
        assert_every_parameter_has_grad(recipe)
        opt.step()
        recipe.on_step_end()
        steps += 1
    assert steps == 2
    moved = [n for n, p in recipe.named_parameters() if not torch.equal(p, before[n])]
    assert set(moved) == set(before)


def test_tiny_config_trains_through_the_engine(demo, tmp_path):
    """What ``tools/train.py --config configs/test/pretrain_ccmim_tiny.yaml`` runs, in process."""
    from videohpm.config import load_config
    from videohpm.engine import train

    cfg = load_config(str(CCMIM_CFG), [f"data.train={demo['train']}", f"data.data_root={demo['root']}",
                                       f"train.output_dir={tmp_path}", "train.max_steps=2"])
    assert cfg.mask.kwargs.per_frame is True and cfg.model.kwargs.cls_token is True
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("type") == "step"]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert all(math.isfinite(r[k]) for k in ("loss", "loss_rec", "loss_contrast", "grad_norm"))
        assert r["grad_norm"] > 0
    assert any(r.get("type") == "checkpoint" and r["step"] == 2 for r in records)
