"""Does the pretext task teach the encoder anything about the moving object?

The true per-patch reconstruction loss of a pre-training checkpoint's pixel decoder (HPM journal
Eq. 3, under random masks at the config's ratio) on **moving** hidden patches (some voxel off the
clip's temporal median by more than `threshold`) and **static** ones, next to motion-blind
predictions: ``copy`` — the same place in the nearest time slot where it is *visible* (the
earlier on a tie), else the mean of the visible patches: the fair "copy from another frame" bar,
it sees what the model sees —; ``median`` — the clip's temporal median over *all* frames, an
oracle that reads hidden pixels —; ``mean`` — the clip's mean target. Static patches split into
``static_copyable`` (the place is visible at another time: ``copy`` is exact) and
``static_hidden`` (hidden at every time). Figures are means over (video, mask, hidden patch).
If the model's loss on moving patches is not clearly below ``copy``'s, the decoder does not place
the digit. The command line is `tools/pretext_check.py`.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from omegaconf import OmegaConf

import videohpm.data  # noqa: F401  (PyAV before decord)
from videohpm.engine.build import build_model
from videohpm.engine.checkpoint import read_checkpoint
from videohpm.evaluation.visualize import masked_patch_loss, unnormalize
from videohpm.masking import make_mask_generator
from videohpm.models import load_pretrained
from videohpm.models.patches import patchify
from videohpm.tasks.visualize import load_clip

__all__ = ["copy_from_visible", "clip_breakdown", "pretext_breakdown", "PREDICTIONS", "GROUPS"]

PREDICTIONS = ("model", "copy", "median", "mean")
GROUPS = ("moving", "static", "static_copyable", "static_hidden")


def _moving_tokens(model, x: torch.Tensor, threshold: float) -> torch.Tensor:
    pixels = unnormalize(x.float(), getattr(model, "input_mean", None), getattr(model, "input_std", None))
    median = pixels.median(dim=2, keepdim=True).values
    diff = (pixels - median).abs().amax(dim=1, keepdim=True).expand_as(pixels).contiguous()
    return patchify(diff, model.tubelet_size, model.patch_size).amax(dim=-1) > threshold  # [B, N]


def copy_from_visible(target: torch.Tensor, mask: torch.Tensor, grid: Sequence[int]):
    """The ``copy`` prediction of every token and whether it had a source.

    Args:
        target: `[B, N, P]` per-token targets, tokens time-major (`τ·H'·W' + h·W' + w`).
        mask: `[B, N]` bool, True = hidden.
        grid: `(T', H', W')`.

    Returns:
        `(pred [B, N, P], copied [B, N] bool)`: token `(τ, h, w)` takes the target of the visible
        token `(τ', h, w)`, `τ' ≠ τ`, with the smallest `|τ − τ'|` (the earlier on a tie) and
        ``copied`` is True; with none, the mean target of the sample's visible tokens.
    """
    B, N, P = target.shape
    T = int(grid[0])
    S = N // T
    tgt = target.view(B, T, S, P)
    vis = ~mask.view(B, T, S)
    visf = vis.unsqueeze(-1).to(target.dtype)
    fallback = (tgt * visf).sum((1, 2)) / visf.sum((1, 2)).clamp(min=1)  # [B, P]
    pred = fallback[:, None, None, :].expand(B, T, S, P).clone()
    copied = torch.zeros(B, T, S, dtype=torch.bool, device=target.device)
    for d in range(1, T):
        for step in (-d, d):  # the earlier slot first: it wins a tie
            lo, hi = max(0, -step), min(T, T - step)  # τ with τ + step inside [0, T)
            if lo >= hi:
                continue
            src_vis = vis[:, lo + step:hi + step]
            take = src_vis & ~copied[:, lo:hi]
            pred[:, lo:hi] = torch.where(take.unsqueeze(-1), tgt[:, lo + step:hi + step], pred[:, lo:hi])
            copied[:, lo:hi] |= take
    return pred.view(B, N, P), copied.view(B, N)


@torch.no_grad()
def clip_breakdown(model, x: torch.Tensor, masks: Sequence[torch.Tensor], threshold: float = 0.15):
    """Sums of each prediction's per-patch loss (Eq. 3) and the patch counts, per group, over the
    hidden patches of `x` `[B, C, T, H, W]` under each of `masks` (`[B, N]` bool, True = hidden).

    Returns `(sums, counts)`: `sums[prediction][group]` and `counts[group]`.
    """
    grid = tuple(model.grid(x))
    target = model.target(x)  # [B, N, P]
    median = x.median(dim=2, keepdim=True).values.expand_as(x).contiguous()
    per_token = {"median": (model.target(median) - target).pow(2).mean(-1),
                 "mean": (target.mean(dim=1, keepdim=True) - target).pow(2).mean(-1)}  # [B, N]
    moving = _moving_tokens(model, x, threshold)
    sums = {k: {g: 0.0 for g in GROUPS} for k in PREDICTIONS}
    counts = {g: 0 for g in GROUPS}
    for mask in masks:
        copy_pred, copied = copy_from_visible(target, mask, grid)
        losses = dict(per_token, copy=(copy_pred - target).pow(2).mean(-1))
        losses["model"] = torch.zeros_like(losses["mean"])
        losses["model"][mask] = masked_patch_loss(model, x, mask, target).reshape(-1).to(losses["mean"].dtype)
        groups = {"moving": mask & moving, "static": mask & ~moving,
                  "static_copyable": mask & ~moving & copied, "static_hidden": mask & ~moving & ~copied}
        for g, sel in groups.items():
            counts[g] += int(sel.sum())
            for k in PREDICTIONS:
                sums[k][g] += float(losses[k][sel].sum())
    return sums, counts


@torch.no_grad()
def pretext_breakdown(cfg, checkpoint: str, videos, num_masks: int = 4, threshold: float = 0.15,
                      seed: int = 0) -> Dict[str, Any]:
    """Mean per-patch loss of the model and of the motion-blind predictions, per group of hidden
    patches, over `videos` (paths) and `num_masks` random masks each."""
    weights = read_checkpoint(checkpoint)
    model = build_model(cfg)
    state = {k[len("model."):]: v for k, v in weights.model.items() if k.startswith("model.")} or weights.model
    report = load_pretrained(model, state, strict=False)
    if not report.ok:
        raise ValueError(f"checkpoint={checkpoint}: does not fit {cfg.model.name}:\n{report}")
    model.eval()
    data_cfg = OmegaConf.to_object(cfg.data)
    ratio = float(cfg.mask.kwargs.get("mask_ratio", 0.75))
    masker = make_mask_generator("random", mask_ratio=ratio)
    gen = torch.Generator().manual_seed(seed)
    sums = {k: {g: 0.0 for g in GROUPS} for k in PREDICTIONS}
    counts = {g: 0 for g in GROUPS}
    for path in videos:
        x = load_clip(path, data_cfg)[None]
        grid = (1, *model.grid(x))
        masks = [masker(grid, generator=gen) for _ in range(int(num_masks))]
        s, c = clip_breakdown(model, x, masks, threshold)
        for g in GROUPS:
            counts[g] += c[g]
            for k in PREDICTIONS:
                sums[k][g] += s[k][g]
    hidden = counts["moving"] + counts["static"]
    out: Dict[str, Any] = {"videos": len(videos), "masks": int(num_masks), "mask_ratio": ratio,
                           "norm_pix_loss": bool(getattr(model, "norm_pix_loss", False)),
                           "fraction_of_hidden": {g: counts[g] / max(1, hidden) for g in GROUPS}}
    for k in PREDICTIONS:
        out[k] = {g: sums[k][g] / max(1, counts[g]) for g in GROUPS}
    return out
