"""The recipe contract (`videohpm.methods.base.Recipe`) over every registered recipe × every
registered model (timm's `tests/test_models.py` habit): build, one step (forward + backward), a
finite loss, a gradient on every trainable parameter, and the EMA teacher (`EmaTeacher`) kept out
of the module tree, in fp32, with a state dict that round-trips.

Models: every entry through its own registry function (its kind, patch, tubelet, decoder layout
and defaults kept): the `*_tiny_*` ones at their real width, heads and decoder with 2 blocks
(12 would only make `make test` slower on 2 cores), every other one with its width / depth
shrunk. All on a 32×32 input (4 frames for video, 1 for image models).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import pytest
import torch

from videohpm.masking import make_mask_generator
from videohpm.methods import EmaTeacher, Recipe, available_recipes, build_recipe, recipe_class
from videohpm.models import create_model, list_models
from videohpm.models.autoencoder import MaskedAutoencoder

B = 2  # even (mixup pairs) and ≥ 2 (ccMIM's BatchNorm in training)
NUM_CLASSES = 4
SHRUNK = dict(embed_dim=32, depth=1, num_heads=2)
SHRUNK_DECODER = dict(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)

#: every registered recipe: which model kinds it takes, its model kwargs, its mask and recipe options.
#: Options are chosen so that every recipe with an EMA teacher keeps one here.
RECIPES: Dict[str, Dict[str, Any]] = {
    "mae": dict(kinds=("pretrain",), model={}, mask=("tube", dict(mask_ratio=0.75)),
                options=dict(target="ema_features"), target_dim=True),
    "hpm": dict(kinds=("pretrain",), model=dict(loss_predictor=True),
                mask=("hpm", dict(mask_ratio=0.75, alpha_0=0.5, alpha_T=0.5)), options={}),
    "ccmim": dict(kinds=("pretrain",), model=dict(cls_token=True), mask=("importance", dict(mask_ratio=0.75)),
                  options={}),
    "adamae": dict(kinds=("pretrain",), model={}, mask=("adamae", dict(mask_ratio=0.75)),
                   options=dict(target="ema_features"), target_dim=True),
    "classification": dict(kinds=("classifier",), model=dict(num_classes=NUM_CLASSES), mask=None,
                           options=dict(model_ema=True, model_ema_decay=0.9)),
    "linear_probe": dict(kinds=("pretrain", "classifier"), model={}, mask=None,
                         options=dict(num_classes=NUM_CLASSES)),
}

#: Parameters that legitimately get no gradient, by recipe: (name, reason).
NO_GRAD: Dict[str, Tuple[Tuple[str, str], ...]] = {
    # linear probing trains only BN (no affine: no parameters) + head; the encoder is frozen
    # (requires_grad=False), so nothing trainable is left without a gradient.
    "linear_probe": (),
}


def _kind(name: str) -> str:
    return "pretrain" if name.startswith("pretrain_") else "classifier"


def _is_image(name: str) -> bool:
    return name.startswith("pretrain_mae_")


def _model_kwargs(name: str) -> Dict[str, Any]:
    kw: Dict[str, Any] = dict(img_size=32)
    if not _is_image(name):
        kw["num_frames"] = 4
    if "_tiny_" in name:
        kw["depth"] = 2
    else:
        kw.update(SHRUNK)
        if _kind(name) == "pretrain":
            kw.update(SHRUNK_DECODER)
    return kw


CASES = [(r, m) for r in sorted(RECIPES) for m in list_models() if _kind(m) in RECIPES[r]["kinds"]]


def test_every_registered_recipe_and_model_kind_is_covered():
    assert sorted(RECIPES) == available_recipes()
    assert {_kind(m) for m in list_models()} == {"pretrain", "classifier"}
    assert {m for _, m in CASES} == set(list_models())


def _build(recipe_name: str, model_name: str) -> Tuple[Recipe, Dict[str, torch.Tensor]]:
    spec = RECIPES[recipe_name]
    kw = {**_model_kwargs(model_name), **spec["model"]}
    if spec.get("target_dim"):
        kw["target_dim"] = kw.get("embed_dim", 192)
    torch.manual_seed(0)
    model = create_model(model_name, **kw)
    mask = None if spec["mask"] is None else make_mask_generator(spec["mask"][0], **spec["mask"][1])
    recipe = build_recipe(recipe_name, model, mask, **spec["options"])
    frames = 1 if _is_image(model_name) else 4
    g = torch.Generator().manual_seed(1)
    batch = {"video": torch.randn(B, 3, frames, 32, 32, generator=g),
             "label": torch.tensor([0, NUM_CLASSES - 1])}
    return recipe, batch


@pytest.mark.parametrize("recipe_name,model_name", CASES)
def test_recipe_step_gives_a_finite_loss_and_a_gradient_on_every_trainable_parameter(recipe_name, model_name):
    recipe, batch = _build(recipe_name, model_name)
    assert isinstance(recipe, Recipe)
    assert recipe.train_split in ("pretrain", "train")
    recipe.train()
    out = recipe(batch, progress=0.5)
    loss = out["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    for k, v in out.items():  # the logged parts: detached scalars
        if k != "loss":
            assert isinstance(v, torch.Tensor) and v.numel() == 1 and not v.requires_grad, k
    loss.backward()
    allowed = {n for n, _ in NO_GRAD.get(recipe_name, ())}
    trainable = [(n, p) for n, p in recipe.named_parameters() if p.requires_grad]
    assert trainable, "a recipe must train something"
    missing = sorted(n for n, p in trainable if p.grad is None and n not in allowed)
    assert missing == [], f"{recipe_name} × {model_name}: no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable if p.grad is not None)
    if recipe.eval_split is not None:  # supervised: validation logits from predict
        recipe.eval()
        logits = recipe.predict(batch["video"])
        assert logits and all(v.shape == (B, recipe.num_classes) for v in logits.values())
        assert recipe.num_classes == NUM_CLASSES


@pytest.mark.parametrize("recipe_name", sorted(RECIPES))
def test_teacher_is_unregistered_fp32_and_its_state_dict_round_trips(recipe_name):
    model_name = next(m for r, m in CASES if r == recipe_name and "_tiny_" not in m)
    recipe, batch = _build(recipe_name, model_name)
    if recipe.ema is None:  # linear probe, ccMIM: no teacher, nothing to checkpoint
        assert recipe.teacher is None and recipe.teacher_state_dict() is None
        recipe.load_teacher_state_dict(None)
        recipe.on_step_end()  # a no-op
        return
    teacher = recipe.teacher
    assert isinstance(recipe.ema, EmaTeacher) and teacher is recipe.ema.module
    assert all(m is not teacher for m in recipe.modules())  # not a submodule: DeepSpeed never sees it
    student_ids = {id(p) for p in recipe.parameters()}
    assert not any(id(p) in student_ids for p in teacher.parameters())
    assert not any(k.startswith(("ema", "teacher")) for k in recipe.state_dict())
    recipe.bfloat16()  # what DeepSpeed's bf16 does to the registered tree
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in teacher.parameters())
    assert teacher.state_dict().keys() == recipe.model.state_dict().keys()

    saved = {k: v.clone() for k, v in recipe.teacher_state_dict().items()}
    with torch.no_grad():  # a student step
        for p in recipe.model.parameters():
            p.add_(1.0)
    recipe.on_step_end()
    after = recipe.teacher_state_dict()
    assert all(v.dtype == saved[k].dtype for k, v in after.items() if v.is_floating_point())
    assert any(not torch.equal(after[k], saved[k]) for k in saved)  # the EMA moved
    recipe.load_teacher_state_dict(None)  # a checkpoint without a teacher changes nothing
    assert any(not torch.equal(recipe.teacher_state_dict()[k], saved[k]) for k in saved)
    recipe.load_teacher_state_dict(saved)
    for k, v in recipe.teacher_state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)


def test_ema_teacher_is_eq1_in_fp32_from_a_bf16_student_and_copies_buffers():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EmaTeacher(student)
    assert not ema.module.training and all(not p.requires_grad for p in ema.parameters())
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    student.bfloat16()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.5)
        student[1].running_mean.fill_(2.0)
    ema.update(student, momentum=0.9)
    sd = ema.state_dict()
    for k, p in student.named_parameters():
        assert sd[k].dtype == torch.float32
        torch.testing.assert_close(sd[k], 0.9 * before[k] + 0.1 * p.detach().float())
    torch.testing.assert_close(sd["1.running_mean"], torch.full((4,), 2.0))
    ema.load_state_dict(before)
    torch.testing.assert_close(ema.state_dict()["0.weight"], before["0.weight"])


def test_base_recipe_defaults_are_a_teacherless_pretraining_recipe():
    class Plain(Recipe):
        def __init__(self) -> None:
            super().__init__()
            self.model = MaskedAutoencoder(img_size=32, patch_size=16, num_frames=2, tubelet_size=2, embed_dim=16,
                                           depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
                                           decoder_num_heads=2)

    r = Plain()
    assert (r.train_split, r.eval_split, r.num_classes, r.ema, r.teacher) == ("pretrain", None, None, None, None)
    assert r.teacher_state_dict() is None
    r.on_step_end()
    with pytest.raises(NotImplementedError, match="Plain.forward"):
        r({"video": torch.zeros(1, 3, 2, 32, 32)})
    with pytest.raises(NotImplementedError, match="no predict"):
        r.predict(torch.zeros(1, 3, 2, 32, 32))


def test_recipe_class_says_what_lives_outside_the_model():
    """What the tasks read instead of method names: which recipes are classifiers, which keep a
    classifier head or a token sampler outside `model` (read from the DeepSpeed checkpoints)."""
    said = {name: (recipe_class(name).classifier, recipe_class(name).head_outside_model,
                   recipe_class(name).learned_sampler, recipe_class(name).weights_outside_model())
            for name in available_recipes()}
    assert said == {"mae": (False, False, False, False), "hpm": (False, False, False, False),
                    "ccmim": (False, False, False, False), "adamae": (False, False, True, True),
                    "classification": (True, False, False, False), "linear_probe": (True, True, False, True)}
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipe_class("nope")

