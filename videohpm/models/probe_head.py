"""The probe head file: a linear probe fitted on frozen time-slice features, as a classifier head.

The time-keeping probe (:mod:`videohpm.evaluation.probe`) is ``softmax(W (z − μ) / σ + b)`` on
``z = vec(F) ∈ R^{T'·D}``; a :class:`~videohpm.models.classifier.VideoClassifier` built with
``time_pooling=True`` computes exactly that with ``feat_norm.{mean,std} = μ, σ`` and
``head.{weight,bias} = W, b``. The file holds those four tensors under those names, so loading
it makes the classifier's step-0 prediction the probe's (LP-FT: fine-tuning starts from the
probe, not from a random head).

Format: a ``.safetensors`` file (no pickle) with float32 tensors ``head.weight [C, T'·D]``,
``head.bias [C]``, ``feat_norm.mean [T'·D]``, ``feat_norm.std [T'·D]`` and string metadata
``format = videohpm-probe-head``, ``version = 1``, ``pool = time``, ``num_slices = T'``,
``embed_dim = D``, ``num_classes = C`` (plus what the writer adds: λ, validation top-1 …).
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Tuple

import torch
from torch import nn

__all__ = ["PROBE_HEAD_FORMAT", "PROBE_HEAD_KEYS", "write_probe_head", "read_probe_head", "load_probe_head"]

PROBE_HEAD_FORMAT = "videohpm-probe-head"
PROBE_HEAD_KEYS = ("head.weight", "head.bias", "feat_norm.mean", "feat_norm.std")


def write_probe_head(path: str, tensors: Mapping[str, torch.Tensor], num_slices: int, embed_dim: int,
                     info: Mapping[str, object] = ()) -> str:
    """Write a probe head file (module docstring); `tensors` holds :data:`PROBE_HEAD_KEYS`,
    `info` more metadata (stringified). Shapes are checked before anything is written."""
    from safetensors.torch import save_file  # lazy: a heavy optional import, only writers need it

    out = {k: torch.as_tensor(tensors[k]).detach().to(torch.float32).contiguous().cpu() for k in PROBE_HEAD_KEYS}
    c, f = out["head.weight"].shape
    if f != num_slices * embed_dim or any(out[k].shape != (n,) for k, n in
                                          (("head.bias", c), ("feat_norm.mean", f), ("feat_norm.std", f))):
        raise ValueError(f"probe head: shapes {[tuple(v.shape) for v in out.values()]} do not fit "
                         f"{num_slices} slices × {embed_dim} dims")
    meta = {str(k): str(v) for k, v in dict(info).items()}
    meta.update(format=PROBE_HEAD_FORMAT, version="1", pool="time", num_slices=str(num_slices),
                embed_dim=str(embed_dim), num_classes=str(c))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    save_file(out, tmp, metadata=meta)
    os.replace(tmp, path)
    return path


def read_probe_head(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """`(tensors, metadata)` of a probe head file; ValueError naming the file for anything else
    (a missing file, another format, a missing tensor)."""
    from safetensors import safe_open  # lazy: a heavy optional import, only probe heads need it

    if not os.path.isfile(path):
        raise ValueError(f"probe head {path}: no such file (written by tools/probe.py or tools/few_labels.py)")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error for a damaged file)
        raise ValueError(f"probe head {path}: not a readable .safetensors file ({e})") from None
    if meta.get("format") != PROBE_HEAD_FORMAT:
        raise ValueError(f"probe head {path}: not a probe head file (metadata format={meta.get('format')!r})")
    missing = [k for k in PROBE_HEAD_KEYS if k not in tensors]
    if missing:
        raise ValueError(f"probe head {path}: tensors {missing} are missing")
    return tensors, meta


def load_probe_head(model: nn.Module, path: str) -> Dict[str, str]:
    """Copy a probe head file into `model`'s ``head`` and ``feat_norm`` (a ``VideoClassifier``
    with ``time_pooling=True``); returns the file's metadata. Raises ValueError naming the
    mismatch (pooling, time slices, feature width, class count) before anything is copied."""
    tensors, meta = read_probe_head(path)
    if getattr(model, "feat_norm", None) is None:
        raise ValueError(f"probe head {path}: the model has no time-pooling head (model.kwargs.time_pooling=true)")
    if int(meta.get("num_slices", -1)) != int(model.num_slices):
        raise ValueError(f"probe head {path}: fitted on {meta.get('num_slices')} time slices, the model reads "
                         f"{model.num_slices} (model.kwargs.num_frames / tubelet_size)")
    own = model.state_dict()
    for k in PROBE_HEAD_KEYS:
        if tuple(tensors[k].shape) != tuple(own[k].shape):
            raise ValueError(f"probe head {path}: {k} has shape {tuple(tensors[k].shape)}, the model's is "
                             f"{tuple(own[k].shape)} (classes: model.kwargs.num_classes; width: embed_dim)")
    with torch.no_grad():
        for k in PROBE_HEAD_KEYS:
            own[k].copy_(tensors[k].to(own[k].dtype))
    return meta
