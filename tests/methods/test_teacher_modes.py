"""HPM teacher modes (`method.kwargs.teacher_mode`, videohpm.methods.hpm.TeacherMode): `full` is
today's teacher bit for bit; `subset:r` and `lowres:s` score all N tokens of the student's grid
through the same teacher, without gradients or host syncs, in video and image mode."""
from pathlib import Path

import pytest
import torch

from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe
from videohpm.methods.hpm import parse_teacher_mode

VIDEO = dict(shape=(2, 3, 4, 32, 32), model={})  # grid 2 × 4 × 4
IMAGE = dict(shape=(2, 3, 1, 32, 32), model=dict(num_frames=1, tubelet_size=1))  # grid 1 × 4 × 4


def make(tiny_model, mode="full", kind=VIDEO, **kw):
    gen = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.5, alpha_T=1.0)
    model = tiny_model(loss_predictor=True, **kind["model"])
    extra = {} if mode is None else dict(teacher_mode=mode)
    recipe = build_recipe("hpm", model, gen, **extra, **kw)
    x = torch.randn(*kind["shape"], generator=torch.Generator().manual_seed(1))
    return recipe, x


def record_masks(recipe):
    """Wrap the recipe's mask generator so that every mask (and the scores it got) is kept."""
    gen, seen = recipe.mask_generator, []

    class Recorder:
        def __call__(self, *a, **k):
            mask = gen(*a, **k)
            seen.append((mask.clone(), None if k.get("scores") is None else k["scores"].clone()))
            return mask

        def __getattr__(self, name):
            return getattr(gen, name)

    recipe.mask_generator = Recorder()
    return seen


@pytest.mark.parametrize("kind", [VIDEO, IMAGE], ids=["video", "image"])
def test_full_is_todays_teacher_bit_for_bit(tiny_model, kind):
    """`teacher_mode=full` (and the default) gives the scores and masks of today's computation —
    `d_ψt(f_θt(x))` over all N tokens (a copy of the code before teacher modes existed) — exactly,
    in the same seeds, over three training steps (teacher moving by EMA)."""
    runs = {}
    for mode in (None, "full"):
        recipe, x = make(tiny_model, mode, kind)
        seen = record_masks(recipe)
        opt = torch.optim.AdamW(recipe.parameters(), lr=1e-2)
        refs = []
        torch.manual_seed(5)
        for _ in range(3):
            # today's teacher pass, by hand (no RNG is drawn by it)
            with torch.inference_mode():
                t = recipe.teacher
                ref = t.decode(t.encode(x.float()), None, head="loss", grid=t.grid(x)).squeeze(-1).float().clone()
            rng = torch.get_rng_state()
            ref_mask = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.5, alpha_T=1.0)(
                (x.shape[0], *recipe.model.grid(x)), scores=ref, progress=0.5, device=x.device)
            torch.set_rng_state(rng)  # the recipe draws the same noise as the reference did
            out = recipe({"video": x}, progress=0.5)
            out["loss"].backward()
            opt.step()
            opt.zero_grad()
            recipe.on_step_end()
            refs.append((ref_mask, ref))
        assert len(seen) == 3
        for (mask, scores), (ref_mask, ref) in zip(seen, refs):
            assert torch.equal(scores, ref)
            assert torch.equal(mask, ref_mask)
        runs[mode] = torch.stack([m for m, _ in seen])
    assert torch.equal(runs[None], runs["full"])


@pytest.mark.parametrize("kind", [VIDEO, IMAGE], ids=["video", "image"])
def test_subset_encodes_r_of_every_slice_and_scores_all_tokens(tiny_model, kind):
    recipe, x = make(tiny_model, "subset:0.25", kind)
    b, (t, h, w) = x.shape[0], recipe.model.grid(x)
    seen = {}
    orig_encode = recipe.teacher.encode

    def encode(inp, mask=None, **k):
        seen["mask"], seen["num_visible"] = mask, k.get("num_visible")
        out = orig_encode(inp, mask, **k)
        seen["latent"] = out.shape
        return out

    recipe.teacher.encode = encode
    _, scores = recipe._teacher_forward(x)
    assert scores.shape == (b, t * h * w) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    hidden = seen["mask"].reshape(b, t, h * w)
    kept = (~hidden).sum(-1)
    assert torch.equal(kept, torch.full((b, t), 4))  # round(0.25 · 16) per time slice, every sample
    assert seen["num_visible"] == t * 4 and seen["latent"] == (b, t * 4, recipe.teacher.embed_dim)
    assert not torch.equal(hidden[0], hidden[1])  # drawn per sample
    # the same teacher, d_ψt on [latents | mask tokens] over all N positions: by hand, in token order
    with torch.inference_mode():
        teacher = recipe.teacher
        latent = orig_encode(x, seen["mask"], num_visible=t * 4)
        dec = teacher.loss_predictor
        full = torch.empty(b, t * h * w, dec.mask_token.shape[-1])
        full[:] = dec.mask_token
        vis = (~seen["mask"]).nonzero()[:, 1].reshape(b, -1)
        full.scatter_(1, vis.unsqueeze(-1).expand(-1, -1, full.shape[-1]), dec.embed(latent))
        y = full + dec.pos_embed[0]
        for blk in dec.blocks:
            y = blk(y)
        ref = dec.head(dec.norm(y)).squeeze(-1)
    torch.testing.assert_close(scores, ref, rtol=1e-5, atol=1e-5)


def test_subset_keeping_every_token_is_the_full_teacher(tiny_model):
    """r with round(r·n_s) = n_s: nothing hidden, so the scores are `full`'s (token order kept)."""
    recipe, x = make(tiny_model, "subset:0.99")
    _, scores = recipe._teacher_forward(x)
    recipe.teacher_mode = parse_teacher_mode("full")
    _, ref = recipe._teacher_forward(x)
    torch.testing.assert_close(scores, ref, rtol=1e-5, atol=1e-5)


def test_teacher_scores_in_another_mode_leave_the_recipe_mode(tiny_model):
    """`teacher_scores(x, mode)`: the scores of that mode (as a recipe built with it computes them),
    the recipe's own `teacher_mode` untouched."""
    recipe, x = make(tiny_model, "full")
    other, _ = make(tiny_model, "lowres:2")
    other.load_teacher_state_dict(recipe.teacher_state_dict())
    torch.testing.assert_close(recipe.teacher_scores(x, "lowres:2"), other._teacher_forward(x)[1])
    assert str(recipe.teacher_mode) == "full"
    torch.testing.assert_close(recipe.teacher_scores(x), recipe._teacher_forward(x)[1])
    assert not torch.allclose(recipe.teacher_scores(x), recipe.teacher_scores(x, "lowres:2"))


@pytest.mark.parametrize("kind", [VIDEO, IMAGE], ids=["video", "image"])
@pytest.mark.parametrize("mode, small", [("lowres:2", (2, 2)), ("lowres:1.5", (3, 3)), ("lowres:4", (1, 1))])
def test_lowres_runs_the_teacher_on_the_small_grid(tiny_model, kind, mode, small):
    recipe, x = make(tiny_model, mode, kind)
    b, (t, h, w) = x.shape[0], recipe.model.grid(x)
    seen = []
    hook = recipe.teacher.encoder.patch_embed.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    _, scores = recipe._teacher_forward(x)
    hook.remove()
    p = recipe.model.patch_size
    assert seen == [(b, 3, x.shape[2], small[0] * p, small[1] * p)]  # time kept, space / s
    assert scores.shape == (b, t * h * w) and torch.isfinite(scores).all()


@pytest.mark.parametrize("kind", [VIDEO, IMAGE], ids=["video", "image"])
def test_lowres_maps_each_small_cell_onto_the_tokens_it_covers(tiny_model, kind):
    """A spike at one cell of one time slice of the 2×2 score map lands on the 2×2 block of the
    4×4 grid under that cell (its four highest scores), in that time slice only."""
    recipe, x = make(tiny_model, "lowres:2", kind)
    b, (t, h, w) = x.shape[0], recipe.model.grid(x)
    for tau, (i, j) in ((0, (0, 1)), (t - 1, (1, 0))):
        def fake_decode(latent, mask, head, grid):
            assert mask is None and head == "loss" and tuple(grid) == (t, 2, 2)
            s = torch.zeros(latent.shape[0], t, 2, 2)
            s[:, tau, i, j] = 1.0
            return s.reshape(latent.shape[0], t * 4, 1)

        recipe.teacher.decode = fake_decode
        _, scores = recipe._teacher_forward(x)
        s = scores.reshape(b, t, h, w)
        others = [k for k in range(t) if k != tau]
        assert all(torch.equal(s[:, k], torch.zeros(b, h, w)) for k in others)
        top = s[:, tau].reshape(b, -1).topk(4).indices.sort(-1).values
        block = torch.tensor(sorted((2 * i + di) * w + 2 * j + dj for di in (0, 1) for dj in (0, 1)))
        assert torch.equal(top, block.expand(b, 4))


@pytest.mark.parametrize("mode", ["full", "subset:0.25", "lowres:2"])
@pytest.mark.parametrize("kind", [VIDEO, IMAGE], ids=["video", "image"])
def test_no_teacher_gradients_and_a_full_training_step(tiny_model, kind, mode, monkeypatch):
    """Scores carry no graph, the teacher gets no gradient, and the step needs no host sync
    (`mask_split`, the counting path, is never called)."""
    import videohpm.models.autoencoder as ae

    monkeypatch.setattr(ae, "mask_split", lambda *a, **k: pytest.fail("device→host sync in the training step"))
    recipe, x = make(tiny_model, mode, kind)
    seen = record_masks(recipe)
    out = recipe({"video": x}, progress=0.5)
    out["loss"].backward()
    (mask, scores), = seen
    assert not scores.requires_grad and scores.grad_fn is None
    assert all(p.grad is None and not p.requires_grad for p in recipe.teacher.parameters())
    assert recipe.model.encoder.blocks[0].attn.qkv.weight.grad is not None
    n = mask.shape[1]
    per_slice = mask.reshape(mask.shape[0], recipe.model.grid(x)[0], -1).sum(-1)
    assert (per_slice == per_slice[0, 0]).all() and 0 < int(mask.sum()) < mask.numel() and n == scores.shape[1]


@pytest.mark.parametrize("spec", ["half", "subset", "subset:0", "subset:1", "subset:1.5", "subset:x", "lowres:1",
                                  "lowres:0.5", "lowres:inf", "lowres:nan", "full:1", "", 3, 0.5])
def test_bad_teacher_modes_fail_naming_the_key(tiny_model, spec):
    with pytest.raises(ValueError, match="method.kwargs.teacher_mode"):
        make(tiny_model, spec)


def test_teacher_mode_parsing_and_refused_combinations(tiny_model):
    assert str(parse_teacher_mode("Subset:0.25")) == "subset:0.25"
    assert str(parse_teacher_mode(" lowres:2.0 ")) == "lowres:2"
    assert parse_teacher_mode("lowres:3").low_grid(14, 14) == (5, 5)
    assert parse_teacher_mode("subset:0.1").kept_per_slice(196) == 20
    assert parse_teacher_mode("subset:0.01").kept_per_slice(16) == 1
    with pytest.raises(ValueError, match="method.kwargs.teacher_mode.*ema_features"):
        make(tiny_model, "subset:0.5", target="ema_features", teacher_precision="fp32")
    with pytest.raises(ValueError, match="method.kwargs.teacher_mode.*learn_to_mask"):
        build_recipe("hpm", tiny_model(loss_predictor=True), make_mask_generator("frame", mask_ratio=0.75),
                     learn_to_mask=False, teacher_mode="lowres:2")


def test_config_override_is_checked_before_any_work(tmp_path):
    from videohpm.config import ConfigError, load_config
    from videohpm.engine.build import check_buildable

    over = ["train.epochs=4", "optim.warmup_epochs=0.4", f"train.output_dir={tmp_path / 'run'}"]
    path = str(Path(__file__).resolve().parents[2] / "configs/demo/pretrain_video_hpm.yaml")
    cfg = load_config(path, over + ["method.kwargs.teacher_mode=lowres:2"])
    check_buildable(cfg)
    cfg = load_config(path, over + ["method.kwargs.teacher_mode=subset:2"])
    with pytest.raises(ConfigError, match="method.kwargs.teacher_mode"):
        check_buildable(cfg)
    assert not (tmp_path / "run").exists()
