"""What HPM sees: input, true loss, predicted loss, mask and reconstruction (HPM journal Fig. 2),
and training curves from the engine's JSON-lines log.

Fig. 2 of the HPM journal version shows, per input, (b) the patch-wise reconstruction loss averaged over 10
random masks, (c) the loss predicted by `d_ψ` and (d) the mask generated from the predicted loss.
:func:`compute_visualization` produces those maps for a clip (or an image, `T = 1`) plus the
easy-to-hard HPM mask at a chosen training progress (α_t, Eq. 8) and the reconstruction under
that mask — or, for AdaMAE (CVPR 2023), the token sampler's probability map and the mask drawn
from it; :func:`render_grid_png` draws them as a PNG grid (rows = panels, columns = frames) and
:func:`write_animation` as an animated GIF or MP4 (panels side by side, one video frame per
animation frame).

Per-token maps `[N]` are laid over the frames with :func:`token_map_to_frames`: token
`(τ, h, w)` (index `τ·H'·W' + h·W' + w`, time-major) covers frames `τ·t … τ·t + t − 1` and pixels
`[h·p, (h+1)·p) × [w·p, (w+1)·p)`.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from videohpm.masking import make_mask_generator
from videohpm.models.patches import patchify, unpatchify

__all__ = [
    "training_curve_panels",
    "token_map_to_frames",
    "unnormalize",
    "reconstruct",
    "per_patch_loss",
    "masked_patch_loss",
    "average_loss_map",
    "Visualization",
    "compute_visualization",
    "render_grid_png",
    "write_animation",
    "read_log",
    "plot_training_curves",
]

logger = logging.getLogger(__name__)

PANELS = ("input", "loss", "predicted loss", "sampling probability", "mask", "reconstruction")


# ----------------------------------------------------------------------------------------------
# Tensor helpers
# ----------------------------------------------------------------------------------------------
def token_map_to_frames(values: torch.Tensor, grid: Sequence[int], tubelet: int, patch: int) -> torch.Tensor:
    """Spread per-token values over the frames they cover.

    Args:
        values: `[B, N]` (or `[N]`) per-token values, time-major (`N = T'·H'·W'`).
        grid: `(T', H', W')`.
        tubelet, patch: t and p.
    Returns:
        `[B, T'·t, H'·p, W'·p]` (or without B): frame `f` pixel `(y, x)` holds the value of token
        `(f // t, y // p, x // p)`.
    """
    gt, gh, gw = (int(g) for g in grid)
    squeeze = values.dim() == 1
    v = values.unsqueeze(0) if squeeze else values
    if v.shape[-1] != gt * gh * gw:
        raise ValueError(f"values have {v.shape[-1]} tokens, grid {tuple(grid)} has {gt * gh * gw}")
    v = v.reshape(v.shape[0], gt, gh, gw)
    v = v.repeat_interleave(tubelet, dim=1).repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return v[0] if squeeze else v


def unnormalize(x: torch.Tensor, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> torch.Tensor:
    """`x: [B, C, T, H, W]` model input → pixel space `[0, 1]` (clamped)."""
    if mean is not None and std is not None:
        c = x.shape[1]
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, c, 1, 1, 1)
        x = x * s + m
    return x.clamp(0.0, 1.0)


def _patch_stats(pixels: torch.Tensor, t: int, p: int, c: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per patch and channel mean / unbiased std over its `t·p·p` voxels: `[B, N, 1, C]` each."""
    patches = patchify(pixels, t, p)
    b, n, _ = patches.shape
    v = patches.view(b, n, t * p * p, c)
    return v.mean(dim=2, keepdim=True), v.var(dim=2, unbiased=True, keepdim=True).sqrt()


def reconstruct(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Pixel-space clip with the masked patches replaced by the prediction.

    Args:
        x: `[B, C, T, H, W]` model input; mask: `[B, N]` True = masked;
        pred: `[B, N_mask, t·p·p·C]` decoder output for the masked tokens (ascending order).
    Returns:
        `[B, C, T, H, W]` in `[0, 1]`.

    With `norm_pix_loss` the decoder predicts per-patch standardized pixels (Eq. 3 target); they
    are mapped back with the mean/std of the *true* patch, as VideoMAE's visualization does
    (the prediction carries no absolute brightness), so only the texture is the model's.
    """
    t, p, c = model.tubelet_size, model.patch_size, x.shape[1]
    mean, std = getattr(model, "input_mean", None), getattr(model, "input_std", None)
    pixels = unnormalize(x.float(), mean, std)
    # the space the target was taken in: the pixels, or the model input itself (MAE / official HPM)
    space = pixels if getattr(model, "target_unnormalize", True) else x.float()
    patches = patchify(space, t, p)  # [B, N, t·p·p·C]
    b, n, d = patches.shape
    pr = pred.float().reshape(b, -1, t * p * p, c)
    if getattr(model, "norm_pix_loss", False) and t == 1 and x.shape[2] == 1:
        # images: MAE's target standardises each patch jointly, (v - μ) / sqrt(σ² + 1e-6)
        mu = patches.mean(dim=-1, keepdim=True)[mask].view(b, -1, 1, 1)
        var = patches.var(dim=-1, unbiased=True, keepdim=True)[mask].view(b, -1, 1, 1)
        pr = pr * (var + 1e-6).sqrt() + mu
    elif getattr(model, "norm_pix_loss", False):
        mu, sd = _patch_stats(space, t, p, c)
        sel = mask.unsqueeze(-1).unsqueeze(-1).expand_as(mu)
        mu_m = mu[sel].view(b, -1, 1, c)
        sd_m = sd[sel].view(b, -1, 1, c)
        pr = pr * (sd_m + 1e-6) + mu_m
    out = patches.clone()
    out[mask] = pr.reshape(-1, d).to(out.dtype)
    rec = unpatchify(out, model.grid(x), t, p, c)
    return (rec if space is pixels else unnormalize(rec, mean, std)).clamp(0.0, 1.0)


def per_patch_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 3 per patch: mean over the patch vector of `(pred − target)²` → `[B, N_mask]`."""
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


@torch.no_grad()
def masked_patch_loss(model: nn.Module, x: torch.Tensor, mask: torch.Tensor,
                      target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. 3 per masked patch `[B, M]` (in token order) of the pixel decoder under `mask` `[B, N]`;
    `target` is `model.target(x)` when the caller has it already."""
    pred = model.decode(model.encode(x, mask), mask, head="pixel", grid=tuple(model.grid(x)))
    target = model.target(x) if target is None else target
    return per_patch_loss(pred, target[mask].view(x.shape[0], -1, target.shape[-1]))


@torch.no_grad()
def average_loss_map(model: nn.Module, x: torch.Tensor, num_masks: int = 10, mask_ratio: float = 0.9,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """True per-patch reconstruction loss `[B, N]`, averaged over `num_masks` random masks
    (HPM journal Fig. 2(b)); a token's value is the mean over the masks that hid it (tokens never
    hidden get the sample's mean)."""
    gen = make_mask_generator("random", mask_ratio=mask_ratio)
    grid = (x.shape[0], *model.grid(x))
    target = model.target(x)  # [B, N, P]
    total = torch.zeros(x.shape[0], target.shape[1], device=x.device)
    count = torch.zeros_like(total)
    for _ in range(int(num_masks)):
        mask = gen(grid, device=x.device, generator=generator)
        loss = masked_patch_loss(model, x, mask, target)  # [B, M]
        total[mask] += loss.reshape(-1)
        count[mask] += 1
    avg = total / count.clamp(min=1)
    fill = (total.sum(1, keepdim=True) / count.sum(1, keepdim=True).clamp(min=1)).expand_as(avg)
    return torch.where(count > 0, avg, fill)


# ----------------------------------------------------------------------------------------------
# The figure's content
# ----------------------------------------------------------------------------------------------
@dataclass
class Visualization:
    """Everything drawn for one clip (all numpy, frame-major).

    Attributes:
        frames: `[T, H, W, 3]` input in `[0, 1]`.
        loss: `[T, H, W]` true per-patch reconstruction loss (token values spread over pixels).
        pred_loss: `[T, H, W]` loss predicted by d_ψ (None without a loss predictor).
        mask: `[T, H, W]` bool, True = masked.
        recon: `[T, H, W, 3]` reconstruction under `mask` (visible patches are the input).
        token_loss / token_pred_loss / token_mask: the `[N]` per-token values.
        grid, tubelet, patch: token geometry; alpha: α_t used for the mask; progress: t/T.
        sampling_prob / token_sampling_prob: AdaMAE's token distribution p (`[T, H, W]` / `[N]`),
            None without a sampler.
    """

    frames: np.ndarray
    loss: np.ndarray
    pred_loss: Optional[np.ndarray]
    mask: np.ndarray
    recon: np.ndarray
    token_loss: np.ndarray
    token_pred_loss: Optional[np.ndarray]
    token_mask: np.ndarray
    grid: Tuple[int, int, int]
    tubelet: int
    patch: int
    alpha: Optional[float]
    progress: float
    sampling_prob: Optional[np.ndarray] = None
    token_sampling_prob: Optional[np.ndarray] = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _to_np_frames(video: torch.Tensor) -> np.ndarray:
    """`[C, T, H, W]` → `[T, H, W, C]` float numpy."""
    return video.permute(1, 2, 3, 0).float().cpu().numpy()


def _draw_mask(model: nn.Module, teacher: nn.Module, x: torch.Tensor, mask_generator: Any, progress: float,
               g: torch.Generator, sampler: Optional[Any]
               ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor]:
    """`(pred_loss [N] or None, probs [N] or None, mask [1, N])`: the teacher's predicted loss, the
    sampler's probabilities, and the mask the strategy draws from them (the scores it needs)."""
    grid = tuple(model.grid(x))
    pred_loss = None
    if getattr(teacher, "loss_predictor", None) is not None:
        latent = teacher.encode(x)
        pred_loss = teacher.decode(latent, None, head="loss", grid=grid)[0, :, 0].float()  # [N]
    probs = None if sampler is None else sampler(x)[0].float()  # [N]
    needs_scores = bool(getattr(mask_generator, "needs_scores", False))
    scores = probs if probs is not None else pred_loss
    if needs_scores and scores is None:
        raise ValueError("the mask strategy needs predicted losses but the model has no loss predictor "
                         "(model.loss_predictor=true) and no token sampler was given")
    mask = mask_generator((1, *grid), scores=scores[None] if needs_scores else None, progress=progress,
                          device=x.device, generator=g)
    return pred_loss, probs, mask


def _visualization(model: nn.Module, x: torch.Tensor, recon: torch.Tensor, maps: Dict[str, Optional[torch.Tensor]],
                   alpha: Optional[float], progress: float) -> Visualization:
    """The `Visualization` of one clip from its per-token `maps` (`loss`, `pred_loss`,
    `sampling_prob`, `mask`: `[N]`, None where absent), spread onto the frames."""
    grid = tuple(model.grid(x))
    t, p = int(model.tubelet_size), int(model.patch_size)
    frames = unnormalize(x.float(), getattr(model, "input_mean", None), getattr(model, "input_std", None))[0]

    def spread(v: torch.Tensor) -> np.ndarray:
        return token_map_to_frames(v.float(), grid, t, p).cpu().numpy()

    def tokens(v: Optional[torch.Tensor]) -> Optional[np.ndarray]:
        return None if v is None else v.cpu().numpy()

    pred_loss, probs, mask = maps["pred_loss"], maps["sampling_prob"], maps["mask"]
    return Visualization(
        frames=_to_np_frames(frames), loss=spread(maps["loss"]),
        pred_loss=None if pred_loss is None else spread(pred_loss),
        mask=spread(mask.float()) > 0.5, recon=_to_np_frames(recon),
        token_loss=tokens(maps["loss"]), token_pred_loss=tokens(pred_loss), token_mask=tokens(mask),
        grid=grid,  # type: ignore[arg-type]
        tubelet=t, patch=p, alpha=alpha, progress=progress,
        sampling_prob=None if probs is None else spread(probs), token_sampling_prob=tokens(probs),
    )


@torch.no_grad()
def compute_visualization(
    model: nn.Module,
    x: torch.Tensor,
    mask_generator: Any,
    progress: float = 1.0,
    teacher: Optional[nn.Module] = None,
    num_loss_masks: int = 10,
    loss_mask_ratio: Optional[float] = None,
    seed: int = 0,
    sampler: Optional[Any] = None,
) -> Visualization:
    """Maps of HPM journal Fig. 2 for ONE clip.

    Args:
        model: the pre-trained `MaskedAutoencoder` (student).
        x: `[1, C, T, H, W]` or `[C, T, H, W]` normalized clip (image: `T = 1`).
        mask_generator: e.g. `make_mask_generator("hpm", mask_ratio=0.9, alpha_0=0, alpha_T=0.5)`;
            score-driven strategies get the teacher's predicted loss.
        progress: training progress t/T ∈ [0, 1] that sets α_t (Eq. 8).
        teacher: the network whose `d_ψ` predicts the loss that drives the mask (HPM's EMA
            teacher, §3.4); defaults to `model`.
        num_loss_masks: random masks averaged for the true loss map (Fig. 2(b): 10).
        loss_mask_ratio: their mask ratio (default: the generator's γ).
        seed: seeds the masks (reproducible figures).
        sampler: AdaMAE's token distribution, a callable ``x → p: [1, N]`` (e.g. the recipe's
            ``token_probs``, in eval mode): drawn as a "sampling probability" row, and the scores of
            a score-driven strategy (``adamae``) instead of predicted losses.
    """
    if x.dim() == 4:
        x = x.unsqueeze(0)
    if x.dim() != 5 or x.shape[0] != 1:
        raise ValueError(f"compute_visualization takes one clip [1, C, T, H, W], got {tuple(x.shape)}")
    was = model.training
    model.eval()
    teacher = model if teacher is None else teacher
    teacher.eval()
    try:
        dev = next(model.parameters()).device
        x = x.to(dev, torch.float32)
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        grid = tuple(model.grid(x))
        ratio = float(loss_mask_ratio if loss_mask_ratio is not None else getattr(mask_generator, "mask_ratio", 0.9))
        token_loss = average_loss_map(model, x, num_loss_masks, ratio, generator=g)[0]  # [N]
        pred_loss, probs, mask = _draw_mask(model, teacher, x, mask_generator, progress, g, sampler)
        pred = model.decode(model.encode(x, mask), mask, head="pixel", grid=grid)
        recon = reconstruct(model, x, mask, pred)[0]
        alpha = float(mask_generator.alpha(progress)) if hasattr(mask_generator, "alpha") else None
        maps = {"loss": token_loss, "pred_loss": pred_loss, "sampling_prob": probs, "mask": mask[0]}
        return _visualization(model, x, recon, maps, alpha=alpha, progress=float(progress))
    finally:
        model.train(was)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
def _normalize01(a: np.ndarray) -> np.ndarray:
    """Min–max over the whole clip (one scale for all frames, so frames compare)."""
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return np.zeros_like(a, dtype=np.float32) if hi - lo < 1e-12 else ((a - lo) / (hi - lo)).astype(np.float32)


def _heat(frames: np.ndarray, values: np.ndarray, cmap: str = "jet", weight: float = 0.6) -> np.ndarray:
    """Colour `values: [T, H, W]` (red = high, blue = low, as Fig. 2) over grey `frames`."""
    from matplotlib import colormaps  # lazy: only drawing needs matplotlib

    rgb = colormaps[cmap](_normalize01(values))[..., :3]
    grey = frames.mean(axis=-1, keepdims=True)
    return np.clip((1 - weight) * grey + weight * rgb, 0.0, 1.0)


def _masked(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked patches greyed out (Fig. 2(d))."""
    out = frames.copy()
    out[mask] = 0.25 * out[mask] + 0.5
    return out


def panel_images(vis: Visualization) -> Dict[str, np.ndarray]:
    """`{panel: [T, H, W, 3] float in [0, 1]}` in the order of `PANELS` (no predicted loss
    panel without a loss predictor, no sampling probability panel without a sampler)."""
    out = {"input": vis.frames, "loss": _heat(vis.frames, vis.loss)}
    if vis.pred_loss is not None:
        out["predicted loss"] = _heat(vis.frames, vis.pred_loss)
    if vis.sampling_prob is not None:
        out["sampling probability"] = _heat(vis.frames, vis.sampling_prob)
    out["mask"] = _masked(vis.frames, vis.mask)
    out["reconstruction"] = vis.recon
    return out


def _frame_choice(vis: Visualization, frames: Optional[Sequence[int]], max_cols: int) -> List[int]:
    if frames is not None:
        bad = [f for f in frames if not 0 <= int(f) < vis.num_frames]
        if bad:
            raise ValueError(f"frames {bad} out of range for a {vis.num_frames}-frame clip")
        return [int(f) for f in frames]
    # One frame per tubelet slice (the first of each), at most max_cols evenly spread.
    firsts = list(range(0, vis.num_frames, vis.tubelet))
    if len(firsts) > max_cols:
        pick = np.linspace(0, len(firsts) - 1, max_cols).round().astype(int)
        firsts = [firsts[i] for i in pick]
    return firsts


def render_grid_png(vis: Visualization, path: str, frames: Optional[Sequence[int]] = None, max_cols: int = 8,
                    cell_inches: float = 1.6, dpi: int = 100, title: Optional[str] = None) -> Tuple[int, int]:
    """Write the panels as a PNG grid: one row per panel, one column per shown frame.

    The figure is `cols·cell_inches × (rows·cell_inches + header)` inches at `dpi`, so the
    image is `(cols·cell·dpi, (rows·cell + header)·dpi)` pixels (truncated to integers), with
    `header = 0.4` inch for the title. Returns `(width, height)` of the written image.
    """
    import matplotlib  # lazy: the Agg backend is chosen right before pyplot is imported

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # lazy: after the backend is chosen

    panels = panel_images(vis)
    cols = _frame_choice(vis, frames, max_cols)
    rows = list(panels)
    header = 0.4
    fig_w, fig_h = len(cols) * cell_inches, len(rows) * cell_inches + header
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    top = 1.0 - header / fig_h
    gs = fig.add_gridspec(len(rows), len(cols), left=0.0, right=1.0, bottom=0.0, top=top, wspace=0.03, hspace=0.03)
    for r, name in enumerate(rows):
        for c, f in enumerate(cols):
            ax = fig.add_subplot(gs[r, c])
            ax.imshow(panels[name][f], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                label = name if name != "mask" or vis.alpha is None else f"mask α={vis.alpha:.2f}"
                ax.text(0.02, 0.98, label, transform=ax.transAxes, fontsize=7, va="top", ha="left",
                        color="white", bbox=dict(facecolor="black", alpha=0.55, pad=1.5, linewidth=0))
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=7, pad=2)
    if title is None:
        title = f"progress {vis.progress:.2f}" + ("" if vis.alpha is None else f", α_t = {vis.alpha:.2f}") + \
            f", grid {vis.grid[0]}×{vis.grid[1]}×{vis.grid[2]} (red = high loss)"
    fig.suptitle(title, fontsize=8, y=1.0 - 0.05 / fig_h, va="top")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    size = fig.canvas.get_width_height()
    plt.close(fig)
    return int(size[0]), int(size[1])


def animation_frames(vis: Visualization, gap: int = 2, scale: int = 1) -> np.ndarray:
    """`[T, H·scale, P·W·scale + (P−1)·gap, 3]` uint8: the P panels side by side for each frame."""
    panels = list(panel_images(vis).values())
    t, h, w, _ = vis.frames.shape
    s = max(int(scale), 1)
    width = len(panels) * w * s + (len(panels) - 1) * gap
    out = np.full((t, h * s, width, 3), 255, dtype=np.uint8)
    for i, img in enumerate(panels):
        img8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        if s > 1:
            img8 = img8.repeat(s, axis=1).repeat(s, axis=2)
        x0 = i * (w * s + gap)
        out[:, :, x0:x0 + w * s] = img8
    return out


def write_animation(vis: Visualization, path: str, fps: float = 4.0, scale: int = 1, gap: int = 2) -> Tuple[int, int, int]:
    """Write the panels side by side as an animated `.gif` (PIL) or `.mp4` (PyAV, H.264 or MPEG-4).

    Returns `(num_frames, width, height)`.
    """
    frames = animation_frames(vis, gap=gap, scale=scale)
    n, h, w, _ = frames.shape
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(round(1000 / fps)), loop=0,
                     optimize=False, disposal=1)
    elif ext == ".mp4":
        import av  # lazy: only .mp4 output needs PyAV

        # yuv420p needs even sides: pad with white.
        ph, pw = h + h % 2, w + w % 2
        if (ph, pw) != (h, w):
            frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), constant_values=255)
        with av.open(path, mode="w") as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=max(int(round(fps)), 1))
            stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        h, w = ph, pw
    else:
        raise ValueError(f"animation path must end in .gif or .mp4, got {path!r}")
    return n, w, h


# ----------------------------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------------------------
def _as_float(v: Any) -> Optional[float]:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):  # the engine writes non-finite values as "nan" / "inf"
        try:
            return float(v)
        except ValueError:
            return None
    return None


def read_log(path: str) -> Tuple[Dict[str, Dict[int, float]], Dict[str, Dict[int, float]]]:
    """Parse the engine's `log.jsonl`.

    Returns `(step_series, epoch_series)`: `{key: {step or epoch: value}}` for every numeric key
    of `"type": "step"` and `"type": "epoch"` records. A later record for the same step wins
    (a resumed run re-logs steps after its checkpoint); unparsable lines and non-numeric values
    are skipped, missing keys simply leave gaps.
    """
    steps: Dict[str, Dict[int, float]] = {}
    epochs: Dict[str, Dict[int, float]] = {}
    bad = 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(rec, dict):
                continue
            kind = rec.get("type", "step")
            if kind == "step" and "step" in rec:
                x, dst = rec.get("step"), steps
            elif kind == "epoch" and "epoch" in rec:
                x, dst = rec.get("epoch"), epochs
            else:
                continue
            xf = _as_float(x)
            if xf is None:
                continue
            for k, v in rec.items():
                if k in ("type", "step", "time") or (dst is epochs and k == "epoch"):
                    continue
                fv = _as_float(v)
                if fv is not None:
                    dst.setdefault(k, {})[int(xf)] = fv
    if bad:
        logger.warning("%s: skipped %d unparsable line(s)", path, bad)
    return steps, epochs


def training_curve_panels(steps: Dict[str, Dict[int, float]], epochs: Dict[str, Dict[int, float]]
                          ) -> Dict[str, List[Tuple[str, Dict[int, float]]]]:
    """The panels of :func:`plot_training_curves` from :func:`read_log`'s series: ``{title: [(key,
    {x: value})]}``. Accuracies are drawn in percent: the training accuracy the recipes log as a
    fraction (`acc`, `train_acc`) is scaled by 100, evaluations (`val_acc1`, `knn_top1`) already are."""
    panels: Dict[str, List[Tuple[str, Dict[int, float]]]] = {}
    loss_keys = sorted(k for k in steps if k.startswith("loss"))
    if loss_keys:
        panels["loss"] = [(k, steps[k]) for k in loss_keys]
    for key, title in (("lr", "learning rate"), ("alpha", "α_t (Eq. 8)")):
        if key in steps:
            panels[title] = [(key, steps[key])]
    percent = lambda key, d: {x: 100.0 * v for x, v in d.items()} if key.startswith(("acc", "train_acc")) else d  # noqa: E731
    acc_keys = sorted(k for k in steps if k.startswith("acc"))
    if acc_keys:
        panels["train accuracy (%)"] = [(k, percent(k, steps[k])) for k in acc_keys]
    val_keys = sorted(k for k in epochs if any(s in k for s in ("top1", "top5", "acc", "knn"))
                      and not k.startswith(("best_", "kept_", "start_")) and not k.endswith("_k"))
    if val_keys:
        panels["accuracy per epoch (%)"] = [(k, percent(k, epochs[k])) for k in val_keys]
    return panels


def plot_training_curves(log_path: str, out_png: str, dpi: int = 100) -> Dict[str, List[str]]:
    """Plot loss parts, lr and α_t against the optimizer step (plus per-epoch validation metrics
    when present) from `log.jsonl` into one PNG.

    Returns `{panel title: [keys drawn]}`; panels without data are left out.
    """
    import matplotlib  # lazy: the Agg backend is chosen right before pyplot is imported

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # lazy: after the backend is chosen

    panels = training_curve_panels(*read_log(log_path))
    if not panels:
        raise ValueError(f"{log_path}: no loss, lr, alpha or accuracy values to plot")
    n = len(panels)
    fig, axes = plt.subplots(n, 1, figsize=(7.0, 2.2 * n), dpi=dpi, squeeze=False)
    for ax, (title, series) in zip(axes[:, 0], panels.items()):
        for key, data in series:
            xs = sorted(data)
            ax.plot(xs, [data[x] for x in xs], label=key, linewidth=1.2, marker="." if len(xs) < 30 else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch" if title.endswith("per epoch (%)") else "step", fontsize=8)
        if title.endswith("(%)"):
            ax.set_ylabel("%", fontsize=8)
            ax.set_ylim(-2.0, 102.0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if title == "loss":
            vals = [v for _, d in series for v in d.values() if math.isfinite(v)]
            if vals and min(vals) > 0 and max(vals) / min(vals) > 50:
                ax.set_yscale("log")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return {title: [k for k, _ in series] for title, series in panels.items()}
