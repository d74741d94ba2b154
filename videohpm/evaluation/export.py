"""The work behind `tools/export.py`: a checkpoint's weights in the model of a run config, every
key checked, ready for `videohpm.models.export.write_export`; and the Hugging Face
`preprocessor_config.json` that makes `VideoMAEImageProcessor` prepare frames as the run's test
view does."""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from videohpm.data import resolve

from videohpm.engine.build import build_model
from videohpm.evaluation.runner import read_checkpoint
from videohpm.models import load_pretrained

__all__ = ["load_for_export", "hf_processor_config"]

log = logging.getLogger(__name__)


def _strip_recipe_prefix(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Recipe-level keys of a DeepSpeed checkpoint (`model.encoder...`) to model-level ones."""
    if sd and all(k.startswith("model.") for k in sd):
        return {k[len("model."):]: v for k, v in sd.items()}
    return dict(sd)


def load_for_export(cfg: DictConfig, checkpoint: str, teacher: bool = False) -> nn.Module:
    """The model of `cfg` with the weights of `checkpoint` (the student, or with `teacher` the
    EMA teacher), in eval mode.

    Every model key must come from the checkpoint and every checkpoint key must land in the
    model (an export of half-random weights would be worse than none); a linear probe's
    recipe-level weights (its BatchNorm + head live outside the model) and a time-pooling head
    (LP-FT's) are refused.

    Raises:
        ValueError naming `checkpoint=` and the keys.
    """
    weights = read_checkpoint(checkpoint)
    sd = weights.teacher if teacher else weights.model
    if sd is None:
        raise ValueError(f"checkpoint={weights.source}: no EMA teacher saved (an HPM or ema_features run has one)")
    if str(cfg.method.name) == "linear_probe":
        raise ValueError("method.name=linear_probe: its BatchNorm + head live outside the model and have no slot "
                         "in the export formats; export the pre-trained encoder instead")
    if cfg.model.kwargs.get("time_pooling"):
        raise ValueError("model.kwargs.time_pooling: its head (per-slice features, feat_norm, [C, T'·D]) has no slot "
                         "in the export formats; export the pre-trained encoder instead")
    model = build_model(cfg)
    try:
        report = load_pretrained(model, _strip_recipe_prefix(sd), strict=True)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"checkpoint={weights.source}: does not fit model {cfg.model.name} "
                         f"(model.kwargs as in the run's config?):\n{e}") from None
    log.info("loaded %s into %s (%d tensors)", weights.source, cfg.model.name, len(report.loaded))
    return model.eval()


def hf_processor_config(cfg: DictConfig) -> Dict[str, Any]:
    """`preprocessor_config.json` of a `transformers.VideoMAEImageProcessor` that prepares frames as
    the run's test view (`videohpm.data.transforms.MultiViewTransform` with one crop): the short
    side resized to `data.input_size` (bilinear, antialiased), the centre `input_size²` crop,
    `/255`, then `(x - data.mean) / data.std`.

    Choosing the frames stays the caller's: the test view takes `data.num_frames` frames at stride
    `data.sampling_rate` (`videohpm.data.sampling.multiview_indices` with one clip).
    """
    data = resolve(OmegaConf.to_object(cfg.data))
    s = int(data.input_size)
    return {
        "image_processor_type": "VideoMAEImageProcessor",
        "do_resize": True, "size": {"shortest_edge": s}, "resample": 2,  # PIL.Image.BILINEAR
        "do_center_crop": True, "crop_size": {"height": s, "width": s},
        "do_rescale": True, "rescale_factor": 1.0 / 255.0,
        "do_normalize": True, "image_mean": [float(m) for m in data.mean], "image_std": [float(v) for v in data.std],
    }
