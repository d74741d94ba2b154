import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videohpm.models import PatchEmbed3D, VisionTransformerEncoder, interpolate_pos_embed, sincos_table_1d

from .helpers import clip


def test_sincos_table_is_videomae_table():
    # Brute force from VideoMAE's formula: angle = pos / 10000^(2*(j//2)/d); sin even, cos odd.
    n, d = 50, 24
    ref = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    ref[:, 0::2] = np.sin(ref[:, 0::2])
    ref[:, 1::2] = np.cos(ref[:, 1::2])
    table = sincos_table_1d(n, d)
    assert table.shape == (1, n, d)
    assert torch.equal(table[0], torch.tensor(ref, dtype=torch.float32))


def test_interpolate_identity_returns_same_tensor():
    pos = torch.randn(1, 2 * 3 * 3, 8)
    assert interpolate_pos_embed(pos, (2, 3, 3), (2, 3, 3)) is pos


def test_interpolate_time_known_values():
    # Two time slices -> four (linear, align_corners=False): source coordinates are
    # -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    v0, v1 = torch.randn(2, 2, 5), torch.randn(2, 2, 5)  # [H, W, D]
    pos = torch.stack([v0, v1]).reshape(1, 2 * 2 * 2, 5)
    out = interpolate_pos_embed(pos, (2, 2, 2), (4, 2, 2)).reshape(4, 2, 2, 5)
    for got, expect in zip(out, (v0, 0.75 * v0 + 0.25 * v1, 0.25 * v0 + 0.75 * v1, v1)):
        torch.testing.assert_close(got, expect)


def test_interpolate_space_is_bicubic_per_frame_and_keeps_constants():
    pos = torch.randn(1, 2 * 3 * 3, 4)
    out = interpolate_pos_embed(pos, (2, 3, 3), (2, 5, 5))
    assert out.shape == (1, 2 * 5 * 5, 4)
    frames = pos.reshape(2, 3, 3, 4).permute(0, 3, 1, 2)
    expect = F.interpolate(frames, size=(5, 5), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out.reshape(2, 5, 5, 4).permute(0, 3, 1, 2), expect)
    const = torch.ones(1, 18, 4) * 3.0
    torch.testing.assert_close(interpolate_pos_embed(const, (2, 3, 3), (3, 4, 6)), torch.full((1, 72, 4), 3.0))
    with pytest.raises(ValueError, match="positions"):
        interpolate_pos_embed(pos, (2, 2, 2), (2, 3, 3))


def test_patch_embed_linear_path_equals_conv():
    torch.manual_seed(0)
    pe = PatchEmbed3D(patch_size=8, tubelet_size=2, in_chans=3, embed_dim=16)
    x = clip(b=2, t=4, hw=32)
    full = pe(x)
    assert full.shape == (2, 2 * 4 * 4, 16)
    torch.testing.assert_close(pe.forward_patches(pe.patches(x)), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        pe(torch.zeros(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        pe(torch.zeros(1, 1, 4, 32, 32))


def test_gradient_checkpointing_same_output_and_grads():
    torch.manual_seed(0)
    enc = VisionTransformerEncoder(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32,
                                   depth=2, num_heads=2, drop_path_rate=0.0)
    x = clip()
    grads = []
    outs = []
    for use_ckpt in (False, True):
        enc.use_checkpoint = use_ckpt
        enc.zero_grad(set_to_none=True)
        out = enc(x)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1])
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], msg=n)


def test_encoder_interpolates_for_other_input_sizes():
    enc = VisionTransformerEncoder(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32,
                                   depth=1, num_heads=2)
    assert enc(clip(t=8, hw=48)).shape == (2, 4 * 6 * 6, 32)
