"""VideoMAE V2 decoder masking in the MAE and HPM recipes: which tokens are decoded, where the loss is."""
import pytest
import torch

from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe


class DecodeSpy:
    """Wraps model.decode, recording (mask, head, decode_ids, output) of every call."""

    def __init__(self, model):
        self.calls, self._decode = [], model.decode
        model.decode = self

    def __call__(self, latent, mask=None, head="pixel", grid=None, decode_ids=None):
        out = self._decode(latent, mask, head, grid=grid, decode_ids=decode_ids)
        self.calls.append(dict(mask=mask, head=head, ids=decode_ids, out=out))
        return out


def test_mae_loss_is_on_encoder_masked_decoder_visible_tokens_only(tiny_model, clip):
    model = tiny_model()
    recipe = build_recipe("mae", model, make_mask_generator("tube", mask_ratio=0.75), decoder_mask=True)
    spy = DecodeSpy(model)
    seen = []
    model.decoder.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    out = recipe({"video": clip})
    (call,) = spy.calls
    mask, ids, pred = call["mask"], call["ids"], call["out"]
    # grid 2×4×4: 24 of 32 tokens masked; K = int(24·0.5) = 12 decoded, 8 visible latents
    assert ids.shape == (2, 12) and pred.shape == (2, 12, 2 * 8 * 8 * 3)
    assert seen == [8 + 12]  # the decoder never sees the other 12 mask tokens
    assert mask.gather(1, ids).all()
    target = model.target(clip)
    loss = 0.0
    for b in range(2):  # brute force Eq. 3 over the decoded tokens
        for j, n in enumerate(ids[b].tolist()):
            loss += ((pred[b, j] - target[b, n]) ** 2).mean()
    torch.testing.assert_close(out["loss"], loss / 24)
    out["loss"].backward()
    assert model.decoder.mask_token.grad.abs().sum() > 0


def test_without_decoder_mask_the_decoder_sees_all_masked_tokens(tiny_model, clip):
    model = tiny_model()
    recipe = build_recipe("mae", model, make_mask_generator("tube", mask_ratio=0.75))
    spy = DecodeSpy(model)
    recipe({"video": clip})
    assert spy.calls[0]["ids"] is None and spy.calls[0]["out"].shape[1] == 24


@pytest.mark.parametrize("loss_pred", ["relative", "absolute"])
def test_hpm_lpred_on_the_same_decoded_tokens(tiny_model, clip, loss_pred):
    model = tiny_model(loss_predictor=True)
    gen = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.5, alpha_T=0.5)
    recipe = build_recipe("hpm", model, gen, loss_pred=loss_pred, decoder_mask=True, decoder_mask_ratio=0.5)
    spy = DecodeSpy(model)
    out = recipe({"video": clip}, progress=0.5)
    pixel, loss = spy.calls
    assert pixel["head"] == "pixel" and loss["head"] == "loss"
    assert loss["ids"] is pixel["ids"] and loss["out"].shape == (2, 12, 1)
    # the loss predictor's ground truth is the per-token loss of exactly those tokens
    target = model.target(clip)
    per = torch.stack([((pixel["out"][b] - target[b, pixel["ids"][b]]) ** 2).mean(-1) for b in range(2)])
    torch.testing.assert_close(out["loss_rec"], per.mean())
    from videohpm.objectives.loss_prediction import absolute_loss_prediction, relative_loss_prediction
    fn = relative_loss_prediction if loss_pred == "relative" else absolute_loss_prediction
    torch.testing.assert_close(out["loss_pred"], fn(loss["out"][..., 0], per).detach())
    out["loss"].backward()
    assert model.loss_predictor.mask_token.grad.abs().sum() > 0


def test_decoder_mask_image_mode_and_bad_ratio(tiny_model):
    model = tiny_model(num_frames=1, tubelet_size=1)
    recipe = build_recipe("mae", model, make_mask_generator("random", mask_ratio=0.75),
                          decoder_mask=True, decoder_mask_ratio=0.25)
    spy = DecodeSpy(model)
    out = recipe({"video": torch.randn(2, 3, 1, 32, 32)})
    assert spy.calls[0]["out"].shape[1] == 9  # int(12·0.75)
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="mask_ratio"):
        build_recipe("mae", tiny_model(), make_mask_generator("tube", mask_ratio=0.75),
                     decoder_mask=True, decoder_mask_ratio=0.1)
