"""The official HPM image model (HPM's ``models_mae_learn_loss.MaskedAutoencoderViT``, MAE's code plus
a loss predictor) against an independent reference written from its equations (tests/models/
reference.py): the recipe configs/pretrain/in1k_vit_b_hpm.yaml builds it, its checkpoints (the HPM
repository's layout and MAE's save_model layout) load whole, the same input and mask give the same
encoder output, reconstruction, predicted losses, targets and loss-prediction losses, fine-tuning
starts from its files with the default settings, and ``--format hpm`` writes them back."""
from __future__ import annotations

import argparse
import os

import pytest
import torch
from omegaconf import OmegaConf

from videohpm.methods.hpm import HPM
from videohpm.models import create_model, load_pretrained, write_export
from videohpm.models.loading import PretrainedMismatchError
from videohpm.models.formats import read_checkpoint_file
from videohpm.models.formats.mae_layout import ours_to_mae
from videohpm.objectives.loss_prediction import absolute_loss_prediction, relative_loss_prediction

from .helpers import clip
from .reference import hpm_absolute_loss, hpm_forward, hpm_relative_loss, hpm_target, mae_table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D, DEPTH, HEADS, DD, DDEPTH, DHEADS, P, GRID = 32, 2, 2, 16, 2, 2, 8, 4
N = GRID * GRID
SIZES = dict(img_size=32, patch_size=P, embed_dim=D, depth=DEPTH, num_heads=HEADS, decoder_embed_dim=DD,
             decoder_depth=DDEPTH, decoder_num_heads=DHEADS)


def _config_kwargs(name: str) -> dict:
    return dict(OmegaConf.to_container(OmegaConf.load(os.path.join(ROOT, "configs", name)).model.kwargs))


def official_inventory(loss_predictor: bool = True) -> dict:
    """Key → shape of ``MaskedAutoencoderViT(img_size=32, patch_size=8, embed_dim=32, depth=2,
    num_heads=2, decoder_embed_dim=16, decoder_depth=2, decoder_num_heads=2)``'s state dict, from
    its constructor: timm blocks with a fused qkv bias, [CLS] rows in both tables, the loss
    predictor's blocks / norm / p·p·3 head next to the pixel decoder's."""
    def blk(pre: str, w: int) -> dict:
        return {f"{pre}.norm1.weight": (w,), f"{pre}.norm1.bias": (w,), f"{pre}.attn.qkv.weight": (3 * w, w),
                f"{pre}.attn.qkv.bias": (3 * w,), f"{pre}.attn.proj.weight": (w, w), f"{pre}.attn.proj.bias": (w,),
                f"{pre}.norm2.weight": (w,), f"{pre}.norm2.bias": (w,), f"{pre}.mlp.fc1.weight": (4 * w, w),
                f"{pre}.mlp.fc1.bias": (4 * w,), f"{pre}.mlp.fc2.weight": (w, 4 * w), f"{pre}.mlp.fc2.bias": (w,)}

    inv = {"cls_token": (1, 1, D), "pos_embed": (1, 1 + N, D), "patch_embed.proj.weight": (D, 3, P, P),
           "patch_embed.proj.bias": (D,), "norm.weight": (D,), "norm.bias": (D,),
           "decoder_embed.weight": (DD, D), "decoder_embed.bias": (DD,), "mask_token": (1, 1, DD),
           "decoder_pos_embed": (1, 1 + N, DD), "decoder_norm.weight": (DD,), "decoder_norm.bias": (DD,),
           "decoder_pred.weight": (P * P * 3, DD), "decoder_pred.bias": (P * P * 3,)}
    for i in range(DEPTH):
        inv.update(blk(f"blocks.{i}", D))
    for i in range(DDEPTH):
        inv.update(blk(f"decoder_blocks.{i}", DD))
        if loss_predictor:
            inv.update(blk(f"decoder_blocks_losspred.{i}", DD))
    if loss_predictor:
        inv.update({"decoder_norm_losspred.weight": (DD,), "decoder_norm_losspred.bias": (DD,),
                    "decoder_pred_losspred.weight": (P * P * 3, DD), "decoder_pred_losspred.bias": (P * P * 3,)})
    return inv


def hpm_state_dict(seed: int = 0) -> dict:
    """Random weights for every key of the inventory (non-zero key biases too), MAE's fixed tables."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in official_inventory().items():
        if k in ("pos_embed", "decoder_pos_embed"):
            sd[k] = mae_table(GRID, shape[-1])
        elif k.endswith(("norm1.weight", "norm2.weight", "norm.weight")) or "norm_losspred.weight" in k \
                or k == "decoder_norm.weight":
            sd[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[k] = 0.2 * torch.randn(shape, generator=g)
    return sd


def hpm_repo_file(student: dict, teacher: dict) -> dict:
    """What HPM's main_pretrain.py saves: the DDP student (``module.`` keys), the EMA teacher."""
    return {"epoch": 3, "state_dict": {"module." + k: v for k, v in student.items()}, "ema_state_dict": dict(teacher),
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "model": "mae_vit_base_patch16_dec512d8b", "loss_scaler": {"scale": 65536.0, "growth_tracker": 0}}


def official_model(**kw) -> torch.nn.Module:
    """The model of the recipe configs/pretrain/in1k_vit_b_hpm.yaml at the tiny sizes."""
    torch.manual_seed(0)
    return create_model("pretrain_mae_base_patch16_224", **SIZES,
                        **{**_config_kwargs("pretrain/in1k_vit_b_hpm.yaml"), **kw}).eval()


def fixed_mask(seed: int = 3, n_masked: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.rand(2, N, generator=g).argsort(1)[:, :n_masked]
    return torch.zeros(2, N, dtype=torch.bool).scatter_(1, ids, True)


def image(seed: int = 7) -> torch.Tensor:
    return clip(t=1, seed=seed)


def test_recipe_model_is_the_official_key_inventory():
    model = official_model()
    for with_lp in (True, False):
        sd = ours_to_mae(model, loss_predictor=with_lp)
        assert {k: tuple(v.shape) for k, v in sd.items()} == official_inventory(with_lp)
    assert model.encoder.pos_embed.requires_grad is False  # fixed 2-D table, as the official buffer


@pytest.mark.parametrize("layout", ["hpm_repo", "mae_save_model"])
def test_official_checkpoints_load_whole(tmp_path, layout):
    student, teacher = hpm_state_dict(0), hpm_state_dict(1)
    obj = hpm_repo_file(student, teacher) if layout == "hpm_repo" else {
        "model": student, "optimizer": {}, "epoch": 1, "scaler": {}, "args": argparse.Namespace(model="mae")}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = official_model()
    report = load_pretrained(model, str(path), strict=True)
    assert report.source_format == "hpm" and report.ok and not report.ignored
    assert len(report.loaded) == len(model.state_dict())
    torch.testing.assert_close(model.loss_predictor.head.weight, student["decoder_pred_losspred.weight"])
    torch.testing.assert_close(model.decoder.mask_token, student["mask_token"])
    if layout == "hpm_repo":  # the EMA weights when asked for the teacher
        load_pretrained(model, str(path), strict=True, teacher=True)
        torch.testing.assert_close(model.encoder.norm.weight, teacher["norm.weight"])
        torch.testing.assert_close(model.loss_predictor.norm.bias, teacher["decoder_norm_losspred.bias"])
    else:
        with pytest.raises(ValueError, match="no EMA teacher"):
            load_pretrained(model, str(path), teacher=True)


def test_same_input_same_mask_gives_the_official_outputs():
    sd = hpm_state_dict()
    model = official_model()
    load_pretrained(model, {"state_dict": sd}, strict=True)
    x, mask = image(), fixed_mask()
    n_vis = N - int(mask[0].sum())
    with torch.no_grad():
        ref = hpm_forward(x, sd, mask, DEPTH, HEADS, DDEPTH, DHEADS)
        latent = model.encode(x, mask)  # [CLS] + visible, ascending
        pred = model.decode(latent, mask, "pixel")
        pred_loss = model.decode(latent, mask, "loss")[..., 0]
        teacher = model.decode(model.encode(x), None, "loss")[..., 0]
        ref_teacher = hpm_forward(x, sd, torch.zeros_like(mask), DEPTH, HEADS, DDEPTH, DHEADS)["loss_pred"]
    torch.testing.assert_close(latent, ref["latent"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred, ref["pred"][:, n_vis:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred_loss, ref["loss_pred"][:, n_vis:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(teacher, ref_teacher, rtol=1e-4, atol=1e-5)
    # the official target: the normalised input patchified, each patch standardised jointly
    target = hpm_target(x, mask, P)
    torch.testing.assert_close(model.target(x)[mask].view(2, -1, P * P * 3), target, rtol=1e-5, atol=1e-5)
    default = create_model("pretrain_mae_base_patch16_224", **SIZES)  # VideoMAE's un-normalised target
    assert (default.target(x)[mask].view(2, -1, P * P * 3) - target).abs().max() > 0.1


def test_loss_prediction_losses_and_gradients_are_the_official_ones():
    g = torch.Generator().manual_seed(5)
    pred = torch.randn(2, 12, generator=g, dtype=torch.float64)
    rec = torch.rand(2, 12, generator=g, dtype=torch.float64)
    rec[0, 3] = rec[0, 5]  # a tie: counted by neither
    ours_p = pred.clone().requires_grad_(True)
    ref_p = pred.clone().requires_grad_(True)
    ours = relative_loss_prediction(ours_p, rec)
    ref = hpm_relative_loss(ref_p, rec)
    ours.backward()
    ref.backward()
    # the official log(σ + 1e-6) differs from the exact BCE by < 1e-6 / σ at these logits
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_p.grad, ref_p.grad, rtol=0, atol=1e-5)
    ours_a = absolute_loss_prediction(pred, rec, standardize=True)
    torch.testing.assert_close(ours_a.double(), hpm_absolute_loss(pred, rec), rtol=1e-6, atol=1e-6)
    assert (absolute_loss_prediction(pred, rec) - ours_a).abs() > 0.1  # Eq. 4 as printed, the default


class FixedMask:
    """A random-strategy stand-in that returns one given mask (the official loop's input)."""

    needs_scores = False

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def __call__(self, grid, scores=None, progress=None, device=None, generator=None):
        return self.mask

    def num_visible_per_sample(self, grid) -> int:
        return int((~self.mask[0]).sum())

    def num_masked_per_sample(self, grid) -> int:
        return int(self.mask[0].sum())


@pytest.mark.parametrize("loss_pred, absolute_target", [("relative", "raw"), ("absolute", "standardized")])
def test_hpm_step_gives_the_official_losses(loss_pred, absolute_target):
    sd = hpm_state_dict(2)
    model = official_model()
    load_pretrained(model, {"model": sd}, strict=True)
    x, mask = image(9), fixed_mask(4)
    recipe = HPM(model, FixedMask(mask), loss_pred=loss_pred, learn_to_mask=False, absolute_target=absolute_target)
    out = recipe({"video": x}, progress=0.5)
    with torch.no_grad():
        ref = hpm_forward(x, sd, mask, DEPTH, HEADS, DDEPTH, DHEADS)
        n_vis = N - int(mask[0].sum())
        matrix = ((ref["pred"][:, n_vis:] - hpm_target(x, mask, P)) ** 2).mean(-1)  # forward_loss 'matrix'
        lp = ref["loss_pred"][:, n_vis:]
        ref_pred = hpm_relative_loss(lp, matrix) if loss_pred == "relative" else hpm_absolute_loss(lp, matrix)
    torch.testing.assert_close(out["loss_rec"], matrix.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss_pred"], ref_pred, rtol=1e-4, atol=1e-5)
    out["loss"].backward()  # every parameter of the official model trains (shared decoder_embed too)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("mode", ["subset:0.5", "lowres:2"])
def test_cheap_teacher_modes_run_on_the_official_model(mode):
    from videohpm.masking import make_mask_generator

    model = official_model()
    recipe = HPM(model, make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.5, alpha_T=0.5), teacher_mode=mode)
    scores = recipe.teacher_scores(image())
    assert scores.shape == (2, N) and torch.isfinite(scores).all()


def test_export_hpm_round_trip(tmp_path):
    model = official_model()
    with torch.no_grad():  # weights the initialisation would not give (a k-bias-free export is exact)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = tmp_path / "hpm.pth"
    write_export(model, "hpm", out)
    sd = read_checkpoint_file(out)["model"]
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_inventory()  # what strict=True checks
    x, mask = image(11), fixed_mask(6)
    with torch.no_grad():
        ref = hpm_forward(x, sd, mask, DEPTH, HEADS, DDEPTH, DHEADS)
        latent = model.encode(x, mask)
        n_vis = N - int(mask[0].sum())
        torch.testing.assert_close(model.decode(latent, mask, "pixel"), ref["pred"][:, n_vis:], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.decode(latent, mask, "loss")[..., 0], ref["loss_pred"][:, n_vis:],
                                   rtol=1e-4, atol=1e-5)
    back = official_model()
    assert load_pretrained(back, str(out), strict=True).ok
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    write_export(model, "mae", tmp_path / "mae.pth")
    assert set(read_checkpoint_file(tmp_path / "mae.pth")["model"]) == set(official_inventory(False))


def test_export_refuses_what_the_official_model_cannot_hold(tmp_path):
    video = create_model("pretrain_videomae_tiny_patch16_224", img_size=32, patch_size=8, num_frames=4, depth=1,
                         loss_predictor=True)
    with pytest.raises(ValueError, match="video model.*CLS"):
        write_export(video, "hpm", tmp_path / "v.pth")
    plain = official_model(loss_predictor_layout="videomae")
    with pytest.raises(ValueError, match="loss_predictor_layout"):
        write_export(plain, "hpm", tmp_path / "p.pth")
    assert not os.listdir(tmp_path)


def test_official_file_into_another_layout_names_the_options():
    default = create_model("pretrain_mae_base_patch16_224", **SIZES, loss_predictor=True)
    with pytest.raises(PretrainedMismatchError, match="loss_predictor_layout") as err:
        load_pretrained(default, {"state_dict": hpm_state_dict()}, strict="parts")
    assert "cls_in_pretraining" in str(err.value) and "in1k_vit_b_hpm.yaml" in str(err.value)


def test_a_decoder_table_with_a_cls_position_is_refused():
    sd = hpm_state_dict()
    sd["decoder_pos_embed"] = sd["decoder_pos_embed"].clone()
    sd["decoder_pos_embed"][:, 0] = 0.5  # our decoder has no [CLS] position to hold it
    with pytest.raises(ValueError, match="non-zero \\[CLS\\] row"):
        load_pretrained(official_model(), {"state_dict": sd})


@pytest.mark.parametrize("teacher", [False, True])
def test_finetuning_starts_from_an_official_file_with_the_default_settings(tmp_path, teacher):
    student, ema = hpm_state_dict(0), hpm_state_dict(1)
    path = tmp_path / "hpm.pth"
    torch.save(hpm_repo_file(student, ema), path)
    kw = {**_config_kwargs("finetune/in1k_vit_b.yaml"), "num_classes": 5}
    torch.manual_seed(0)
    clf = create_model("vit_base_patch16_224", **{**kw, **{k: v for k, v in SIZES.items() if "decoder" not in k}})
    report = load_pretrained(clf, str(path), strict="parts", teacher=teacher)  # what tools/train.py does
    assert not report.problem_keys()
    assert any(k.startswith("loss_predictor.blocks.") for k in report.ignored)
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    src = ema if teacher else student
    pos = clf.encoder.pos_embed
    assert isinstance(pos, torch.nn.Parameter) and pos.requires_grad  # trained, as the official fine-tuning
    torch.testing.assert_close(pos.detach(), src["pos_embed"][:, 1:])
    torch.testing.assert_close(clf.encoder.cls_token.detach(), src["cls_token"])  # + a zero position row
    assert torch.equal(clf.head.bias, torch.zeros(5))


def test_predicted_loss_maps_and_reconstructions_of_an_official_file(tmp_path):
    """What tools/visualize.py runs on an official file: the EMA teacher's d_ψ map, the official
    teacher's scores, and a perfect prediction reconstructing the input (the target's space)."""
    from videohpm.engine.checkpoint import read_checkpoint
    from videohpm.evaluation.visualize import compute_visualization, reconstruct
    from videohpm.masking import make_mask_generator

    student, ema = hpm_state_dict(0), hpm_state_dict(1)
    path = tmp_path / "hpm.pth"
    torch.save(hpm_repo_file(student, ema), path)
    weights = read_checkpoint(str(path))
    model, teacher = official_model(), official_model()
    assert load_pretrained(model, weights.model, strict=True).ok
    teacher.load_state_dict(weights.teacher)  # the EMA teacher, already in our names
    x = image(13)[:1]
    vis = compute_visualization(model, x[0], make_mask_generator("hpm", mask_ratio=0.75, alpha_0=1.0, alpha_T=1.0),
                                teacher=teacher, num_loss_masks=2)
    with torch.no_grad():
        ref = hpm_forward(x, ema, torch.zeros(1, N, dtype=torch.bool), DEPTH, HEADS, DDEPTH, DHEADS)["loss_pred"][0]
    torch.testing.assert_close(torch.as_tensor(vis.token_pred_loss).float(), ref, rtol=1e-4, atol=1e-5)
    mask = fixed_mask(8)[:1]
    rec = reconstruct(model, x, mask, model.target(x)[mask].view(1, -1, P * P * 3))
    pix = x * torch.tensor(model.input_std).view(1, 3, 1, 1, 1) + torch.tensor(model.input_mean).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(rec, pix.clamp(0, 1), rtol=0, atol=1e-4)
