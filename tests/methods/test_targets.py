"""Feature targets in the MAE and HPM recipes (HPM journal Table 1): EMA features, frozen teachers."""
import pytest
import timm
import torch

from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe
from videohpm.models.targets import normalized_feature_loss

TIMM_KW = dict(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2)


def hpm(model, **kw):
    gen = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=kw.pop("alpha_0", 0.0), alpha_T=kw.pop("alpha_T", 0.5))
    return build_recipe("hpm", model, gen, **kw)


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_hpm_ema_features_reuse_the_single_teacher_forward(tiny_model, clip):
    model = tiny_model(loss_predictor=True, target_dim=32)  # encoder width 32
    recipe = hpm(model, target="ema_features")
    enc, lp = count_calls(recipe.teacher.encoder), count_calls(recipe.teacher.loss_predictor)
    out = recipe({"video": clip}, progress=0.0)  # α = 0: features needed, scores not
    assert (len(enc), len(lp)) == (1, 0)
    recipe({"video": clip}, progress=1.0)  # α > 0: one encoder pass serves scores and target
    assert (len(enc), len(lp)) == (2, 1)
    out["loss"].backward()
    assert model.decoder.head.weight.grad.abs().sum() > 0


def test_hpm_ema_feature_loss_equals_hand_computation(tiny_model, clip):
    model = tiny_model(loss_predictor=True, target_dim=32)
    recipe = hpm(model, target="ema_features", alpha_0=1.0, alpha_T=1.0)
    seen = {}
    decode = model.decode

    def spy(latent, mask=None, head="pixel", grid=None, decode_ids=None):
        o = decode(latent, mask, head, grid=grid, decode_ids=decode_ids)
        seen.setdefault(head, (mask, o))
        return o

    model.decode = spy
    out = recipe({"video": clip}, progress=1.0)
    mask, pred = seen["pixel"]
    with torch.no_grad():
        feats = recipe.teacher.encode(clip)  # [B, N, 32]
    per = torch.stack([normalized_feature_loss(pred[b:b + 1], feats[b:b + 1, mask[b]])[0] for b in range(2)])
    torch.testing.assert_close(out["loss_rec"], per.mean())
    assert pred.shape == (2, 24, 32)


def test_mae_ema_features_keep_an_ema_teacher(tiny_model, clip):
    model = tiny_model(target_dim=32)
    recipe = build_recipe("mae", model, make_mask_generator("tube", mask_ratio=0.75),
                          target="ema_features", momentum=0.5)
    out = recipe({"video": clip})
    out["loss"].backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in recipe.teacher.state_dict().items()}
    recipe.on_step_end()
    for k, v in recipe.teacher.state_dict().items():
        torch.testing.assert_close(v, 0.5 * before[k] + 0.5 * model.state_dict()[k])
    assert not any(k.startswith("teacher") for k in recipe.state_dict())
    assert recipe.teacher_state_dict() is not None


@pytest.fixture
def timm_file(tmp_path):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TIMM_KW)
    path = tmp_path / "clip_like.pth"
    torch.save(vit.state_dict(), path)
    return {"model": "timm:vit_tiny_patch16_224", "path": str(path), "kwargs": TIMM_KW}


@pytest.mark.parametrize("video", [True, False])
def test_teacher_features_with_mae_and_hpm(tiny_model, clip, timm_file, video):
    kw = {} if video else dict(num_frames=1, tubelet_size=1)
    x = clip if video else torch.randn(2, 3, 1, 32, 32)
    mae = build_recipe("mae", tiny_model(target_dim=24, **kw), make_mask_generator("random", mask_ratio=0.75),
                       target="teacher_features", feature_teacher=timm_file, decoder_mask=video)
    h = hpm(tiny_model(loss_predictor=True, target_dim=24, **kw), target="teacher_features",
            feature_teacher=timm_file, alpha_0=0.5, alpha_T=0.5)
    for recipe in (mae, h):
        out = recipe({"video": x}, progress=0.5)
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        assert recipe.model.decoder.head.weight.grad.abs().sum() > 0
        # frozen teacher: outside the module tree, never trained
        assert not any("feature_teacher" in k for k in recipe.state_dict())
        ids = {id(p) for p in recipe.parameters()}
        assert not any(id(p) in ids or p.requires_grad for p in recipe.feature_teacher.parameters())


def test_target_option_errors_name_the_key(tiny_model, timm_file, tmp_path):
    gen = make_mask_generator("tube", mask_ratio=0.75)
    with pytest.raises(ValueError, match="target_dim=24"):
        build_recipe("mae", tiny_model(), gen, target="teacher_features", feature_teacher=timm_file)
    with pytest.raises(ValueError, match="method.target"):
        build_recipe("mae", tiny_model(), gen, target="dino")
    with pytest.raises(ValueError, match="feature_teacher"):
        build_recipe("mae", tiny_model(target_dim=24), gen, target="teacher_features")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_recipe("mae", tiny_model(target_dim=24), gen, target="teacher_features",
                     feature_teacher=dict(timm_file, path=str(tmp_path / "missing.pth")))
    with pytest.raises(ValueError, match="target_dim=32"):
        hpm(tiny_model(loss_predictor=True), target="ema_features")
