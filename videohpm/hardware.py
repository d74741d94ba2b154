"""What this CPU can run, under the ISA caps of the environment: AVX-512 for oneDNN, native bf16.

The bottom layer, so that `videohpm.precision` (bf16 on a CPU only where native) and the kernels
(`videohpm.kernels`: oneDNN or ATen per shape) ask the same question of the same code. The
hardware flags alone do not say what a process may use: `ONEDNN_MAX_CPU_ISA` (or
`DNNL_MAX_CPU_ISA`) caps oneDNN and `ATEN_CPU_CAPABILITY` caps ATen's dispatch, and a CPU whose
caps leave no native bf16 runs bf16 GEMMs emulated (slower than fp32) or not at all — hence a
probe GEMM besides the flags.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any, Dict

import torch

__all__ = ["ONEDNN_AVAILABLE", "onednn_cap_allows", "onednn_has_avx512", "bf16_probe", "cpu_bf16_is_fast",
           "cpu_capability"]


def _onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


#: PyTorch was built with oneDNN (mkldnn) and exposes its inner product.
ONEDNN_AVAILABLE = _onednn_available()


def _flag(name: str) -> bool:
    try:
        return bool(getattr(torch.cpu, name)())
    except (AttributeError, RuntimeError):
        return False


def onednn_cap_allows(level: str) -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` (unset = no cap) lets oneDNN use ``level``:
    ``"avx512"`` (AVX512_CORE), ``"bf16"`` (AVX512_CORE_BF16) or ``"amx"``. An unknown value
    counts as a cap below AVX-512."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if cap in ("", "ALL", "DEFAULT"):
        return True
    if level == "amx":
        return "AMX" in cap
    if level == "bf16":
        return cap.startswith("AVX10") or cap in ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                                                  "AVX512_CORE_AMX_FP16")
    return cap.startswith("AVX512") or cap.startswith("AVX10")


def _aten_avx512() -> bool:
    """ATen's dispatch level is AVX-512 (``ATEN_CPU_CAPABILITY`` caps it)."""
    try:
        return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")
    except (AttributeError, RuntimeError):
        return False


def onednn_has_avx512() -> bool:
    """The CPU has AVX-512 and neither ``ONEDNN_MAX_CPU_ISA`` nor ``ATEN_CPU_CAPABILITY`` caps it
    below: where oneDNN's fp32 GEMMs beat MKL's on AMD (and match them on Intel)."""
    return _flag("_is_avx512_supported") and _aten_avx512() and onednn_cap_allows("avx512")


@lru_cache(maxsize=None)
def bf16_probe() -> bool:
    """One tiny bf16 oneDNN GEMM: does this oneDNN (under its ISA cap) have a bf16 inner product?"""
    try:
        a = torch.ones(4, 32, dtype=torch.bfloat16)
        out = torch.ops.mkldnn._linear_pointwise(a, a, None, "none", [], "")
        return bool(out.float().eq(32).all())
    except (RuntimeError, AttributeError):
        return False


def cpu_bf16_is_fast() -> bool:
    """Whether this CPU runs bf16 GEMMs natively (AVX512-BF16 or AMX, not capped away by
    ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY``, and oneDNN's bf16 GEMM runs): there a
    bf16-autocast forward (e.g. the HPM teacher) runs at about twice the fp32 rate; elsewhere bf16
    is emulated, slower than fp32, and oneDNN may have no bf16 kernel at all."""
    native = ((_flag("_is_avx512_bf16_supported") and _aten_avx512() and onednn_cap_allows("bf16"))
              or (_flag("_is_amx_tile_supported") and onednn_cap_allows("amx")))
    return bool(native and ONEDNN_AVAILABLE and bf16_probe())


def cpu_capability() -> Dict[str, Any]:
    """What this process may use: ATen's dispatch level (``torch.backends.cpu.get_cpu_capability``),
    the hardware flags, the ISA caps in the environment and what they leave (benchmark JSON)."""
    try:
        aten = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        aten = "unknown"
    return {
        "aten": aten,
        "avx2": _flag("_is_avx2_supported"),
        "avx512": _flag("_is_avx512_supported"),
        "avx512_bf16": _flag("_is_avx512_bf16_supported"),
        "amx": _flag("_is_amx_tile_supported"),
        "caps": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
                 if os.environ.get(k)},
        "onednn_avx512": onednn_has_avx512(),
        "bf16_fast": cpu_bf16_is_fast(),
        "mkldnn": ONEDNN_AVAILABLE,
    }
