"""Does the pretext task teach the encoder anything about the moving object?

For a pre-training checkpoint and a few videos, the true per-patch reconstruction loss of the
pixel decoder (HPM journal Eq. 3, averaged over random masks at the config's ratio, as the
Fig. 2(b) map) is split between **moving** patches (the digit: some voxel differs from the
clip's temporal median by more than `threshold`) and **static** ones (the background), and put
next to the loss of two predictions that know nothing about motion:

- ``static``: the clip's temporal median (the background with the digit removed) — what a
  model gets that only copies the background from other frames;
- ``mean``: every patch predicted as the mean target of the clip (for raw pixels, a flat grey).

If the model's loss on moving patches is not clearly below the ``static`` prediction's, the
decoder does not place the digit, and the encoder need not learn where it goes. The command line
is `tools/pretext_check.py`.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from omegaconf import OmegaConf

import videohpm.data  # noqa: F401  (PyAV before decord)
from videohpm.engine.build import build_model
from videohpm.engine.checkpoint import read_checkpoint
from videohpm.tasks.visualize import load_clip
from videohpm.evaluation.visualize import average_loss_map, unnormalize
from videohpm.models import load_pretrained
from videohpm.models.patches import patchify

__all__ = ["pretext_breakdown"]


def _moving_tokens(model, x: torch.Tensor, threshold: float) -> torch.Tensor:
    pixels = unnormalize(x.float(), getattr(model, "input_mean", None), getattr(model, "input_std", None))
    median = pixels.median(dim=2, keepdim=True).values
    diff = (pixels - median).abs().amax(dim=1, keepdim=True).expand_as(pixels).contiguous()
    return patchify(diff, model.tubelet_size, model.patch_size).amax(dim=-1) > threshold  # [B, N]


@torch.no_grad()
def pretext_breakdown(cfg, checkpoint: str, videos, num_masks: int = 4, threshold: float = 0.15,
                      seed: int = 0) -> Dict[str, Any]:
    """Per-patch losses of the model and of the two motion-blind predictions, split by moving /
    static patches, averaged over `videos` (paths)."""
    weights = read_checkpoint(checkpoint)
    model = build_model(cfg)
    state = {k[len("model."):]: v for k, v in weights.model.items() if k.startswith("model.")} or weights.model
    report = load_pretrained(model, state, strict=False)
    if not report.ok:
        raise ValueError(f"checkpoint={checkpoint}: does not fit {cfg.model.name}:\n{report}")
    model.eval()
    data_cfg = OmegaConf.to_object(cfg.data)
    ratio = float(cfg.mask.kwargs.get("mask_ratio", 0.75))
    gen = torch.Generator().manual_seed(seed)
    sums = {k: {"moving": 0.0, "static": 0.0} for k in ("model", "static", "mean")}
    counts = {"moving": 0, "static": 0}
    for path in videos:
        x = load_clip(path, data_cfg)[None]
        loss = average_loss_map(model, x, num_masks=num_masks, mask_ratio=ratio, generator=gen)  # [1, N]
        target = model.target(x)
        median = x.median(dim=2, keepdim=True).values.expand_as(x).contiguous()
        static = (model.target(median) - target).pow(2).mean(-1)
        flat = (target.mean(dim=1, keepdim=True) - target).pow(2).mean(-1)
        moving = _moving_tokens(model, x, threshold)
        for name, value in (("model", loss), ("static", static), ("mean", flat)):
            sums[name]["moving"] += float(value[moving].sum())
            sums[name]["static"] += float(value[~moving].sum())
        counts["moving"] += int(moving.sum())
        counts["static"] += int((~moving).sum())
    out: Dict[str, Any] = {"videos": len(videos), "moving_fraction": counts["moving"] / max(1, sum(counts.values())),
                           "norm_pix_loss": bool(getattr(model, "norm_pix_loss", False))}
    for name, s in sums.items():
        out[name] = {k: s[k] / max(1, counts[k]) for k in s}
        total = s["moving"] + s["static"]
        out[name]["moving_share_of_loss"] = s["moving"] / total if total else 0.0
    return out


