"""The work behind `tools/visualize.py`: HPM journal Fig. 2 maps of one video or image for a
pre-training config and checkpoint (the maths and drawing: `videohpm.evaluation.visualize`).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Dict, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn

from videohpm.data import resolve
from videohpm.data.sampling import dense_indices
from videohpm.data.transforms import eval_transform, frames_to_video
from videohpm.data.video import VideoReader
from videohpm.engine.build import build_mask_generator, build_model, build_recipe_from_config
from videohpm.engine.checkpoint import CheckpointWeights, read_checkpoint, strip_prefix
from videohpm.evaluation.visualize import compute_visualization, render_grid_png, write_animation
from videohpm.methods import recipe_class
from videohpm.models import load_pretrained

__all__ = ["load_clip", "run_visualize"]


def load_clip(path: str, data_cfg: Any, start: int = 0) -> torch.Tensor:
    """A normalized clip `[C, T, H, W]` from a video file (dense frames at the config's sampling
    rate from `start`) or an image (`T = 1`), resized and centre-cropped like validation."""
    cfg = resolve(data_cfg)
    tf = eval_transform(cfg.input_size, cfg.short_side_size, cfg.mean, cfg.std)
    if os.path.splitext(path)[1].lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"):
        frames = np.asarray(Image.open(path).convert("RGB"))[None]
        return tf(frames_to_video(frames))
    with VideoReader(path, backend=cfg.backend, fallback=cfg.fallback_backend) as vr:
        n = int(vr.num_frames) - int(start)
        idx = dense_indices(n, cfg.num_frames, cfg.sampling_rate, start=0) + int(start)
        frames = vr.get_batch(idx)
    return tf(frames_to_video(frames))


def _token_sampler(cfg: DictConfig, model: nn.Module, gen: Any, weights: CheckpointWeights) -> Callable:
    """The learned sampler's `x → p: [1, N]` (AdaMAE's) with its trained weights (the recipe's
    `sampler.*` keys)."""
    sd = weights.model["model"] if isinstance(weights.model.get("model"), Mapping) else weights.model
    state = {k[len("sampler."):]: v for k, v in sd.items() if k.startswith("sampler.")}
    if not state:
        raise ValueError(f"checkpoint={weights.source}: no token sampler weights (sampler.*); they are in the "
                         "run's DeepSpeed checkpoints (checkpoint=<run folder> or <run>/checkpoints/<tag>), "
                         "not in model_final.pth")
    recipe = build_recipe_from_config(cfg, model, gen)
    recipe.sampler.load_state_dict(state)
    return recipe.eval().token_probs


def run_visualize(cfg: DictConfig, checkpoint: str, input_path: str, output_dir: str, progress: float = 1.0,
                  use_teacher: bool = True, num_loss_masks: int = 10, seed: int = 0, fmt: str = "gif",
                  start: int = 0) -> Dict[str, str]:
    """Fig. 2 maps of one video / image for a pre-training config + checkpoint; returns the files.

    The mask strategy is the config's (`mask.*`); HPM's teacher (saved with the checkpoint)
    predicts the loss that drives it unless `use_teacher=False` (then the student does). For a
    recipe with a `learned_sampler` (AdaMAE) the token sampler (part of the recipe, so read from
    the run's DeepSpeed checkpoint, not `model_final.pth`) gives the probability row and the
    scores of the mask.
    """
    learned = recipe_class(str(cfg.method.name)).learned_sampler
    weights = read_checkpoint(checkpoint, prefer_full_recipe=learned)
    model = build_model(cfg)
    if not hasattr(model, "decode"):
        raise ValueError(f"model.name: {cfg.model.name} is not a pre-training model (no decoder to visualize)")
    own = weights.model["model"] if learned and isinstance(weights.model.get("model"), Mapping) else weights.model
    own = {k: v for k, v in own.items() if not k.startswith("sampler.")}
    report = load_pretrained(model, strip_prefix(own, "model."), strict=False)
    if not report.ok:
        raise ValueError(f"checkpoint={weights.source}: does not fit {cfg.model.name}:\n{report}")
    teacher = None
    if use_teacher and weights.teacher:
        teacher = copy.deepcopy(model)
        teacher.load_state_dict(weights.teacher)
    gen = build_mask_generator(cfg)
    if gen is None:
        raise ValueError("mask.name: set a mask strategy (e.g. hpm) to visualize")
    sampler = _token_sampler(cfg, model, gen, weights) if learned else None
    x = load_clip(input_path, OmegaConf.to_object(cfg.data), start=start)
    vis = compute_visualization(model, x, gen, progress=progress, teacher=teacher, num_loss_masks=num_loss_masks,
                                seed=seed, sampler=sampler)
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(input_path))[0]
    png = os.path.join(output_dir, f"{stem}_p{progress:.2f}.png")
    anim = os.path.join(output_dir, f"{stem}_p{progress:.2f}.{fmt}")
    render_grid_png(vis, png)
    write_animation(vis, anim, scale=max(1, 160 // int(x.shape[-2])))  # small demo clips: enlarge (nearest)
    return {"png": png, "animation": anim}
