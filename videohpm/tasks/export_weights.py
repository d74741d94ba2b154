"""What `tools/export.py` writes beside the weights: the Hugging Face `preprocessor_config.json`
that makes `VideoMAEImageProcessor` prepare frames as the run's test view does. The weights come
from `videohpm.tasks.weights.load_for_export` and go out through
`videohpm.models.formats.write_export`.
"""
from __future__ import annotations

from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from videohpm.data import resolve

__all__ = ["hf_processor_config"]


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
