"""A linear probe on frozen features that keeps time (the data-efficiency benchmark's probe).

The k-NN metric (:mod:`videohpm.evaluation.knn`) reads the mean over *all* tokens, which throws
away the temporal order — exactly what motion classes (SSv2's "moving left" vs "moving right")
are made of. This probe reads the features `tools/extract_features.py --pool time` writes: per
video ``[T', D]``, the mean over the ``H'·W'`` tokens of each time slice, slices in temporal order.
The ``T'`` vectors are concatenated, so a linear map can compare early and late slices:

    z = vec(F) ∈ R^{T'·D},   ẑ = (z − μ) / σ   (μ, σ: per-dimension statistics of the training set)
    p(y | z) = softmax(W ẑ + b),   min_{W,b}  (1/n) Σ_i −log p(y_i | z_i) + λ ‖W‖²_F

fitted full-batch with L-BFGS (deterministic: no sampling, no augmentation). The weight decay
λ is chosen on the validation split (best top-1; ties → the larger λ, the simpler model), and
the test split is scored once with that λ — the test set is never used to choose anything.
The fitted W, b, μ, σ can be written as a probe head file (:mod:`videohpm.models.probe_head`):
a time-pooling classifier started from it predicts exactly as the probe (LP-FT's first stage).

:func:`linear_probe` takes arrays; :func:`probe_feature_folders` the folders of
`tools/extract_features.py` (broken videos have no row there: counted as such, never swapped).
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from videohpm.models.probe_head import write_probe_head

from .features import load_features

__all__ = ["DEFAULT_WEIGHT_DECAYS", "fit_logistic", "linear_probe", "probe_feature_folders", "binomial_stderr"]

DEFAULT_WEIGHT_DECAYS: Tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def binomial_stderr(top1_percent: float, n: int) -> float:
    """Sampling error (one standard error, in points) of a top-1 measured on `n` test videos:
    ``100 · sqrt(p (1 − p) / n)``."""
    p = float(top1_percent) / 100.0
    return 100.0 * math.sqrt(max(p * (1.0 - p), 0.0) / max(int(n), 1))


def _flat(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    return t.reshape(t.shape[0], -1)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
                 max_iter: int = 300) -> Tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with an L2 penalty on the weights (not the bias).

    Args:
        x: ``[n, F]`` standardized features (float64).
        y: ``[n]`` int labels in ``[0, num_classes)``.
        weight_decay: λ of the module docstring's objective.
    Returns:
        ``(W [C, F], b [C])``.
    """
    w = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _top1(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float(((x @ w.T + b).argmax(dim=1) == y).double().mean()) if len(y) else float("nan")


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
    test_x: Optional[np.ndarray] = None, test_y: Optional[np.ndarray] = None, *,
    num_classes: Optional[int] = None, weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    return_head: bool = False,
) -> Dict[str, Any]:
    """Fit the probe of the module docstring on `train`, choose λ on `val`, score `test` once.

    Features may have any shape after the first axis (``[n, T', D]`` is flattened to
    ``[n, T'·D]``). Returns ``{"weight_decay", "val_top1", "test_top1" (None without a test
    split), "train_top1", "val_top1_by_weight_decay", "n_train", "n_val", "n_test",
    "test_stderr", "num_features"}`` (top-1 in %); with `return_head`, also ``"head"``: the
    chosen fit as float32 tensors ``{"head.weight": W, "head.bias": b, "feat_norm.mean": μ,
    "feat_norm.std": σ}`` (the probe head file's names).
    """
    if not weight_decays:
        raise ValueError("weight_decays: give at least one value")
    xtr, xva = _flat(train_x), _flat(val_x)
    if xtr.shape[1] != xva.shape[1]:
        raise ValueError(f"train features have {xtr.shape[1]} dimensions, val features {xva.shape[1]}")
    ytr = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    yva = torch.as_tensor(np.asarray(val_y), dtype=torch.long)
    if len(ytr) != len(xtr) or len(yva) != len(xva):
        raise ValueError("features and labels differ in length")
    c = int(num_classes) if num_classes is not None else int(max(ytr.max(), yva.max())) + 1
    for name, yy in (("train", ytr), ("val", yva)):
        if len(yy) and (int(yy.min()) < 0 or int(yy.max()) >= c):
            raise ValueError(f"{name} labels outside [0, {c})")
    mu = xtr.mean(dim=0)
    sd = xtr.std(dim=0, unbiased=False).clamp_min(1e-6)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x - mu) / sd

    xtr, xva = norm(xtr), norm(xva)
    by_wd: Dict[str, float] = {}
    best = None
    for wd in sorted(float(v) for v in weight_decays):
        w, b = fit_logistic(xtr, ytr, c, wd)
        acc = _top1(w, b, xva, yva)
        by_wd[f"{wd:g}"] = acc
        if best is None or acc >= best[0]:  # ascending λ: ties go to the larger one
            best = (acc, wd, w, b)
    acc, wd, w, b = best  # type: ignore[misc]
    out: Dict[str, Any] = {"weight_decay": wd, "val_top1": acc, "train_top1": _top1(w, b, xtr, ytr),
                           "val_top1_by_weight_decay": by_wd, "n_train": len(ytr), "n_val": len(yva),
                           "num_features": int(xtr.shape[1]), "test_top1": None, "n_test": 0, "test_stderr": None}
    if return_head:
        out["head"] = {"head.weight": w.float(), "head.bias": b.float(), "feat_norm.mean": mu.float(),
                       "feat_norm.std": sd.float()}
    if test_x is not None and test_y is not None:
        xte = norm(_flat(test_x))
        yte = torch.as_tensor(np.asarray(test_y), dtype=torch.long)
        out["test_top1"] = _top1(w, b, xte, yte)
        out["n_test"] = len(yte)
        out["test_stderr"] = binomial_stderr(out["test_top1"], len(yte))
    return out


def _labelled(folder: str) -> Tuple[np.ndarray, np.ndarray, int]:
    """Features and labels of the decodable videos of a feature folder; and how many were broken."""
    feats, rows = load_features(folder)  # rows: the index.csv lines with status "ok", in feature order
    with open(os.path.join(folder, "index.csv"), newline="", encoding="utf-8") as f:
        broken = sum(1 for r in csv.DictReader(f) if r["status"] != "ok")
    missing = [r["path"] for r in rows if r.get("label", "") == ""]
    if missing:
        raise ValueError(f"{folder}: {len(missing)} video(s) without a label, e.g. {missing[0]} "
                         "(extract from a labelled list)")
    return feats, np.asarray([int(r["label"]) for r in rows], dtype=np.int64), broken


def probe_feature_folders(train: str, val: str, test: Optional[str] = None, *, num_classes: Optional[int] = None,
                          weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
                          head_path: Optional[str] = None) -> Dict[str, Any]:
    """:func:`linear_probe` on folders written by `tools/extract_features.py` from labelled
    lists; adds ``broken`` (``{split: videos without features}``). With `head_path` (features
    of ``--pool time`` only) the fit is also written there as a probe head file, and
    ``"head_path"`` is added."""
    shape = _time_shape(train) if head_path else None
    xtr, ytr, btr = _labelled(train)
    xva, yva, bva = _labelled(val)
    xte = yte = None
    bte = 0
    if test is not None:
        xte, yte, bte = _labelled(test)
    out = linear_probe(xtr, ytr, xva, yva, xte, yte, num_classes=num_classes, weight_decays=weight_decays,
                       return_head=head_path is not None)
    out["broken"] = {"train": btr, "val": bva, "test": bte}
    if head_path and shape:
        info = {"weight_decay": out["weight_decay"], "val_top1": out["val_top1"], "n_train": out["n_train"],
                "n_val": out["n_val"], "features": os.path.abspath(train)}
        out["head_path"] = write_probe_head(head_path, out.pop("head"), shape[0], shape[1], info)
    return out


def _time_shape(folder: str) -> Tuple[int, int]:
    """``(T', D)`` of a feature folder written with ``--pool time`` (ValueError otherwise)."""
    with open(os.path.join(folder, "features.json"), encoding="utf-8") as f:
        meta = json.load(f)
    shape = list(meta.get("shape") or [])
    if meta.get("pool") != "time" or len(shape) != 2:
        raise ValueError(f"{folder}: a probe head needs features of --pool time (this folder: pool "
                         f"{meta.get('pool')!r}, shape {shape})")
    return int(shape[0]), int(shape[1])
