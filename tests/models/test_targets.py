"""Feature targets (HPM journal Table 1): normalized-feature loss, grid resampling, frozen teachers from local files."""
import pytest
import timm
import torch

from videohpm.models import create_model
from videohpm.models.targets import load_feature_teacher, normalized_feature_loss, resample_tokens

TIMM_KW = dict(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2)
OUR_KW = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=1,
              num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def test_normalized_feature_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(2, 3, 5, generator=g), 4 * torch.randn(2, 3, 5, generator=g)
    got = normalized_feature_loss(p, t)
    for b in range(2):
        for i in range(3):
            pn, tn = p[b, i] / p[b, i].norm(), t[b, i] / t[b, i].norm()
            assert got[b, i].item() == pytest.approx(sum((pn - tn) ** 2).item() / 5, rel=1e-5)
            cos = torch.dot(p[b, i], t[b, i]) / (p[b, i].norm() * t[b, i].norm())
            assert got[b, i].item() == pytest.approx((2 - 2 * cos.item()) / 5, rel=1e-4)
    with pytest.raises(ValueError, match=r"\[B, K, D\]"):
        normalized_feature_loss(p, t[:, :2])


def test_resample_tokens_area_average_and_interpolation():
    x = torch.randn(2, 4 * 4 * 4, 3)  # grid (4, 4, 4)
    assert resample_tokens(x, (4, 4, 4), (4, 4, 4)) is x
    y = resample_tokens(x, (4, 4, 4), (2, 2, 2))
    grid = x.view(2, 4, 4, 4, 3)
    for t in range(2):
        for h in range(2):
            for w in range(2):
                ref = grid[:, 2 * t:2 * t + 2, 2 * h:2 * h + 2, 2 * w:2 * w + 2].mean(dim=(1, 2, 3))
                torch.testing.assert_close(y[:, t * 4 + h * 2 + w], ref)
    z = resample_tokens(x, (4, 4, 4), (4, 3, 3))  # 4 -> 3: not whole cells -> trilinear
    assert z.shape == (2, 36, 3)
    with pytest.raises(ValueError, match="source grid"):
        resample_tokens(x, (4, 4, 3), (2, 2, 2))


def test_timm_image_teacher_from_a_saved_state_dict(tmp_path):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TIMM_KW).eval()
    path = tmp_path / "dino_like.pth"
    torch.save({"model": vit.state_dict()}, path)
    teacher = load_feature_teacher(path, "timm:vit_tiny_patch16_224", TIMM_KW)
    assert teacher.dim == 24 and teacher.kind == "image"
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 4, 32, 32)  # student ImageNet-normalized
    with torch.inference_mode():
        got = teacher(x, (2, 4, 4))  # tubelet 2, patch 8: the teacher's own 4×4 maps per frame
    # by hand: back to pixels, the teacher's (0.5, 0.5) normalization, per frame, tubelet mean
    mean_s = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std_s = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    xt = ((x * std_s + mean_s) - 0.5) / 0.5
    with torch.no_grad():
        per_frame = torch.stack([vit.forward_features(xt[:, :, f])[:, 1:] for f in range(4)], 1)  # [B,4,16,D]
    ref = per_frame.view(2, 2, 2, 16, 24).mean(2).reshape(2, 32, 24)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    with torch.inference_mode():  # another student grid (patch 16): 2×2 spatial averaging
        assert teacher(x, (2, 2, 2)).shape == (2, 8, 24)


def test_our_checkpoint_as_video_teacher(tmp_path):
    torch.manual_seed(0)
    net = create_model("pretrain_videomae_tiny_patch16_224", **OUR_KW).eval()
    path = tmp_path / "ours.pth"
    torch.save({"model": net.state_dict()}, path)
    teacher = load_feature_teacher(path, "pretrain_videomae_tiny_patch16_224", OUR_KW)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.inference_mode():
        got = teacher(x, (2, 4, 4))
        ref = net.encode(x)
    assert teacher.kind == "video" and not teacher.renormalize
    torch.testing.assert_close(got, ref)
    with pytest.raises(ValueError, match="cannot tokenize"):
        with torch.inference_mode():
            teacher(torch.randn(1, 3, 1, 32, 32), (1, 4, 4))  # image mode vs a tubelet-2 teacher


def test_missing_file_and_wrong_architecture_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_feature_teacher(tmp_path / "nope.pth", "timm:vit_tiny_patch16_224")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TIMM_KW)
    torch.save(vit.state_dict(), tmp_path / "v.pth")
    with pytest.raises(ValueError, match="does not fit"):
        load_feature_teacher(tmp_path / "v.pth", "timm:vit_tiny_patch16_224", dict(TIMM_KW, depth=2))
    with pytest.raises(ValueError, match="timm:vit_tiny"):  # the name is also ours: a hint
        load_feature_teacher(tmp_path / "v.pth", "vit_tiny_patch16_224", TIMM_KW)
    with pytest.raises(ValueError, match="neither"):
        load_feature_teacher(tmp_path / "v.pth", "no_such_model")
