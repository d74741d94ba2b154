"""Frozen encoder features: what is pooled per video, and the folder format
(`videohpm.tasks.extract_features` writes it, :func:`load_features` reads it back).

Each video gives one clip through the validation transform (centre clip and centre crop, as
`tools/knn.py` and the `train.knn_every` metric read it), the checkpoint's encoder (the student,
or HPM's EMA teacher θ_t of the HPM paper's Eq. 1 with `teacher=True`) runs on all of its tokens,
and `pool` selects what is saved per video:

- `mean`: `[D]`, the mean over all tokens — exactly the feature `tools/knn.py` ℓ2-normalizes
  (:func:`videohpm.evaluation.knn.mean_pooled_features`; for a fine-tuned classifier that is its
  `fc_norm`-ed pooled feature, the head's input);
- `time`: `[T', D]`, the mean over the `H'·W'` tokens of each time slice (tubelet), slices in
  temporal order — what motion classes (SSv2's left vs right) need;
- `tokens`: `[N, D]`, every token, time-major (`τ·H'·W' + h·W' + w`, docs/ARCHITECTURE.md).

Features are the encoder's output after its final norm, in float32, not normalized. Folder:
`features-r<rank>-<k>.npy` shards (`[rows, *shape]`, each rank writes the videos it extracted),
`index.csv` (one line per video in input order: `video, path, status, error, label, shard, row`;
broken: `status=broken`, no shard, no row) and `features.json` (pool, shape, model, checkpoint).
"""
from __future__ import annotations

import csv
import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from videohpm.evaluation.knn import mean_pooled_features

__all__ = ["POOLS", "INDEX_FIELDS", "unwrap_encoder", "token_functions", "pool_features", "load_features"]

POOLS = ("mean", "time", "tokens")
INDEX_FIELDS = ("video", "path", "status", "error", "label", "shard", "row")


def unwrap_encoder(model: nn.Module) -> nn.Module:
    """The `MaskedAutoencoder` / classifier inside a recipe or DeepSpeed engine (`.module`, `.model`)."""
    m = model
    for attr in ("module", "model"):
        while hasattr(m, attr) and isinstance(getattr(m, attr), nn.Module) and not hasattr(m, "encode"):
            m = getattr(m, attr)
    return m


def token_functions(model: nn.Module) -> Tuple[Callable[[torch.Tensor], torch.Tensor],
                                               Callable[[torch.Tensor], torch.Tensor]]:
    """`(tokens_fn, mean_fn)`: `x [B, C, T, H, W] -> [B, N, D]` (all tokens after the encoder's
    final norm) and `x -> [B, D]` (the `tools/knn.py` feature) of a `MaskedAutoencoder` (or a
    recipe / DeepSpeed engine around one) or a `VideoClassifier`."""
    m = unwrap_encoder(model)
    if hasattr(m, "encode"):
        return (lambda x: m.patch_latents(m.encode(x))), mean_pooled_features(model)
    if hasattr(m, "encoder") and hasattr(m, "forward_features"):
        return m.encoder, mean_pooled_features(model)
    raise TypeError(f"{type(model).__name__}: no encode() or encoder to take features from")


def pool_features(tokens: torch.Tensor, grid: Sequence[int], pool: str) -> torch.Tensor:
    """`tokens [B, N, D]` on the token grid `(T', H', W')` → `[B, D]` (mean), `[B, T', D]` (time)
    or `[B, N, D]` (tokens)."""
    if pool == "tokens":
        return tokens
    if pool == "mean":
        return tokens.mean(dim=1)
    if pool == "time":
        t, h, w = (int(g) for g in grid)
        if tokens.shape[1] != t * h * w:
            raise ValueError(f"{tokens.shape[1]} tokens do not fill the grid {tuple(grid)}")
        return tokens.view(tokens.shape[0], t, h * w, tokens.shape[-1]).mean(dim=2)
    raise ValueError(f"--pool: {pool!r} is not one of {POOLS}")


def load_features(out_dir: str) -> Tuple[np.ndarray, List[Dict[str, str]]]:
    """`(features [n_ok, *shape], rows)`: the features of the decodable videos of a
    `tools/extract_features.py` folder in input order, and their `index.csv` rows (`label` is ""
    where unknown)."""
    with open(os.path.join(out_dir, "index.csv"), newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    shards: Dict[str, np.ndarray] = {}
    out = []
    for r in rows:
        if r["shard"] not in shards:
            shards[r["shard"]] = np.load(os.path.join(out_dir, r["shard"]), mmap_mode="r")
        out.append(np.asarray(shards[r["shard"]][int(r["row"])]))
    return (np.stack(out) if out else np.zeros((0,), np.float32)), rows
