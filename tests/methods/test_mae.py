"""Plain MAE/VideoMAE recipe: L = L_rec (Eq. 3) on the masked patches of a fixed strategy."""
import pytest
import torch

from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe


def test_mae_loss_is_masked_mse_of_the_target(tiny_model, clip):
    model = tiny_model()
    recipe = build_recipe("mae", model, make_mask_generator("tube", mask_ratio=0.75))
    g = torch.Generator().manual_seed(0)
    captured = {}
    gen = recipe.mask_generator

    def spy(grid, **kw):
        captured["mask"] = gen(grid, generator=g, **{k: v for k, v in kw.items() if k != "generator"})
        return captured["mask"]

    recipe.mask_generator = spy
    out = recipe({"video": clip}, progress=0.0)
    mask = captured["mask"]
    assert mask.sum(1).eq(24).all()  # 2 slices × int(0.75·16)
    # brute force: per sample, per masked token, mean squared error of the patch vector
    with torch.no_grad():
        pred = model.decode(model.encode(clip, mask), mask, head="pixel", grid=model.grid(clip))
        tgt = model.target(clip)
        errs = []
        for b in range(clip.shape[0]):
            k = 0
            for i in range(mask.shape[1]):
                if mask[b, i]:
                    errs.append(((pred[b, k] - tgt[b, i]) ** 2).mean())
                    k += 1
    torch.testing.assert_close(out["loss"].detach(), torch.stack(errs).mean())
    out["loss"].backward()
    assert all(p.grad is not None for p in recipe.parameters())
    recipe.on_step_end()  # no teacher: a no-op


def test_mto_option_adds_decoder_token_losses_through_build_recipe(tiny_model, clip):
    import pytest

    recipe = build_recipe("mae", tiny_model(), make_mask_generator("tube", mask_ratio=0.75),
                          mto={"weight": 0.5})
    out = recipe({"video": clip}, progress=0.0)
    assert {"loss_mto", "mto_spa", "mto_e", "mto_r"} <= set(out)
    torch.testing.assert_close(out["loss"].detach(), out["loss_rec"] + 0.5 * out["loss_mto"])
    with pytest.raises(TypeError, match="method.mto"):
        build_recipe("mae", tiny_model(), make_mask_generator("tube", mask_ratio=0.75), mto={"wieght": 1})


def test_pixel_target_keeps_no_teacher_and_step_end_is_a_noop(tiny_model, clip):
    recipe = build_recipe("mae", tiny_model(), make_mask_generator("tube", mask_ratio=0.75))
    assert recipe.teacher is None and recipe.feature_teacher is None and recipe.decoder_mask_generator is None
    before = {k: v.clone() for k, v in recipe.state_dict().items()}
    recipe.on_step_end()
    assert all(torch.equal(before[k], v) for k, v in recipe.state_dict().items())
    assert recipe.teacher_state_dict() is None
    with pytest.raises(TypeError, match="decoder_mask_ratoi"):
        build_recipe("mae", tiny_model(), make_mask_generator("tube", mask_ratio=0.75), decoder_mask_ratoi=0.5)
