"""Frozen encoder features of a checkpoint written to disk (`tools/extract_features.py`).

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

Features are the encoder's output after its final norm, in float32, not normalized.

Output folder: `features-r<rank>-<k>.npy` shards (`[rows, *shape]`, each rank writes the videos
it extracted), `index.csv` (one line per video in input order: `video, path, status, error,
label, shard, row`; broken videos have `status=broken`, no shard and no row) and
`features.json` (pool, shape, model, checkpoint). :func:`load_features` reads them back.
Ranks take the videos `rank, rank + world, ...` (no padding, so no repeats to drop).
"""
from __future__ import annotations

import csv
import json
import logging
import os
from contextlib import nullcontext
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from videohpm import distributed as vdist
from videohpm.data import resolve
from videohpm.data.config import build_eval_dataset
from videohpm.data.video import VideoDecodeError
from videohpm.evaluation.knn import mean_pooled_features
from videohpm.evaluation.predict import collect_videos
from videohpm.evaluation.runner import _amp_dtype, load_encoder
from videohpm.models.export import built_name

__all__ = ["POOLS", "token_functions", "pool_features", "FeatureClips", "held_features", "run_extract",
           "load_features"]

log = logging.getLogger(__name__)

POOLS = ("mean", "time", "tokens")
INDEX_FIELDS = ("video", "path", "status", "error", "label", "shard", "row")


def _unwrap(model: nn.Module) -> nn.Module:
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
    m = _unwrap(model)
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


class FeatureClips(Dataset):
    """`{"video", "index", "ok", "error"}` of every video of `base` (a validation
    :class:`~videohpm.data.datasets.VideoClipDataset`): its sampler and transform, but a video
    that cannot be decoded is reported (`ok=False`, zero clip, the reason) instead of being
    replaced by another one."""

    def __init__(self, base: Any, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        index = self.indices[i]
        try:
            clip = self.base.transform(self.base.decode_clip(index))
            return {"video": torch.as_tensor(clip), "index": index, "ok": True, "error": ""}
        except (VideoDecodeError, OSError) as e:
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            log.warning("video %s is broken (%s); reported, no features", self.base.videos.paths[index], reason)
            return {"video": None, "index": index, "ok": False, "error": str(reason)}


def _collate(batch: List[Dict[str, Any]], shape: Tuple[int, ...]) -> Dict[str, Any]:
    return {"video": torch.stack([b["video"] if b["ok"] else torch.zeros(shape) for b in batch]),
            "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
            "ok": torch.tensor([b["ok"] for b in batch], dtype=torch.bool),
            "error": [b["error"] for b in batch]}


class _ShardWriter:
    """Rows of one rank into `features-r<rank>-<k>.npy` files of at most `rows` rows each
    (`rows=0`: as many as fit in 256 MiB)."""

    def __init__(self, out_dir: str, rank: int, rows: int) -> None:
        self.out, self.rank, self.rows = out_dir, rank, int(rows)
        self.buf: List[np.ndarray] = []
        self.count = 0
        self.written: List[str] = []

    def _name(self) -> str:
        return f"features-r{self.rank:03d}-{len(self.written):05d}.npy"

    def add(self, feats: np.ndarray) -> List[Tuple[str, int]]:
        """Append `feats [b, ...]`; returns `(shard, row)` of each."""
        if self.rows <= 0:
            self.rows = max(1, (256 << 20) // max(1, feats[0].nbytes))
        where = []
        for f in feats:
            where.append((self._name(), len(self.buf)))
            self.buf.append(f)
            if len(self.buf) >= self.rows:
                self.flush()
        return where

    def flush(self) -> None:
        if self.buf:
            path = os.path.join(self.out, self._name())
            with open(path, "xb") as f:  # "x": never overwrite
                np.save(f, np.stack(self.buf))
            self.written.append(os.path.basename(path))
            self.buf = []


def held_features(out_dir: str) -> List[str]:
    """The files of an earlier extraction that `out_dir` holds (index, metadata, shards), sorted."""
    if not os.path.isdir(out_dir):
        return []
    return sorted(f for f in os.listdir(out_dir)
                  if f in ("index.csv", "features.json") or (f.startswith("features-") and f.endswith(".npy")))


def _check_output_dir(out_dir: str, overwrite: bool) -> List[str]:
    taken = held_features(out_dir)
    if taken and not overwrite:
        raise FileExistsError(f"--output-dir {out_dir}: holds features already ({', '.join(taken[:3])}); "
                              "pass --overwrite to replace them, or choose another folder")
    return taken


@torch.no_grad()
def run_extract(
    cfg: Any,
    checkpoint: Optional[str],
    inputs: Sequence[str],
    output_dir: str,
    *,
    pool: str = "mean",
    teacher: bool = False,
    data_root: Optional[str] = None,
    batch_size: Optional[int] = None,
    shard_rows: int = 0,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Write the features of `inputs` (videos, folders, lists: see
    :func:`videohpm.evaluation.predict.collect_videos`) into `output_dir` (all ranks).

    Args:
        checkpoint: any checkpoint `tools/test.py` reads (None: the seeded random initialisation).
        teacher: the EMA teacher saved with the checkpoint instead of the student.
        data_root: prefix of relative list paths (default `data.data_root`).
        shard_rows: videos per `.npy` shard (0: up to 256 MiB per shard).
        overwrite: replace the features `output_dir` holds (removed once the model is loaded).
    Returns:
        `features.json`'s content (the same on every rank). When no video could be decoded,
        no file is written (`num_broken == num_videos`), so a rerun is not blocked.
    Raises:
        ValueError / FileNotFoundError / FileExistsError naming the option, input or folder, before
        anything is written.
    """
    if pool not in POOLS:
        raise ValueError(f"--pool: {pool!r} is not one of {POOLS}")
    data_cfg = resolve(OmegaConf.to_object(cfg.data))
    if data_cfg.kind != "video":
        raise ValueError(f"data.kind={data_cfg.kind!r}: tools/extract_features.py reads videos")
    videos = collect_videos(inputs, data_cfg.data_root if data_root is None else data_root)
    taken = _check_output_dir(output_dir, overwrite)
    device = vdist.init_distributed(cfg.train.dist_backend or None)
    rank, world = vdist.get_rank(), vdist.get_world_size()
    model = load_encoder(cfg, checkpoint, teacher=teacher).to(device)
    tokens_fn, mean_fn = token_functions(model)
    vdist.barrier()  # every rank checked the folder before any rank writes into it
    if rank == 0:
        for name in taken:  # --overwrite: the old extraction goes once the checks have passed
            os.remove(os.path.join(output_dir, name))
    vdist.barrier()
    os.makedirs(output_dir, exist_ok=True)
    base = build_eval_dataset(data_cfg, videos, "val", require_labels=False)
    shape = (3, int(data_cfg.num_frames), int(data_cfg.input_size), int(data_cfg.input_size))
    mine = FeatureClips(base, range(rank, len(videos), world))
    loader = DataLoader(mine, batch_size=int(batch_size or cfg.train.batch_size), shuffle=False,
                        num_workers=int(data_cfg.num_workers), collate_fn=partial(_collate, shape=shape),
                        pin_memory=device.type == "cuda")
    amp = _amp_dtype(str(cfg.train.precision), device)
    ctx = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    writer = _ShardWriter(output_dir, rank, shard_rows)
    records: List[Dict[str, Any]] = []
    row_shape: Optional[List[int]] = None
    for batch in tqdm(loader, desc=f"features ({pool})", disable=not vdist.is_main_process(), dynamic_ncols=True):
        x = batch["video"].to(device, non_blocking=True)
        with ctx:
            if pool == "mean":
                f = mean_fn(x)
            else:
                f = pool_features(tokens_fn(x), _unwrap(model).grid(x), pool)
        f = f.float().cpu().numpy()
        ok = batch["ok"].numpy()
        row_shape = list(f.shape[1:])
        where = writer.add(f[ok]) if ok.any() else []
        it = iter(where)
        for j, index in enumerate(batch["index"].tolist()):
            shard, row = next(it) if ok[j] else ("", "")
            lab = int(videos.labels[index])
            records.append({"index": index, "video": str(videos.names[index]), "path": str(videos.paths[index]),
                            "status": "ok" if ok[j] else "broken", "error": batch["error"][j],
                            "label": lab if lab >= 0 else "", "shard": shard, "row": row})
    writer.flush()
    parts = vdist.all_gather_object({"records": records, "shape": row_shape, "shards": writer.written})
    allrec = sorted((r for p in parts for r in p["records"]), key=lambda r: r["index"])
    shapes = [p["shape"] for p in parts if p["shape"] is not None]
    meta = {
        "pool": pool, "shape": shapes[0] if shapes else None, "dtype": "float32",
        "num_videos": len(allrec), "num_broken": sum(r["status"] != "ok" for r in allrec),
        "shards": sorted(s for p in parts for s in p["shards"]), "model": built_name(_unwrap(model)),
        "checkpoint": None if checkpoint is None else os.path.abspath(checkpoint), "teacher": teacher,
        "world_size": world, "num_frames": int(data_cfg.num_frames), "input_size": int(data_cfg.input_size),
        "sampling": str(data_cfg.finetune_sampling),
    }
    if vdist.is_main_process() and meta["num_broken"] < meta["num_videos"]:
        with open(os.path.join(output_dir, "index.csv"), "x", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(INDEX_FIELDS), extrasaction="ignore")
            w.writeheader()
            w.writerows(allrec)
        with open(os.path.join(output_dir, "features.json"), "x", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
    vdist.barrier()
    return meta


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
