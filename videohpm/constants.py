"""Constants shared by the data pipeline and the models (a bottom-layer module: no imports).

`IMAGENET_MEAN` / `IMAGENET_STD`: the RGB normalisation of VideoMAE, MAE and timm's ViTs, in
[0, 1] units. The loaders normalise clips with it (`videohpm.data.transforms`), the models undo
it for pixel targets and teachers (`videohpm.models.patches`, `.targets`), and exports write it
into the model card (`videohpm.models.formats`).
"""
from __future__ import annotations

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
