"""Visualization: heatmaps follow the token grid; PNG / GIF / MP4 have the expected geometry;
training curves read the engine's JSON lines tolerantly."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from .helpers import tiny_autoencoder
from videohpm.evaluation.visualize import (
    compute_visualization,
    plot_training_curves,
    read_log,
    reconstruct,
    render_grid_png,
    token_map_to_frames,
    write_animation,
)
from videohpm.masking import make_mask_generator


@pytest.mark.parametrize("tau,h,w", [(0, 0, 0), (1, 2, 3), (3, 1, 0)])
def test_one_hot_token_lights_exactly_its_tubelet(tau, h, w):
    grid, t, p = (4, 3, 4), 2, 5  # T=8, H=15, W=20
    values = torch.zeros(grid[0] * grid[1] * grid[2])
    values[tau * grid[1] * grid[2] + h * grid[2] + w] = 1.0  # time-major index
    frames = token_map_to_frames(values, grid, t, p)
    assert frames.shape == (8, 15, 20)
    expected = torch.zeros(8, 15, 20)
    expected[tau * t:tau * t + t, h * p:(h + 1) * p, w * p:(w + 1) * p] = 1.0
    assert torch.equal(frames, expected)


def test_reconstruction_keeps_visible_and_inverts_norm_pix():
    model = tiny_autoencoder(loss_predictor=False).eval()
    x = torch.randn(1, 3, 4, 32, 32) * 0.3
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, [1, 6]] = True
    # a "perfect" prediction = the normalized target: reconstruction must give back the input
    target = model.target(x)[mask].view(1, 2, -1)
    rec = reconstruct(model, x, mask, target)
    pix = (x * torch.tensor(model.input_std).view(1, 3, 1, 1, 1) + torch.tensor(model.input_mean).view(1, 3, 1, 1, 1))
    assert torch.allclose(rec, pix.clamp(0, 1), atol=1e-4)


def test_reconstruction_inverts_the_image_mode_per_patch_target():
    model = tiny_autoencoder(loss_predictor=False, num_frames=1, tubelet_size=1, patch_size=8).eval()
    x = torch.randn(1, 3, 1, 32, 32) * 0.3
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, [2, 9, 15]] = True
    target = model.target(x)[mask].view(1, 3, -1)  # MAE's jointly standardised patches
    rec = reconstruct(model, x, mask, target)
    pix = (x * torch.tensor(model.input_std).view(1, 3, 1, 1, 1) + torch.tensor(model.input_mean).view(1, 3, 1, 1, 1))
    assert torch.allclose(rec, pix.clamp(0, 1), atol=1e-4)


@pytest.fixture(scope="module")
def vis():
    model = tiny_autoencoder()
    gen = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.0, alpha_T=0.5)
    x = torch.randn(1, 3, 4, 32, 32)
    return compute_visualization(model, x, gen, progress=1.0, num_loss_masks=3)


def test_maps_and_mask_follow_the_grid(vis):
    assert vis.frames.shape == (4, 32, 32, 3) and vis.recon.shape == (4, 32, 32, 3)
    assert vis.alpha == pytest.approx(0.5)
    assert vis.token_mask.sum() == 6  # per time slice int(0.75·4) = 3 of 4 tokens, 2 slices
    spread = token_map_to_frames(torch.from_numpy(vis.token_pred_loss), vis.grid, 2, 16).numpy()
    assert np.allclose(vis.pred_loss, spread)
    # α = 0.5 of 3 masked per slice → int(4·0.75·0.5) = 1 hardest token masked in each slice
    per_slice = vis.token_pred_loss.reshape(2, 4)
    hard = per_slice.argmax(1)
    assert all(vis.token_mask.reshape(2, 4)[s, hard[s]] for s in range(2))
    assert np.all(vis.mask == token_map_to_frames(torch.from_numpy(vis.token_mask).float(), vis.grid, 2, 16).numpy()
                  .astype(bool))


def test_png_gif_mp4_geometry(vis, tmp_path):
    size = render_grid_png(vis, str(tmp_path / "grid.png"), cell_inches=1.0, dpi=50)
    img = Image.open(tmp_path / "grid.png")
    cols, rows = 2, 5  # one column per tubelet slice; input, loss, predicted loss, mask, reconstruction
    assert img.size == size == (cols * 50, rows * 50 + 20)  # + 0.4 inch title
    n, w, h = write_animation(vis, str(tmp_path / "anim.gif"), gap=2)
    gif = Image.open(tmp_path / "anim.gif")
    assert (n, gif.n_frames) == (4, 4)
    assert gif.size == (w, h) == (5 * 32 + 4 * 2, 32)
    gif.seek(3)
    panel = np.asarray(gif.convert("RGB"))[:, :32].astype(int)  # first panel = input
    err = [np.abs(panel - (np.clip(vis.frames[f], 0, 1) * 255 + 0.5).astype(int)).mean() for f in range(4)]
    assert err[3] < 16 and err[3] < 0.5 * min(err[:3])  # animation frame 3 shows video frame 3 (256-colour GIF)
    import av

    n, w, h = write_animation(vis, str(tmp_path / "anim.mp4"))
    with av.open(str(tmp_path / "anim.mp4")) as c:
        decoded = [f for f in c.decode(video=0)]
    assert len(decoded) == 4 and (decoded[0].width, decoded[0].height) == (w, h) == (168, 32)


def test_image_mode(tmp_path):
    model = tiny_autoencoder(num_frames=1, tubelet_size=1)
    gen = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=1.0, alpha_T=1.0)
    vis = compute_visualization(model, torch.randn(3, 1, 32, 32), gen, num_loss_masks=2)
    assert vis.frames.shape == (1, 32, 32, 3) and vis.token_mask.sum() == 3
    # α = 1: the 3 tokens with the highest predicted loss are the masked ones
    assert set(np.argsort(-vis.token_pred_loss)[:3]) == set(np.flatnonzero(vis.token_mask))
    n, _, _ = write_animation(vis, str(tmp_path / "img.gif"))
    assert n == 1 and Image.open(tmp_path / "img.gif").n_frames == 1
    render_grid_png(vis, str(tmp_path / "img.png"))


def test_training_curves_draw_accuracies_in_percent():
    from videohpm.evaluation.visualize import training_curve_panels

    steps = {"acc": {1: 0.25, 2: 0.5}, "loss": {1: 2.0, 2: 1.5}}
    epochs = {"train_acc": {0: 0.375}, "val_acc1": {0: 40.0}, "knn_top1": {0: 30.0}, "knn_best_k": {0: 20.0},
              "best_val_acc1": {0: 40.0}, "kept_val_acc1": {0: 40.0}}
    panels = {t: dict(s) for t, s in training_curve_panels(steps, epochs).items()}
    assert panels["train accuracy (%)"] == {"acc": {1: 25.0, 2: 50.0}}  # the recipes' fraction, scaled
    assert panels["accuracy per epoch (%)"] == {"knn_top1": {0: 30.0}, "train_acc": {0: 37.5}, "val_acc1": {0: 40.0}}


def test_training_curves_tolerate_missing_keys_and_resume(tmp_path):
    log = tmp_path / "log.jsonl"
    recs = [
        {"type": "step", "step": 1, "epoch": 0, "loss": 1.0, "loss_rec": 0.8, "loss_pred": 0.2, "lr": 1e-4, "alpha": 0.0},
        {"type": "step", "step": 2, "epoch": 0, "loss": "nan", "lr": 2e-4},  # no alpha, non-finite loss
        {"type": "resume", "step": 1},
        {"type": "step", "step": 2, "epoch": 0, "loss": 0.7, "loss_rec": 0.6, "lr": 2e-4, "alpha": 0.1},  # re-logged
        {"type": "epoch", "epoch": 0, "step": 2, "val_top1": 12.5},
    ]
    log.write_text("\n".join(json.dumps(r) for r in recs) + "\n{broken line\n")
    steps, epochs = read_log(str(log))
    assert steps["loss"] == {1: 1.0, 2: 0.7} and steps["alpha"] == {1: 0.0, 2: 0.1}
    assert steps["loss_pred"] == {1: 0.2} and epochs["val_top1"] == {0: 12.5}
    panels = plot_training_curves(str(log), str(tmp_path / "curves.png"))
    assert panels["loss"] == ["loss", "loss_pred", "loss_rec"]
    assert "learning rate" in panels and "α_t (Eq. 8)" in panels and panels["accuracy per epoch (%)"] == ["val_top1"]
    assert Image.open(tmp_path / "curves.png").size == (700, 4 * 220)
    # only lr: still a plot
    only = tmp_path / "only.jsonl"
    only.write_text(json.dumps({"type": "step", "step": 5, "lr": 0.1}) + "\n")
    assert list(plot_training_curves(str(only), str(tmp_path / "only.png"))) == ["learning rate"]
