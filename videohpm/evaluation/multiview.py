"""Multi-clip × multi-crop testing (VideoMAE's protocol; HPM journal Tables 13–14).

Each test sample is one video with all of its views decoded at once (`videohpm.data`, whose
config sets the views per data set: SSv2 2 clips × 3 crops, K400 5 × 3):
`{"views": [V, C, T, H, W], "label", "video_id", "ok"}` with `V = clips × crops` in clip-major
order (view `v` = clip `v // crops`, crop `v % crops`). The classifier runs on every view; per
video the softmax of the views is averaged (:func:`~videohpm.evaluation.metrics.average_view_softmax`).

Distributed: ranks share the videos through `DistributedSampler(shuffle=False)`, which pads the
last round with repeats; predictions carry their dataset index, are gathered on every rank and
de-duplicated (:mod:`videohpm.evaluation.gather`) so that 1 and N ranks give the same numbers.
Broken videos (`ok=False`) are listed, never counted and never swapped for another video.

Outputs: `predictions.csv` (one row per video), `metrics.json`, and optionally VideoMAE V1's
per-rank `{rank}.txt` files (`final_test` format, read by its `merge`).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler
from tqdm import tqdm

from videohpm.distributed import get_rank, get_world_size, is_distributed, is_main_process
from videohpm.evaluation.gather import deduplicate, gather_arrays
from videohpm.evaluation.metrics import average_view_softmax, classification_metrics

__all__ = [
    "IndexedDataset",
    "build_test_loader",
    "MultiViewPredictions",
    "predict_multiview",
    "gather_predictions",
    "evaluate_multiview",
    "write_predictions_csv",
    "write_metrics_json",
    "write_videomae_txt",
]

logger = logging.getLogger(__name__)

class IndexedDataset(Dataset):
    """Adds the dataset index (`"index"`) to every sample dict, for de-duplication after gathering."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Dict[str, Any]:
        sample = self.dataset[i]
        if not isinstance(sample, dict):
            raise TypeError(f"test dataset sample {i} must be a dict with 'views', got {type(sample).__name__}")
        sample = dict(sample)
        sample["index"] = i
        return sample


def build_test_loader(dataset: Dataset, batch_size: int = 1, num_workers: int = 0,
                      pin_memory: bool = False, collate_fn: Optional[Any] = None) -> DataLoader:
    """Loader over `dataset` split across ranks without shuffling (padded, later de-duplicated).

    `collate_fn`: e.g. `videohpm.data.collate` (default: torch's `default_collate`)."""
    ds = IndexedDataset(dataset)
    if is_distributed():
        sampler = DistributedSampler(ds, num_replicas=get_world_size(), rank=get_rank(), shuffle=False,
                                     drop_last=False)
    else:
        sampler = SequentialSampler(ds)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=False, persistent_workers=False, collate_fn=collate_fn)


@dataclass
class MultiViewPredictions:
    """Per-video predictions (one rank's, or gathered and de-duplicated).

    Attributes:
        index: `[n]` dataset index of each video.
        video_ids: `n` ids.
        labels: `[n]` int64.
        ok: `[n]` bool; False = the video could not be decoded (not counted).
        probs: `[n, K]` float32, mean over views of the softmax.
        view_logits: `[n, V, K]` float32 per-view logits (only when asked for; VideoMAE format).
        num_crops: spatial crops per clip (view `v` = clip `v // num_crops`, crop `v % num_crops`).
        errors: `n` decode-error messages ("" for decodable videos).
    """

    index: np.ndarray
    video_ids: List[str]
    labels: np.ndarray
    ok: np.ndarray
    probs: np.ndarray
    view_logits: Optional[np.ndarray] = None
    num_crops: int = 1
    errors: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.view_logits.shape[1]) if self.view_logits is not None else int(self.extra.get("num_views", 0))

    @property
    def broken(self) -> List[Dict[str, str]]:
        """`[{"video_id", "error"}]` of the videos that could not be decoded."""
        errors = self.errors or [""] * len(self)
        return [{"video_id": v, "error": e} for v, ok, e in zip(self.video_ids, self.ok, errors) if not ok]

    def metrics(self) -> Dict[str, Any]:
        """top-1 / top-5 / mean per-class accuracy (percent) over the decodable videos."""
        good = self.ok.astype(bool)
        m: Dict[str, Any] = classification_metrics(self.probs[good], self.labels[good])
        m["num_broken"] = int((~good).sum())
        m["broken_videos"] = self.broken
        m["num_views"] = self.num_views
        return m

    def as_payload(self) -> Dict[str, Any]:
        return {"index": self.index, "video_ids": list(self.video_ids), "labels": self.labels, "ok": self.ok,
                "probs": self.probs, "view_logits": self.view_logits,
                "errors": list(self.errors) if self.errors else [""] * len(self)}


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_multiview(
    model: nn.Module,
    loader: Any,
    device: Optional[torch.device] = None,
    *,
    num_crops: int = 1,
    amp_dtype: Optional[torch.dtype] = None,
    max_views_per_forward: Optional[int] = None,
    keep_view_logits: bool = False,
    progress_bar: bool = True,
) -> MultiViewPredictions:
    """Run `model` on every view of every video this rank sees (no gathering).

    Args:
        model: classifier, `x: [b, C, T, H, W] -> logits [b, K]` (a DeepSpeed engine works too).
        loader: yields dicts with `views: [B, V, C, T, H, W]`, `label: [B]`, `video_id` (B
            strings), `ok: [B]` and `index: [B]` (see :func:`build_test_loader`).
        num_crops: crops per clip; only used to label views in VideoMAE's format.
        amp_dtype: autocast dtype (e.g. `torch.bfloat16` on GPUs); None = the model's dtype.
        max_views_per_forward: split the `B·V` views into forwards of at most this many (memory).
        keep_view_logits: keep `[n, V, K]` logits (needed by :func:`write_videomae_txt`).
    Returns:
        this rank's :class:`MultiViewPredictions` (padding repeats included).

    Per-batch outputs stay on the device and are copied to the host once at the end (no sync
    per batch beyond what the loader does).
    """
    if device is None:
        device = _model_device(model)
    was_training = model.training
    model.eval()
    collected = _PredictionBuffer(keep_view_logits)
    try:
        batches = tqdm(loader, desc="test", disable=not (progress_bar and is_main_process()), dynamic_ncols=True)
        for batch_number, batch in enumerate(batches):
            _check_test_batch(batch, batch_number, videos_seen=collected.num_videos)
            logits = _forward_views(model, batch["views"], device, amp_dtype, max_views_per_forward)
            collected.add(batch, logits)
    finally:
        model.train(was_training)
    return collected.predictions(num_crops)


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _check_test_batch(batch: Dict[str, Any], batch_number: int, videos_seen: int) -> None:
    """Fail on a batch without `views` / `label` / `video_id` or with views not `[B, V, C, T, H, W]`.

    A batch without `index` (a loader not built by :func:`build_test_loader`) gets the running
    position `videos_seen + arange(B)` in one process; with several ranks it is an error, since the
    gathered predictions could not be de-duplicated."""
    for key in ("views", "label", "video_id"):
        if key not in batch:
            raise KeyError(f"test batch {batch_number} has no {key!r} entry (keys: {sorted(batch)})")
    if "index" not in batch:
        if is_distributed():
            raise KeyError("test batches need an 'index' entry to de-duplicate across ranks; "
                           "build the loader with build_test_loader()")
        batch["index"] = torch.arange(videos_seen, videos_seen + batch["views"].shape[0])
    views = batch["views"]
    if views.dim() != 6:
        raise ValueError(f"batch['views'] must be [B, V, C, T, H, W], got {tuple(views.shape)}")


def _forward_views(model: nn.Module, views: torch.Tensor, device: torch.device, amp_dtype: Optional[torch.dtype],
                   max_views_per_forward: Optional[int]) -> torch.Tensor:
    """`views: [B, V, C, T, H, W]` → fp32 per-view logits `[B, V, K]`, in forwards of at most
    `max_views_per_forward` views. Without `amp_dtype` the views are cast to the model's dtype."""
    batch_size, num_views = views.shape[:2]
    clips = views.to(device, non_blocking=True).flatten(0, 1)  # [B·V, C, T, H, W]
    if clips.dtype != next(model.parameters()).dtype and amp_dtype is None:
        clips = clips.to(next(model.parameters()).dtype)
    chunk = max_views_per_forward or clips.shape[0]
    with _autocast(device, amp_dtype):
        out = torch.cat([model(clips[start:start + chunk]) for start in range(0, clips.shape[0], chunk)], dim=0)
    return out.float().view(batch_size, num_views, -1)


class _PredictionBuffer:
    """This rank's per-batch outputs, kept on the device and copied to the host once, by
    :meth:`predictions`."""

    def __init__(self, keep_view_logits: bool) -> None:
        self.keep_view_logits = keep_view_logits
        self.probs: List[torch.Tensor] = []
        self.view_logits: List[torch.Tensor] = []
        self.labels: List[torch.Tensor] = []
        self.ok: List[torch.Tensor] = []
        self.index: List[torch.Tensor] = []
        self.video_ids: List[str] = []
        self.errors: List[str] = []
        self.num_views = 0

    @property
    def num_videos(self) -> int:
        return sum(index.shape[0] for index in self.index)

    def add(self, batch: Dict[str, Any], logits: torch.Tensor) -> None:
        """One checked batch and its per-view `logits: [B, V, K]`."""
        batch_size, self.num_views = logits.shape[:2]
        self.probs.append(average_view_softmax(logits))
        if self.keep_view_logits:
            self.view_logits.append(logits)
        self.labels.append(torch.as_tensor(batch["label"]).view(-1).long())
        ok = batch.get("ok")
        self.ok.append(torch.ones(batch_size, dtype=torch.bool) if ok is None else torch.as_tensor(ok).view(-1).bool())
        self.index.append(torch.as_tensor(batch["index"]).view(-1).long())
        video_ids = batch["video_id"]
        video_ids = video_ids.tolist() if isinstance(video_ids, torch.Tensor) else video_ids
        self.video_ids.extend(str(video_id) for video_id in video_ids)
        errors = batch.get("error")
        self.errors.extend([""] * batch_size if errors is None else [str(message) for message in errors])

    def predictions(self, num_crops: int) -> MultiViewPredictions:
        num_classes = self.probs[0].shape[-1] if self.probs else 0
        return MultiViewPredictions(
            index=torch.cat(self.index).numpy() if self.index else np.zeros(0, np.int64),
            video_ids=self.video_ids,
            labels=torch.cat(self.labels).numpy() if self.labels else np.zeros(0, np.int64),
            ok=torch.cat(self.ok).numpy() if self.ok else np.zeros(0, bool),
            probs=torch.cat(self.probs).cpu().numpy() if self.probs else np.zeros((0, num_classes), np.float32),
            view_logits=(torch.cat(self.view_logits).cpu().numpy()
                         if self.keep_view_logits and self.view_logits else None),
            num_crops=int(num_crops),
            errors=self.errors,
            extra={"num_views": self.num_views},
        )


def gather_predictions(local: MultiViewPredictions) -> MultiViewPredictions:
    """All ranks' predictions, one entry per video (padding repeats removed), in dataset order."""
    payload = local.as_payload()
    payload["num_views"] = np.asarray([local.num_views], np.int64)
    allp = gather_arrays(payload)
    index = allp.pop("index")
    num_views = int(allp.pop("num_views").max())
    d = deduplicate(index, {"index": index, **allp})
    return MultiViewPredictions(
        index=d["index"], video_ids=d["video_ids"], labels=d["labels"], ok=d["ok"].astype(bool),
        probs=d["probs"], view_logits=d["view_logits"], num_crops=local.num_crops, errors=d["errors"],
        extra={"num_views": num_views},
    )


def evaluate_multiview(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    device: Optional[torch.device] = None,
    num_crops: int = 1,
    amp_dtype: Optional[torch.dtype] = None,
    max_views_per_forward: Optional[int] = None,
    keep_view_logits: bool = False,
    videomae_dir: Optional[str] = None,
    collate_fn: Optional[Any] = None,
) -> tuple:
    """Multi-view test of `model` on `dataset` across all ranks.

    Returns `(predictions, metrics)`, identical on every rank. With `videomae_dir`, every rank
    also writes its `{rank}.txt` in VideoMAE V1's `final_test` format there.
    """
    loader = build_test_loader(dataset, batch_size=batch_size, num_workers=num_workers,
                               pin_memory=device is not None and torch.device(device).type == "cuda",
                               collate_fn=collate_fn)
    local = predict_multiview(model, loader, device, num_crops=num_crops, amp_dtype=amp_dtype,
                              max_views_per_forward=max_views_per_forward,
                              keep_view_logits=keep_view_logits or videomae_dir is not None)
    if videomae_dir is not None:
        write_videomae_txt(local, videomae_dir, get_rank())
    preds = gather_predictions(local)
    if not keep_view_logits:
        preds.view_logits = None
    return preds, preds.metrics()


# --------------------------------------------------------------------------------- writers
def write_predictions_csv(preds: MultiViewPredictions, path: str, topk: int = 5,
                          class_names: Optional[Sequence[str]] = None) -> None:
    """One row per video: `video_id, label, ok, pred, top5_ids, top5_scores`.

    `top5_ids` / `top5_scores` are space-separated (highest first); scores are the averaged
    view probabilities. Broken videos keep their row with `ok=0` and empty predictions.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    k = min(topk, preds.probs.shape[1]) if preds.probs.ndim == 2 and preds.probs.shape[1] else 0
    order = np.argsort(-preds.probs, axis=1, kind="stable")[:, :k] if k else np.zeros((len(preds), 0), int)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        header = ["video_id", "label", "ok", "pred", f"top{k}_ids", f"top{k}_scores"]
        if class_names is not None:
            header.append("pred_name")
        w.writerow(header)
        for i in range(len(preds)):
            ok = bool(preds.ok[i])
            top = order[i].tolist() if ok else []
            row = [preds.video_ids[i], int(preds.labels[i]), int(ok), top[0] if top else "",
                   " ".join(str(c) for c in top),
                   " ".join(f"{preds.probs[i, c]:.6f}" for c in top)]
            if class_names is not None:
                row.append(class_names[top[0]] if top else "")
            w.writerow(row)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def write_metrics_json(metrics: Dict[str, Any], path: str) -> None:
    """`metrics` as indented JSON (NaN → null)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(metrics), f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def write_videomae_txt(local: MultiViewPredictions, out_dir: str, rank: int) -> str:
    """This rank's views in VideoMAE V1's `final_test` format, `{out_dir}/{rank}.txt`.

    Line 1 is `"{acc1}, {acc5}"` (view-level, percent; VideoMAE's `merge` skips it); then one
    line per view: `"{id} {logits as a Python list} {label} {chunk_nb} {split_nb}"`, where
    `chunk_nb` is the temporal clip and `split_nb` the spatial crop. Logits, not probabilities:
    `merge` applies the softmax itself. Broken videos are left out (VideoMAE would have
    swapped them for another video; we do not). Padding repeats are written as they were
    processed; `merge` drops them by `(id, chunk_nb, split_nb)`.
    """
    if local.view_logits is None:
        raise ValueError("write_videomae_txt needs per-view logits: predict with keep_view_logits=True")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{rank}.txt")
    crops = max(int(local.num_crops), 1)
    good = local.ok.astype(bool)
    lines: List[str] = []
    hits1 = hits5 = total = 0
    for i in np.flatnonzero(good):
        vid = local.video_ids[i]
        if any(c in vid for c in "[]\n") or vid != vid.strip() or " " in vid:
            raise ValueError(f"video id {vid!r} cannot be written in VideoMAE's format (no spaces or brackets)")
        label = int(local.labels[i])
        for v in range(local.view_logits.shape[1]):
            logit = local.view_logits[i, v]
            top = np.argsort(-logit, kind="stable")[:5]
            hits1 += int(top[0] == label)
            hits5 += int(label in top)
            total += 1
            lines.append(f"{vid} {[float(z) for z in logit]} {label} {v // crops} {v % crops}\n")
    with open(path, "w") as f:
        acc1 = 100.0 * hits1 / total if total else float("nan")
        acc5 = 100.0 * hits5 / total if total else float("nan")
        f.write(f"{acc1}, {acc5}\n")
        f.writelines(lines)
    return path
