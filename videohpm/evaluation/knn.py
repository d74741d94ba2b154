"""Weighted k-NN classification on frozen features (HPM journal Tables 1, 4, 5; supplement A.1).

Protocol borrowed from DINO, as the papers state: features are the encoder tokens mean-pooled
(supplement §A: "features globally averaged from the encoder output") and ℓ2-normalized; the
similarity is the cosine; each of the k nearest training samples votes for its class with
weight `exp(sim / T)`, `T = 0.07`; the best top-1 over `k ∈ {10, 20, 100, 200}` is reported.

It needs one forward per sample and no training, so the engine can also call :func:`knn_eval`
every few epochs as a cheap health metric of a pre-training run. Video (`[B, C, T, H, W]`) and
image mode (`T = 1`) are the same code. Distributed: features are gathered from all ranks and
de-duplicated by dataset index before the search.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from videohpm.accuracy import topk_hits
from videohpm.distributed import is_distributed, is_main_process
from videohpm.evaluation.gather import first_occurrence, gather_tensor

__all__ = ["DEFAULT_KS", "mean_pooled_features", "extract_features", "knn_predict", "knn_classify", "knn_eval"]

logger = logging.getLogger(__name__)

DEFAULT_KS: Tuple[int, ...] = (10, 20, 100, 200)

EncoderFn = Callable[[torch.Tensor], torch.Tensor]


def mean_pooled_features(model: nn.Module) -> EncoderFn:
    """`x: [B, C, T, H, W] -> [B, D]`: the encoder's tokens over ALL patches, mean-pooled.

    Accepts a `MaskedAutoencoder` (`encode`, tokens after the final norm), a recipe wrapping one
    (`.model`), a DeepSpeed engine (`.module`), or a `VideoClassifier` (its `encoder`, then the
    pooled `fc_norm` feature as fine-tuning uses it).
    """
    m = model
    for attr in ("module", "model"):
        while hasattr(m, attr) and isinstance(getattr(m, attr), nn.Module) and not hasattr(m, "encode"):
            m = getattr(m, attr)
    if hasattr(m, "encode"):
        return lambda x: m.patch_latents(m.encode(x)).mean(dim=1)  # patch tokens ([CLS] dropped)
    if hasattr(m, "forward_features"):
        return m.forward_features
    if hasattr(m, "encoder"):
        return lambda x: m.encoder(x).mean(dim=1)
    raise TypeError(f"mean_pooled_features: {type(model).__name__} has no encode/forward_features/encoder")


def _clip_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        for key in ("video", "image", "views"):
            if key in batch:
                return batch[key]
        raise KeyError(f"batch has no 'video' entry (keys: {sorted(batch)})")
    if isinstance(batch, (list, tuple)):
        return batch[0]
    raise TypeError(f"unsupported batch type {type(batch).__name__}")


def _labels_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        if "label" not in batch:
            raise KeyError(f"k-NN needs labelled batches: no 'label' entry (keys: {sorted(batch)})")
        return torch.as_tensor(batch["label"])
    return torch.as_tensor(batch[1])


@torch.no_grad()
def extract_features(
    encoder_fn: EncoderFn,
    loader: Iterable,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    desc: str = "features",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """ℓ2-normalized features and labels of every sample in `loader`, from all ranks.

    Args:
        encoder_fn: `x: [B, C, T, H, W] -> [B, D]` (or tokens `[B, N, D]`, then mean-pooled).
        loader: yields dicts `{"video", "label", "index"}` (or `(x, y)` tuples single-process).
    Returns:
        `(features [n, D] float32, labels [n] int64)` on `device`, one row per dataset sample
        (padding repeats of `DistributedSampler` removed via `"index"`), sorted by index.
    """
    feats, labels, index = [], [], []
    ctx = nullcontext() if amp_dtype in (None, torch.float32) else torch.autocast(device.type, dtype=amp_dtype)
    for batch in tqdm(loader, desc=desc, disable=not is_main_process(), dynamic_ncols=True, leave=False):
        x = _clip_of(batch).to(device, non_blocking=True)
        if x.dim() == 4:  # [B, C, H, W] images → one-frame clips
            x = x.unsqueeze(2)
        with ctx:
            f = encoder_fn(x)
        if f.dim() == 3:
            f = f.mean(dim=1)
        feats.append(F.normalize(f.float(), dim=-1))
        labels.append(_labels_of(batch).view(-1).to(device).long())
        if isinstance(batch, dict) and "index" in batch:
            index.append(torch.as_tensor(batch["index"]).view(-1).to(device).long())
        elif is_distributed():
            raise KeyError("distributed k-NN needs an 'index' entry in every batch to de-duplicate samples")
    if not feats:
        raise ValueError(f"k-NN: the {desc} loader yielded no batches")
    feats_t, labels_t = torch.cat(feats), torch.cat(labels)
    idx_t = torch.cat(index) if index else torch.arange(feats_t.shape[0], device=device)
    feats_t, labels_t, idx_t = gather_tensor(feats_t), gather_tensor(labels_t), gather_tensor(idx_t)
    keep = torch.as_tensor(first_occurrence(idx_t.cpu().numpy()), device=device)
    return feats_t[keep], labels_t[keep]


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int,
    temperature: float = 0.07,
    num_classes: Optional[int] = None,
) -> torch.Tensor:
    """Class scores `[n_test, K]` of DINO's weighted k-NN vote.

    `scores[i, c] = Σ_{j ∈ kNN(i), y_j = c} exp(⟨f_i, g_j⟩ / T)` over the `k` training features
    `g_j` most similar to `f_i` (all inputs ℓ2-normalized: `⟨·,·⟩` is the cosine).
    """
    return _knn_scores(train_features, train_labels, test_features, (k,), temperature, num_classes)[k]


def _knn_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                ks: Sequence[int], temperature: float, num_classes: Optional[int],
                chunk: int = 256) -> Dict[int, torch.Tensor]:
    n_train = train_features.shape[0]
    if n_train == 0:
        raise ValueError("k-NN: no training features")
    c = int(num_classes) if num_classes is not None else int(train_labels.max().item()) + 1
    kmax = min(max(ks), n_train)
    out = {k: [] for k in ks}
    for s in range(0, test_features.shape[0], chunk):
        sim = test_features[s:s + chunk] @ train_features.T  # [b, n_train] cosine
        top_sim, top_idx = sim.topk(kmax, dim=1, largest=True, sorted=True)  # [b, kmax]
        weights = (top_sim / temperature).exp()
        neigh = train_labels[top_idx]  # [b, kmax]
        for k in ks:
            kk = min(k, n_train)
            votes = torch.zeros(sim.shape[0], c, device=sim.device, dtype=weights.dtype)
            votes.scatter_add_(1, neigh[:, :kk], weights[:, :kk])
            out[k].append(votes)
    return {k: torch.cat(v) for k, v in out.items()}


def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_classes: Optional[int] = None,
) -> Dict[str, float]:
    """Top-1/top-5 (percent) of the weighted k-NN for each k, and the best k.

    Returns `{"knn_top1@k": .., "knn_top5@k": .., ..., "knn_top1": best, "knn_best_k": k}`.
    `k` larger than the training set is capped at its size (reported under the asked k).
    """
    if num_classes is None:
        num_classes = int(torch.cat((train_labels, test_labels)).max().item()) + 1
    scores = _knn_scores(train_features, train_labels, test_features, tuple(ks), temperature, num_classes)
    res: Dict[str, float] = {}
    best_k, best = None, -1.0
    for k in ks:
        hits = topk_hits(scores[k], test_labels, (1, 5))
        top1 = 100.0 * hits[1].double().mean().item()
        top5 = 100.0 * hits[5].double().mean().item()
        res[f"knn_top1@{k}"], res[f"knn_top5@{k}"] = top1, top5
        if top1 > best:
            best_k, best = k, top1
    res["knn_top1"] = best
    res["knn_best_k"] = best_k
    return res


def knn_eval(
    encoder_fn: EncoderFn,
    train_loader: Iterable,
    val_loader: Iterable,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_classes: Optional[int] = None,
    device: Optional[torch.device] = None,
    amp_dtype: Optional[torch.dtype] = None,
    module: Optional[nn.Module] = None,
) -> Dict[str, float]:
    """k-NN top-1 of frozen features; the engine's periodic health metric.

    Args:
        encoder_fn: `x: [B, C, T, H, W] -> [B, D]` or `[B, N, D]` (e.g.
            `mean_pooled_features(model)`).
        train_loader / val_loader: labelled loaders (`{"video", "label", "index"}` batches),
            each rank seeing its share (a `DistributedSampler`); no augmentation expected.
        ks: neighbourhood sizes; the best top-1 is reported as `"knn_top1"`.
        temperature: T of the `exp(sim / T)` vote weights (0.07, DINO).
        module: the network behind `encoder_fn`; put in eval mode for the extraction and
            restored afterwards (dropout / drop-path off).
    Returns:
        identical dict on every rank (see :func:`knn_classify`) plus the sample counts.
    """
    if device is None:
        device = torch.device("cpu")
        if module is not None and next(module.parameters(), None) is not None:
            device = next(module.parameters()).device
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        tr_f, tr_y = extract_features(encoder_fn, train_loader, device, amp_dtype, "knn train")
        va_f, va_y = extract_features(encoder_fn, val_loader, device, amp_dtype, "knn val")
    finally:
        if module is not None:
            module.train(was_training)
    res = knn_classify(tr_f, tr_y, va_f, va_y, ks, temperature, num_classes)
    res["knn_train_samples"] = int(tr_f.shape[0])
    res["knn_val_samples"] = int(va_f.shape[0])
    logger.info("k-NN: top-1 %.2f (k=%s) on %d val / %d train samples", res["knn_top1"], res["knn_best_k"],
                res["knn_val_samples"], res["knn_train_samples"])
    return res
