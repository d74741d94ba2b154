"""MTO add-on (MTO paper Alg. 1) on real recipes via decoder hooks."""
import pytest
import torch

from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe
from videohpm.methods.mto import enable_mto, record_decoder_tokens, token_mask_for
from videohpm.objectives.mto import mto_losses


def mae(model, ratio=0.75):
    return build_recipe("mae", model, make_mask_generator("tube", mask_ratio=ratio))


def test_mto_term_matches_direct_computation(tiny_model, clip):
    model = tiny_model(decoder_depth=2)
    recipe = mae(model)
    handle = enable_mto(recipe, weight=0.5, w_spa=0.1, scale=0.25)
    torch.manual_seed(0)
    out = recipe({"video": clip}, progress=0.0)
    assert {"loss_mto", "mto_spa", "mto_e", "mto_r", "mto_h0", "mto_hL"} <= set(out)
    torch.testing.assert_close(out["loss"].detach(), out["loss_rec"] + 0.5 * out["loss_mto"])

    # same mask (same RNG draws), decoder tokens recorded by hand
    torch.manual_seed(0)
    grid = model.grid(clip)
    mask = recipe.mask_generator((clip.shape[0], *grid), device=clip.device)
    latent = model.encode(clip, mask)
    with record_decoder_tokens(model.decoder) as tap:
        model.decode(latent, mask, head="pixel", grid=grid)
    (call,) = tap.masked_calls()
    assert len(call["layers"]) == 3  # decoder input + 2 blocks
    N, n_masked = mask.shape[1], int(mask[0].sum())
    assert call["n_vis"] == N - n_masked
    assert token_mask_for(call).sum(1).tolist() == [n_masked] * clip.shape[0]
    ref = mto_losses(call["layers"], token_mask_for(call), w_spa=0.1, scale=0.25)
    torch.testing.assert_close(out["loss_mto"], ref["loss"].detach())
    torch.testing.assert_close(out["mto_h0"], ref["heterogeneity"][0])

    handle.remove()
    out = recipe({"video": clip}, progress=0.0)
    assert "loss_mto" not in out


def test_mto_gradient_reaches_mask_token_and_changes_it(tiny_model, clip):
    grads = []
    for on in (False, True):
        recipe = mae(tiny_model())
        if on:
            enable_mto(recipe, weight=10.0, scale=0.25)
        torch.manual_seed(1)
        recipe({"video": clip}, progress=0.0)["loss"].backward()
        grads.append(recipe.model.decoder.mask_token.grad.clone())
    assert grads[1].abs().sum() > 0
    assert not torch.allclose(grads[0], grads[1])


def test_mto_on_hpm_with_both_decoders_and_checkpointing(tiny_model, clip):
    values = []
    for ckpt in (False, True):
        model = tiny_model(loss_predictor=True, use_checkpoint=ckpt)
        recipe = build_recipe("hpm", model, make_mask_generator("hpm", mask_ratio=0.75))
        enable_mto(recipe, decoders=("decoder", "loss_predictor"), scale=0.25)
        torch.manual_seed(2)
        out = recipe({"video": clip}, progress=0.5)
        out["loss"].backward()
        assert model.loss_predictor.mask_token.grad.abs().sum() > 0
        values.append(out["loss_mto"])
    torch.testing.assert_close(values[0], values[1])  # recomputation records nothing extra


def test_mto_errors(tiny_model):
    recipe = mae(tiny_model())
    with pytest.raises(ValueError, match="'loss_predictor'"):
        enable_mto(recipe, decoders=("loss_predictor",))  # built without d_ψ
    enable_mto(recipe)
    with pytest.raises(ValueError, match="already enabled"):
        enable_mto(recipe)


def test_mto_hpm_trains_a_few_steps_on_the_demo_videos(tiny_model, tmp_path):
    """`mto: true` on the HPM recipe: real demo clips, AdamW steps, EMA, finite losses that move."""
    from torch.utils.data import DataLoader

    from videohpm.data import build_collate, build_dataset, make_demo_data
    from videohpm.masking import make_mask_generator
    from videohpm.methods import build_recipe

    d = make_demo_data(tmp_path, seed=0, tiny=True, formats=("ssv2",), images=False)
    ds = build_dataset({"dataset": "ssv2", "train": d.lists["ssv2"]["train"], "data_root": d.video_dirs["ssv2"],
                        "num_frames": 4, "sampling_rate": 2, "input_size": 32}, "pretrain")
    loader = DataLoader(ds, batch_size=2, shuffle=False, collate_fn=build_collate(None, "pretrain"))
    recipe = build_recipe("hpm", tiny_model(loss_predictor=True),
                          make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.5, alpha_T=0.5),
                          mto={"weight": 0.1})
    opt = torch.optim.AdamW(recipe.parameters(), lr=1e-3)
    before = recipe.model.decoder.mask_token.detach().clone()
    losses = []
    for step, batch in zip(range(3), loader):
        out = recipe(batch, progress=step / 3)
        assert {"loss_rec", "loss_pred", "loss_mto"} <= set(out)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        recipe.on_step_end()
        losses.append(out["loss"].item())
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, recipe.model.decoder.mask_token)
