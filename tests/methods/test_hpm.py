"""HPM recipe (HPM journal Eq. 1–8): teacher → mask → student, EMA, ablation switches."""
import pytest
import torch

from videohpm import hardware
from videohpm.masking import make_mask_generator
from videohpm.methods import HPM, build_recipe
from videohpm.methods import hpm as hpm_module


def hpm(model, **kw):
    gen_kw = dict(mask_ratio=0.75, alpha_0=kw.pop("alpha_0", 0.0), alpha_T=kw.pop("alpha_T", 0.5))
    return build_recipe("hpm", model, make_mask_generator("hpm", **gen_kw), **kw)


def test_step_returns_parts_and_every_student_parameter_gets_a_gradient(tiny_model, clip):
    recipe = hpm(tiny_model(loss_predictor=True))
    out = recipe({"video": clip}, progress=0.5)
    assert set(out) >= {"loss", "loss_rec", "loss_pred", "alpha"}
    assert torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"].detach(), out["loss_rec"] + out["loss_pred"])
    assert out["alpha"].item() == pytest.approx(0.25)  # Eq. 8 at t/T = 0.5 with α 0 → 0.5
    out["loss"].backward()
    # Eq. 5 sees only differences L̂_i − L̂_j, so the loss predictor's output bias gets exactly 0
    no_grad_expected = {"model.loss_predictor.head.bias"}
    missing = [n for n, p in recipe.named_parameters()
               if n not in no_grad_expected and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []
    assert recipe.model.loss_predictor.head.bias.grad.abs().max() < 1e-6
    # the teacher is outside the module tree: no grads, not in the optimizer's parameters
    assert all(p.grad is None and not p.requires_grad for p in recipe.teacher.parameters())
    ids = {id(p) for p in recipe.parameters()}
    assert not any(id(p) in ids for p in recipe.teacher.parameters())
    assert not any(k.startswith("teacher") for k in recipe.state_dict())


def test_ema_update_matches_eq1_by_hand(tiny_model, clip):
    recipe = hpm(tiny_model(loss_predictor=True), momentum=0.9)
    with torch.no_grad():  # make student and teacher differ
        for p in recipe.model.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in recipe.teacher.state_dict().items()}
    student = {k: v.clone() for k, v in recipe.model.state_dict().items()}
    recipe.on_step_end()
    after = recipe.teacher.state_dict()
    assert before.keys() == student.keys()
    for k in before:
        torch.testing.assert_close(after[k], 0.9 * before[k] + 0.1 * student[k])


def test_momentum_schedule_is_cosine_from_m_to_m_end(tiny_model):
    recipe = hpm(tiny_model(loss_predictor=True), momentum=0.99, momentum_end=1.0)
    recipe._progress = 0.0
    assert recipe.current_momentum() == pytest.approx(0.99)
    recipe._progress = 0.5
    assert recipe.current_momentum() == pytest.approx(0.995)
    recipe._progress = 1.0
    assert recipe.current_momentum() == pytest.approx(1.0)


def test_mask_hides_the_teachers_hardest_patches_per_time_slice(tiny_model, clip):
    recipe = hpm(tiny_model(loss_predictor=True), alpha_0=1.0, alpha_T=1.0, teacher_precision="fp32")
    seen = {}
    gen = recipe.mask_generator

    class Spy:
        def __getattr__(self, name):
            return getattr(gen, name)

        def __call__(self, grid, scores=None, **kw):
            seen["scores"], seen["mask"] = scores, gen(grid, scores=scores, **kw)
            return seen["mask"]

    recipe.mask_generator = Spy()
    recipe({"video": clip}, progress=0.3)
    t = recipe.teacher
    with torch.no_grad():
        expected = t.decode(t.encode(clip), None, head="loss", grid=t.grid(clip))[..., 0]
    torch.testing.assert_close(seen["scores"], expected)
    assert not seen["scores"].requires_grad
    # α = 1: in each of the 2 time slices of 16 tokens, the 12 highest-scored tokens are masked
    scores, mask = seen["scores"].view(2, 2, 16), seen["mask"].view(2, 2, 16)
    top = scores.topk(12, dim=-1).indices
    assert mask.gather(-1, top).all()
    assert mask.sum(-1).eq(12).all()


def test_absolute_variant_and_random_mask_ablation(tiny_model, clip):
    model = tiny_model(loss_predictor=True)
    rec = build_recipe("hpm", model, make_mask_generator("frame", mask_ratio=0.75),
                       loss_pred="absolute", learn_to_mask=False)
    assert rec.teacher is None  # no teacher forward at all when masks are random
    out = rec({"video": clip}, progress=0.0)
    assert {"loss_rec", "loss_pred"} <= set(out) and "alpha" not in out
    out["loss"].backward()
    assert model.loss_predictor.head.weight.grad is not None


def test_no_lpred_random_mask_equals_mae(tiny_model, clip):
    a = build_recipe("hpm", tiny_model(), make_mask_generator("tube", mask_ratio=0.75),
                     loss_pred="none", learn_to_mask=False)
    b = build_recipe("mae", tiny_model(), make_mask_generator("tube", mask_ratio=0.75))
    torch.manual_seed(3)
    la = a({"video": clip})["loss"]
    torch.manual_seed(3)
    lb = b({"video": clip})["loss"]
    torch.testing.assert_close(la, lb)


def test_image_mode_single_frame(tiny_model):
    model = tiny_model(num_frames=1, tubelet_size=1, loss_predictor=True)
    recipe = hpm(model, alpha_0=0.5, alpha_T=0.5)
    out = recipe({"video": torch.randn(3, 3, 1, 32, 32)}, progress=0.0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_teacher_precision_auto_follows_the_student(tiny_model):
    recipe = hpm(tiny_model(loss_predictor=True))
    assert recipe.teacher_dtype() == torch.float32  # fp32 run: fp32 teacher, the same masks everywhere
    recipe.model.to(torch.bfloat16)  # what DeepSpeed's bf16 mode does to the student
    assert recipe.teacher_dtype() == torch.bfloat16
    recipe.model.to(torch.float16)
    assert recipe.teacher_dtype() == torch.float16
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        assert hpm(tiny_model(loss_predictor=True), teacher_precision=name).teacher_dtype() == dtype
    # the teacher's weights stay fp32 whatever the precision of its forward
    assert all(p.dtype == torch.float32 for p in recipe.teacher.parameters())


def test_bf16_teacher_runs_in_bf16_and_ranks_like_the_fp32_teacher(tiny_model, clip, monkeypatch):
    """`teacher_precision=bf16` on a native-bf16 CPU: the teacher's GEMMs run in bf16, its scores
    come back fp32 and close to the fp32 teacher's, and the mask keeps the exact per-slice counts
    (Eq. 8). The native-bf16 branch is forced so that it is tested on every CPU (the tiny model's
    64 tokens take ATen's bf16 kernels, which exist everywhere)."""
    monkeypatch.setattr(hardware, "cpu_bf16_is_fast", lambda: True)
    torch.manual_seed(0)
    model = tiny_model(loss_predictor=True)
    recipe = hpm(model, alpha_0=1.0, alpha_T=1.0, teacher_precision="bf16")
    dtypes = []
    hook = recipe.teacher.encoder.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    feats, scores = recipe._teacher_forward(clip)
    hook.remove()
    assert dtypes == [torch.bfloat16] and scores.dtype == torch.float32 and feats is None
    recipe.teacher_precision = "fp32"
    _, ref = recipe._teacher_forward(clip)
    assert (scores - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
    assert torch.corrcoef(torch.stack([scores.flatten(), ref.flatten()]))[0, 1] > 0.99
    recipe.teacher_precision = "bf16"
    out = recipe({"video": clip}, progress=1.0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(p.dtype == torch.float32 for p in recipe.parameters())


def test_bf16_teacher_runs_in_fp32_where_bf16_is_only_emulated(tiny_model, clip, monkeypatch, caplog):
    """No native bf16 (an AVX2-only CPU, or ISA caps): `teacher_precision=bf16` neither crashes
    nor runs emulated bf16; the teacher runs in fp32 — the same scores as `fp32` — and says so once."""
    monkeypatch.setattr(hardware, "cpu_bf16_is_fast", lambda: False)
    hpm_module._warn_bf16_emulated.cache_clear()
    torch.manual_seed(0)
    recipe = hpm(tiny_model(loss_predictor=True), alpha_0=1.0, alpha_T=1.0, teacher_precision="bf16")
    assert recipe.teacher_dtype() == torch.bfloat16  # the setting; the device decides what runs
    assert recipe.teacher_dtype(clip.device) == torch.float32
    dtypes = []
    hook = recipe.teacher.encoder.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with caplog.at_level("WARNING", logger="videohpm.methods.hpm"):
        _, scores = recipe._teacher_forward(clip)
        _, again = recipe._teacher_forward(clip)
    hook.remove()
    assert dtypes == [torch.float32, torch.float32]
    assert sum("emulated" in r.getMessage() for r in caplog.records) == 1
    recipe.teacher_precision = "fp32"
    _, ref = recipe._teacher_forward(clip)
    torch.testing.assert_close(scores, ref, rtol=0, atol=0)
    recipe.teacher_precision = "bf16"
    out = recipe({"video": clip}, progress=1.0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("kw, match", [
    (dict(teacher_precision="half"), "teacher_precision"),
    (dict(loss_pred="mse"), "loss_pred"),
    (dict(learn_to_mask=True, loss_pred="none"), "loss predictor"),
    (dict(momentum=1.5), "momentum"),
    (dict(momentm=0.9), "momentm"),
    (dict(absolute_target="zscore"), "absolute_target"),
    (dict(absolute_target="standardized"), "loss_pred=absolute"),
])
def test_bad_options_fail_naming_the_key(tiny_model, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        hpm(tiny_model(loss_predictor=True), **kw)


def test_recipe_rejects_mismatched_model_and_mask(tiny_model):
    with pytest.raises(ValueError, match="loss_predictor"):
        hpm(tiny_model(loss_predictor=False))
    with pytest.raises(ValueError, match="score-driven"):
        build_recipe("hpm", tiny_model(loss_predictor=True), make_mask_generator("random", mask_ratio=0.75))
    with pytest.raises(ValueError, match="mask.name=hpm|score"):
        build_recipe("mae", tiny_model(), make_mask_generator("hpm", mask_ratio=0.75))
    with pytest.raises(ValueError, match="unknown recipe"):
        build_recipe("hmp", tiny_model())


def test_teacher_state_round_trip(tiny_model):
    a = hpm(tiny_model(loss_predictor=True))
    b = hpm(tiny_model(loss_predictor=True))
    with torch.no_grad():
        for p in a.teacher.parameters():
            p.add_(1.0)
    b.load_teacher_state_dict(a.teacher_state_dict())
    for pa, pb in zip(a.teacher.parameters(), b.teacher.parameters()):
        torch.testing.assert_close(pa, pb)


def test_no_teacher_forward_while_alpha_is_zero(tiny_model, clip):
    recipe = hpm(tiny_model(loss_predictor=True), alpha_0=0.0, alpha_T=0.5)
    calls = []
    recipe.teacher.encoder.register_forward_hook(lambda *a: calls.append(1))
    recipe({"video": clip}, progress=0.0)  # α_0 = 0: purely random, the teacher is skipped
    assert calls == []
    recipe({"video": clip}, progress=1.0)  # α_T = 0.5: the teacher ranks the patches
    assert calls == [1]


@pytest.mark.parametrize("recipe_name", ["mae", "hpm"])
def test_step_never_reads_mask_counts_back_to_the_host(tiny_model, clip, monkeypatch, recipe_name):
    """The visible count comes from the mask generator, not from `mask.sum().tolist()`."""
    import videohpm.models.autoencoder as ae

    def no_sync(*a, **k):
        raise AssertionError("mask_split (a device→host sync) called inside the training step")

    monkeypatch.setattr(ae, "mask_split", no_sync)
    if recipe_name == "hpm":
        recipe = hpm(tiny_model(loss_predictor=True), alpha_0=0.5)
    else:
        recipe = build_recipe("mae", tiny_model(), make_mask_generator("frame", mask_ratio=0.75))
    recipe({"video": clip}, progress=0.5)["loss"].backward()
