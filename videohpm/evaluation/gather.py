"""Gather per-rank evaluation outputs and drop the repeats that `DistributedSampler` adds.

`torch.utils.data.DistributedSampler(shuffle=False, drop_last=False)` pads the index list with
its first entries so that every rank gets the same number of samples; after gathering, those
samples appear twice. Every sample therefore carries its dataset index, and
:func:`deduplicate` keeps the first occurrence of each index — results are identical on 1 and on
any number of ranks.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import torch
import torch.distributed as dist

from videohpm.distributed import all_gather_object, is_distributed

__all__ = ["gather_tensor", "gather_arrays", "deduplicate", "first_occurrence"]


def gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t: [n_r, ...]` of every rank along dim 0 (rank order), `n_r` may differ.

    Uses `all_gather` on tensors (padded to the largest `n_r`), so it runs on the tensor's own
    device — CUDA under NCCL, CPU under gloo — without pickling large feature matrices.
    """
    if not is_distributed():
        return t
    t = t.contiguous()
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    n_max = max(counts)
    if t.shape[0] < n_max:
        pad = t.new_zeros((n_max - t.shape[0], *t.shape[1:]))
        t = torch.cat((t, pad), dim=0)
    out = [torch.empty_like(t) for _ in counts]
    dist.all_gather(out, t)
    return torch.cat([o[:c] for o, c in zip(out, counts)], dim=0)


def gather_arrays(payload: Dict[str, Any]) -> Dict[str, Any]:
    """All-gather a dict of per-rank numpy arrays / lists and concatenate each entry (rank order).

    For small per-video payloads (ids are strings, so tensors alone would not do); pickled
    through `all_gather_object`, which works on gloo and NCCL alike.
    """
    parts: List[Dict[str, Any]] = all_gather_object(payload)
    out: Dict[str, Any] = {}
    for key in payload:
        values = [p[key] for p in parts if p[key] is not None]
        if not values:
            out[key] = None
        elif isinstance(values[0], np.ndarray):
            # a rank that saw no sample (more ranks than samples) sends a 0-row array whose
            # trailing shape may be unknown: leave it out
            full = [v for v in values if v.shape[0] > 0]
            out[key] = np.concatenate(full, axis=0) if full else values[0]
        else:
            out[key] = [v for part in values for v in part]
    return out


def first_occurrence(index: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct value of `index: [n]`, sorted by value.

    `DistributedSampler` interleaves ranks (`indices[rank::world]`), so sorting by the dataset
    index also restores the data set's order.
    """
    index = np.asarray(index)
    if index.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {index.shape}")
    _, pos = np.unique(index, return_index=True)
    return pos


def deduplicate(index: np.ndarray, arrays: Dict[str, Any]) -> Dict[str, Any]:
    """Keep one entry per dataset index in every array/list of `arrays` (first occurrence)."""
    pos = first_occurrence(index)
    out: Dict[str, Any] = {}
    for key, v in arrays.items():
        if v is None:
            out[key] = None
        elif isinstance(v, np.ndarray):
            out[key] = v[pos]
        elif isinstance(v, torch.Tensor):
            out[key] = v[torch.as_tensor(pos, device=v.device)]
        elif isinstance(v, Sequence):
            out[key] = [v[i] for i in pos]
        else:
            raise TypeError(f"deduplicate: entry {key!r} has unsupported type {type(v).__name__}")
    return out
