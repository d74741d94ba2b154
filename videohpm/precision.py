"""Precision names (`train.precision`, HPM's `method.kwargs.teacher_precision`) → torch dtypes.

The table (`device` is where the forward runs; "native" = the CPU runs bf16 GEMMs natively,
AVX512-BF16 or AMX, `videohpm.hardware.cpu_bf16_is_fast`):

================  ==========================  =============================================
name              `resolve_precision`         `autocast_dtype` (evaluation's forward)
================  ==========================  =============================================
"auto"            "bf16" on a CUDA GPU with   as the resolved name
                  bf16, else "fp32"
"fp32"            "fp32"                      None (no autocast)
"bf16"            "bf16"                      bf16 on CUDA; on a CPU bf16 where native,
                                              else None (fp32) with one warning
"fp16"            "fp16"                      fp16 on CUDA; None (fp32) on a CPU
================  ==========================  =============================================

Training keeps the name it is given (DeepSpeed casts the student to bf16 on any CPU when asked;
fp16 on a CPU is a config error). A forward under autocast (HPM's teacher, `runnable_dtype`;
evaluation) runs bf16 on a CPU only where native — elsewhere bf16 is emulated, slower than fp32,
and oneDNN may lack the kernel — else fp32, said once per process.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import torch

from videohpm import hardware

__all__ = ["PRECISIONS", "PRECISION_DTYPES", "resolve_precision", "amp_dtype", "runnable_dtype",
           "autocast_dtype", "emulated_bf16_warning"]

#: The names `train.precision` accepts.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Explicit names → dtypes.
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" → "bf16" on a CUDA GPU that supports it, "fp32" otherwise (CPUs: fp32 by default);
    any other name is returned as is."""
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def amp_dtype(precision: str) -> Optional[torch.dtype]:
    """The reduced dtype of an explicit name: bf16 / fp16, None for "fp32" (no autocast)."""
    return None if precision == "fp32" else PRECISION_DTYPES[precision]


def runnable_dtype(dtype: torch.dtype, device: Optional[torch.device],
                   on_emulated: Callable[[], None]) -> torch.dtype:
    """`dtype`, except bf16 on a CPU without native bf16 (`hardware.cpu_bf16_is_fast()` False):
    fp32, after `on_emulated()` (e.g. an `emulated_bf16_warning`). `device=None`: `dtype` unchanged."""
    if dtype == torch.bfloat16 and device is not None and torch.device(device).type == "cpu":
        if not hardware.cpu_bf16_is_fast():
            on_emulated()
            return torch.float32
    return dtype


def autocast_dtype(precision: str, device: torch.device,
                   on_emulated: Callable[[], None]) -> Optional[torch.dtype]:
    """The autocast dtype of a forward-only pass (evaluation) for `precision` on `device`, None
    for fp32 (the module's table): "auto" resolved, fp16 only on CUDA, bf16 on a CPU only where
    native (else fp32, after `on_emulated()`)."""
    dtype = amp_dtype(resolve_precision(precision, device))
    if dtype is None or torch.device(device).type == "cuda":
        return dtype
    if dtype == torch.float16:
        return None  # no fp16 on a CPU (as DeepSpeed's CPU accelerator): fp32
    dtype = runnable_dtype(dtype, device, on_emulated)
    return None if dtype == torch.float32 else dtype


def emulated_bf16_warning(logger: logging.Logger, setting: str, consequence: str) -> Callable[[], None]:
    """A function that logs through `logger`, once per process (its `cache_clear()` resets that),
    that `setting=bf16` would only be emulated on this CPU, followed by `consequence`."""

    @functools.lru_cache(maxsize=None)
    def warn() -> None:
        logger.warning("%s=bf16: this CPU has no native bf16 (AVX512-BF16 / AMX; "
                       "videohpm.hardware.cpu_bf16_is_fast() is False), bf16 would only be emulated "
                       "and run slower than fp32 — %s", setting, consequence)

    return warn
