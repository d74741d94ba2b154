"""The work behind `tools/extract_features.py`: frozen encoder features of a checkpoint written
to disk in the folder format of `videohpm.evaluation.features` (which also reads them back).

Each video gives one clip through the validation transform; a video that cannot be decoded is
reported in `index.csv` (`status=broken`), never replaced. Ranks take the videos `rank, rank +
world, ...` (no padding, so no repeats to drop) and write their own `.npy` shards.
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
from videohpm.data import build_eval_dataset, data_format, resolve
from videohpm.data.video import VideoDecodeError
from videohpm.evaluation.features import INDEX_FIELDS, POOLS, pool_features, token_functions, unwrap_encoder
from videohpm.models.formats import built_name
from videohpm.tasks.videos import collect_videos
from videohpm.tasks.weights import eval_amp_dtype, load_encoder

__all__ = ["FeatureClips", "held_features", "run_extract"]

log = logging.getLogger(__name__)


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
    :func:`videohpm.tasks.videos.collect_videos`) into `output_dir` (all ranks).

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
    if not data_format(data_cfg.kind).source_is_list:
        raise ValueError(f"data.kind={data_cfg.kind!r}: tools/extract_features.py reads videos")
    videos = collect_videos(inputs, data_cfg.data_root if data_root is None else data_root)
    taken = _check_output_dir(output_dir, overwrite)
    device = vdist.init_distributed(cfg.train.dist_backend or None)
    model = load_encoder(cfg, checkpoint, teacher=teacher).to(device)
    fns = token_functions(model)  # a model without an encoder fails before the folder is touched
    _clear_output_dir(output_dir, taken)
    base = build_eval_dataset(data_cfg, videos, "val", require_labels=False)
    shape = (3, int(data_cfg.num_frames), int(data_cfg.input_size), int(data_cfg.input_size))
    rank = vdist.get_rank()
    loader = DataLoader(FeatureClips(base, range(rank, len(videos), vdist.get_world_size())),
                        batch_size=int(batch_size or cfg.train.batch_size), shuffle=False,
                        num_workers=int(data_cfg.num_workers), collate_fn=partial(_collate, shape=shape),
                        pin_memory=device.type == "cuda")
    writer = _ShardWriter(output_dir, rank, shard_rows)
    amp = eval_amp_dtype(str(cfg.train.precision), device)
    records, row_shape = _extract(model, fns, loader, videos, pool, writer, amp)
    writer.flush()
    parts = vdist.all_gather_object({"records": records, "shape": row_shape, "shards": writer.written})
    allrec = sorted((r for p in parts for r in p["records"]), key=lambda r: r["index"])
    meta = _metadata(parts, allrec, pool, data_cfg)
    meta.update(model=built_name(unwrap_encoder(model)), teacher=teacher,
                checkpoint=None if checkpoint is None else os.path.abspath(checkpoint))
    if vdist.is_main_process() and meta["num_broken"] < meta["num_videos"]:
        _write_index(output_dir, allrec, meta)
    vdist.barrier()
    return meta


def _metadata(parts: List[Dict[str, Any]], records: List[Dict[str, Any]], pool: str, data_cfg: Any
              ) -> Dict[str, Any]:
    """`features.json` of the gathered ranks' `parts` (the model and checkpoint keys are the
    caller's), keys in the file's order."""
    shapes = [p["shape"] for p in parts if p["shape"] is not None]
    return {
        "pool": pool, "shape": shapes[0] if shapes else None, "dtype": "float32",
        "num_videos": len(records), "num_broken": sum(r["status"] != "ok" for r in records),
        "shards": sorted(s for p in parts for s in p["shards"]), "model": None, "checkpoint": None,
        "teacher": None, "world_size": vdist.get_world_size(), "num_frames": int(data_cfg.num_frames),
        "input_size": int(data_cfg.input_size), "sampling": str(data_cfg.finetune_sampling),
    }


def _clear_output_dir(output_dir: str, taken: Sequence[str]) -> None:
    """`--overwrite`: the old extraction goes once every rank has checked the folder (collective)."""
    vdist.barrier()  # every rank checked the folder before any rank writes into it
    if vdist.get_rank() == 0:
        for name in taken:
            os.remove(os.path.join(output_dir, name))
    vdist.barrier()
    os.makedirs(output_dir, exist_ok=True)


def _extract(model: nn.Module, fns: Tuple[Callable, Callable], loader: DataLoader, videos: Any, pool: str,
             writer: _ShardWriter, amp: Optional[torch.dtype]) -> Tuple[List[Dict[str, Any]], Optional[List[int]]]:
    """This rank's features (`fns`: :func:`token_functions` of `model`) into `writer`; returns its
    `index.csv` records and the row shape."""
    device = next(model.parameters()).device
    tokens_fn, mean_fn = fns
    ctx = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    records: List[Dict[str, Any]] = []
    row_shape: Optional[List[int]] = None
    for batch in tqdm(loader, desc=f"features ({pool})", disable=not vdist.is_main_process(), dynamic_ncols=True):
        x = batch["video"].to(device, non_blocking=True)
        with ctx:
            if pool == "mean":
                f = mean_fn(x)
            else:
                f = pool_features(tokens_fn(x), unwrap_encoder(model).grid(x), pool)
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
    return records, row_shape


def _write_index(output_dir: str, records: List[Dict[str, Any]], meta: Dict[str, Any]) -> None:
    """`index.csv` and `features.json` (rank 0; never over existing files)."""
    with open(os.path.join(output_dir, "index.csv"), "x", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(INDEX_FIELDS), extrasaction="ignore")
        w.writeheader()
        w.writerows(records)
    with open(os.path.join(output_dir, "features.json"), "x", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
