"""Compute cost and the paper's table line: "GFLOPs per view × clips × crops", parameters.

FLOPs are counted with fvcore's `FlopCountAnalysis`, the counter behind the numbers VideoMAE and
HPM report (HPM journal Tables 13–14: ViT-B, 16×224², "180×2×3"). fvcore counts one fused
multiply-add as one flop and ignores element-wise operations (add, GELU, softmax).

Our attention runs in one `scaled_dot_product_attention` call, which fvcore does not know; VideoMAE
wrote it as two matmuls (`q @ kᵀ`, `attn @ v`) that fvcore does count. :func:`sdpa_flop_jit` gives
the fused op exactly the count of those two matmuls, so numbers stay comparable with the papers.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence

import torch
from torch import nn

from videohpm.kernels import cpu as cpu_kernels

__all__ = ["sdpa_flop_jit", "count_flops", "count_parameters", "CostSummary", "format_views", "format_table"]

logger = logging.getLogger(__name__)


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for `aten::scaled_dot_product_attention`.

    With `q: [..., Nq, d]`, `k: [..., Nk, d]`, `v: [..., Nk, dv]` (leading dims `B·h`):
    `q kᵀ` costs `prod(...)·Nq·Nk·d` and `attn v` costs `prod(...)·Nq·Nk·dv` multiply-adds.
    """
    from fvcore.nn.jit_handles import get_shape  # lazy: only FLOP counting needs fvcore

    q, k, v = (get_shape(x) for x in inputs[:3])
    lead = math.prod(q[:-2])
    nq, d = q[-2], q[-1]
    nk, dv = k[-2], v[-1]
    return int(lead * nq * nk * (d + dv))


@contextmanager
def _traceable_linears() -> Iterator[None]:
    """Route our CPU linears through `F.linear` while tracing.

    `videohpm.kernels` sends fp32 CPU linears and long attention to oneDNN custom
    ops, which fvcore does not count; `aten::linear` / SDPA are traced and counted. The previous
    backend is restored afterwards.
    """
    previous = cpu_kernels.cpu_kernels()
    cpu_kernels.set_cpu_kernels("aten")
    try:
        yield
    finally:
        cpu_kernels.set_cpu_kernels(previous)


def count_flops(model: nn.Module, input_shape: Sequence[int], device: Optional[torch.device] = None) -> int:
    """fvcore flop count (multiply-adds) of one forward of `model` on a zero input.

    Args:
        model: any module taking one tensor, e.g. a `VideoClassifier`.
        input_shape: `(1, C, T, H, W)` — the shape of ONE view (batch 1).
        device: where to trace (default: the model's device).
    Returns:
        the total count (divide by 1e9 for the paper's "GFLOPs").
    """
    with warnings.catch_warnings():  # fvcore.nn scripts a loss with torch.jit at import time
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis  # lazy: only FLOP counting needs fvcore

    if len(input_shape) != 5:
        raise ValueError(f"input_shape must be (B, C, T, H, W), got {tuple(input_shape)}")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    dtype = next(model.parameters()).dtype if next(model.parameters(), None) is not None else torch.float32
    x = torch.zeros(tuple(int(s) for s in input_shape), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), _traceable_linears():
            # fvcore traces with torch.jit, which newer PyTorch flags as deprecated.
            warnings.simplefilter("ignore", FutureWarning)
            fca = FlopCountAnalysis(model, (x,))
            fca.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
            fca.unsupported_ops_warnings(False)
            fca.uncalled_modules_warnings(False)
            total = int(fca.total())
    finally:
        model.train(was_training)
    return total


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not); buffers such as fixed sin-cos tables excluded."""
    return sum(p.numel() for p in model.parameters())


def format_views(gflops: float, clips: int, crops: int) -> str:
    """The paper's "GFLOPs per view × clips × crops" cell, e.g. `"180×2×3"`."""
    g = f"{gflops:.0f}" if gflops >= 10 else f"{gflops:.3g}"
    return f"{g}×{int(clips)}×{int(crops)}"


@dataclass
class CostSummary:
    """One row of HPM journal Tables 13–14."""

    model: str
    frames: int
    gflops_per_view: float
    clips: int
    crops: int
    params_m: float
    top1: float = float("nan")
    top5: float = float("nan")

    @property
    def gflops_cell(self) -> str:
        return format_views(self.gflops_per_view, self.clips, self.crops)

    @property
    def total_gflops(self) -> float:
        return self.gflops_per_view * self.clips * self.crops

    def as_dict(self) -> dict:
        return {
            "model": self.model, "frames": self.frames, "gflops_per_view": self.gflops_per_view,
            "clips": self.clips, "crops": self.crops, "views": self.gflops_cell,
            "total_gflops": self.total_gflops, "params_m": self.params_m, "top1": self.top1, "top5": self.top5,
        }


def format_table(rows: Sequence[CostSummary]) -> str:
    """Markdown table in the paper's column order: backbone, frames, GFLOPs, param., top-1, top-5."""
    lines = [
        "| model | frames | GFLOPs | param. (M) | top-1 | top-5 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.frames} | {r.gflops_cell} | {r.params_m:.1f} | {r.top1:.2f} | {r.top5:.2f} |"
        )
    return "\n".join(lines)
