import pytest
import torch

from videohpm.models import MaskedAutoencoder, pixel_target

from .helpers import TINY_IMAGE, TINY_VIDEO, clip, random_mask


def make(**kw) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(**{**TINY_VIDEO, **kw})


def test_video_shapes_and_exact_visible_count():
    model = make(loss_predictor=True)
    x = clip()
    assert model.grid(x) == (2, 4, 4)
    n = model.num_patches
    assert n == 32
    for n_masked in (0, 24, 31):
        mask = random_mask(2, n, n_masked, seed=n_masked)
        latent = model.encode(x, mask)
        assert latent.shape == (2, n - n_masked, 32)
        assert model.decode(latent, mask, head="pixel").shape == (2, n_masked, 2 * 8 * 8 * 3)
        assert model.decode(latent, mask, head="loss").shape == (2, n_masked, 1)
    latent_all = model.encode(x)  # HPM teacher: all tokens, no mask
    assert latent_all.shape == (2, n, 32)
    assert model.decode(latent_all, None, head="loss").shape == (2, n, 1)
    assert model.decode(latent_all, None, head="pixel").shape == (2, n, 384)
    assert model.target(x).shape == (2, n, 384)


def test_image_mode_shapes():
    torch.manual_seed(0)
    model = MaskedAutoencoder(**TINY_IMAGE)
    x = clip(t=1)
    assert model.grid(x) == (1, 4, 4)
    mask = random_mask(2, 16, 12)
    out = model(x, mask)
    assert out["pred"].shape == (2, 12, 8 * 8 * 3)
    assert model.target(x).shape == (2, 16, 192)


def test_visible_tokens_are_the_unmasked_ones():
    # Encoding with a mask must equal running the blocks on exactly the unmasked embedded tokens.
    model = make()
    x = clip()
    mask = random_mask(2, 32, 20)
    enc = model.encoder
    tokens = enc.patch_embed(x) + enc.pos_embed
    ref = tokens[~mask].view(2, -1, 32)
    for blk in enc.blocks:
        ref = blk(ref)
    torch.testing.assert_close(model.encode(x, mask), enc.norm(ref), rtol=1e-5, atol=1e-5)


def test_decoder_output_is_in_ascending_masked_order():
    # Reference: lay the decoder input out in natural grid order, decode, then take x[mask].
    model = make()
    x = clip()
    mask = random_mask(2, 32, 24, seed=4)
    latent = model.encode(x, mask)
    dec = model.decoder
    emb = dec.embed(latent)
    full = dec.mask_token.expand(2, 32, -1).clone()
    full[~mask] = emb.reshape(-1, emb.shape[-1])
    full = full + dec.pos_embed
    for blk in dec.blocks:
        full = blk(full)
    ref = dec.head(dec.norm(full))[mask].view(2, 24, -1)
    torch.testing.assert_close(model.decode(latent, mask), ref, rtol=1e-5, atol=1e-5)


def test_every_parameter_gets_a_gradient():
    model = make(loss_predictor=True)
    x = clip()
    mask = random_mask(2, 32, 24)
    out = model(x, mask)
    target = model.target(x)[mask].view(2, 24, -1)
    loss = (out["pred"] - target).square().mean() + out["pred_loss"].square().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing
    assert any(n.startswith("loss_predictor.") for n, _ in model.named_parameters())


def test_target_modes_and_unnormalization():
    x = clip()
    raw = make(norm_pix_loss=False).target(x)
    norm = make(norm_pix_loss=True).target(x)
    torch.testing.assert_close(raw, pixel_target(x, 2, 8, normalize=False))
    torch.testing.assert_close(norm, pixel_target(x, 2, 8, normalize=True))
    # raw target is in pixel space: un-normalized with the ImageNet statistics
    torch.testing.assert_close(raw[0, 0, :3], x[0, :, 0, 0, 0] * torch.tensor([0.229, 0.224, 0.225])
                               + torch.tensor([0.485, 0.456, 0.406]))
    ident = make(norm_pix_loss=False, input_mean=None, input_std=None).target(x)
    torch.testing.assert_close(ident, pixel_target(x, 2, 8, normalize=False, mean=None, std=None))


def test_other_input_size_uses_interpolated_tables():
    model = make(loss_predictor=True)
    x = clip(t=8, hw=48)  # grid 4×6×6 = 144 tokens instead of 32
    grid = model.grid(x)
    assert grid == (4, 6, 6)
    mask = random_mask(2, 144, 100)
    latent = model.encode(x, mask)
    assert model.decode(latent, mask, grid=grid).shape == (2, 100, 384)
    with pytest.raises(ValueError, match="grid="):
        model.decode(latent, mask)


def test_bad_calls_raise():
    model = make()
    x = clip()
    latent = model.encode(x)
    with pytest.raises(ValueError, match="loss_predictor=True"):
        model.decode(latent, None, head="loss")
    with pytest.raises(ValueError, match="unknown head"):
        model.decode(latent, None, head="pixels")
    with pytest.raises(ValueError, match="mask shape"):
        model.encode(x, random_mask(2, 16, 8))
    with pytest.raises(ValueError, match="same number"):
        m = random_mask(2, 32, 8)
        m[0] = True
        model.encode(x, m)


def test_gradient_checkpointing_same_loss_and_grads():
    x = clip()
    mask = random_mask(2, 32, 24)
    results = []
    for ckpt in (False, True):
        model = make(loss_predictor=True, use_checkpoint=ckpt)
        out = model(x, mask)
        loss = out["pred"].square().mean() + out["pred_loss"].square().mean()
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for n, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][n], msg=n)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    # The compiled transformer stacks give the eager results (values and gradients); the teacher
    # copy reuses the student's graphs (modules are graph inputs, not constants).
    import copy

    x = clip()
    mask = random_mask(2, 32, 24)
    results = []
    for compiled in (False, True):
        model = make(loss_predictor=True, torch_compile=compiled)
        out = model(x, mask)
        loss = out["pred"].square().mean() + out["pred_loss"].square().mean()
        loss.backward()
        teacher = copy.deepcopy(model).eval()
        with torch.inference_mode():
            scores = teacher.decode(teacher.encode(x), None, head="loss")
        results.append((loss.detach(), scores, {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)
    for n, g in results[0][2].items():
        torch.testing.assert_close(g, results[1][2][n], rtol=1e-4, atol=1e-5, msg=n)
