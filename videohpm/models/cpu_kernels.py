"""CPU kernels on oneDNN for the two ops that dominate a ViT step (linear and attention), chosen
per machine.

Why: PyTorch runs fp32 CPU matmuls (``F.linear``, ``bmm``, and the GEMMs inside the CPU flash
attention kernel) through MKL, whose AVX-512 code is only dispatched on Intel CPUs — on AMD Zen
with AVX-512 it runs AVX2 kernels (~100 GFLOP/s per core on the AVX-512 benchmark machine), while
oneDNN, also bundled with PyTorch, runs AVX-512 there (~225 GFLOP/s per core). Without AVX-512
(AVX2 + FMA only) it is the other way round: both run AVX2 code and MKL's is the faster (a
1-thread fp32 1024³ GEMM: MKL 82, oneDNN 66 GFLOP/s on a Zen 3 core), so there the plain ops win.

**Choice (once per process, logged):** ``VIDEOHPM_CPU_KERNELS`` = ``auto`` (default), ``onednn``
or ``aten``; :func:`set_cpu_kernels` does the same at run time. ``auto`` selects by detected
capability (:func:`cpu_capability`), which respects the ISA caps ``ONEDNN_MAX_CPU_ISA`` and
``ATEN_CPU_CAPABILITY`` so that an AVX2-only CPU can be emulated on a bigger one:

- fp32 linear and long attention go to oneDNN only where oneDNN may use AVX-512
  (:func:`onednn_has_avx512`); elsewhere ``F.linear`` / SDPA (a timing of both on the step's shapes
  is noisy on shared machines; the capability rule is deterministic and matched the measurements,
  docs/BENCHMARKS.md).
- bf16 GEMMs (a teacher under bf16 autocast) go to oneDNN only where the CPU has native bf16
  (:func:`cpu_bf16_is_fast`: AVX512-BF16 or AMX, allowed by the caps, and a probe GEMM that runs).
  Elsewhere bf16 attention takes SDPA (which runs in bf16 on any CPU); the HPM teacher itself
  runs in fp32 there (``videohpm.methods.hpm``, logged once: bf16 would only be emulated).

Kernels:

- :func:`linear` (fp32, no autocast): forward and both backward GEMMs through
  ``videohpm::onednn_mm_nt``.
- :func:`attention` on ``N ≥ 512`` tokens (the decoders and the HPM teacher see all 1568):
  per (sample, head) one GEMM forms the ``N × N`` scores, softmax, one GEMM applies them.
  Forward-only passes (``no_grad``/``inference_mode``: the teacher; fp32, or bf16 under
  autocast on a native-bf16 CPU) keep one score matrix alive at a time. Training (fp32) keeps the
  probabilities ``P`` for backward (``B·h·N²`` floats, at most :data:`MAX_SAVED_SCORES_BYTES` per
  call, else SDPA) and uses FlashAttention's identity ``rowsum(dP ∘ P) = rowsum(dO ∘ O)`` so that
  the backward is four GEMMs and two in-place passes.

The ops are ``torch.library`` custom ops, so ``torch.compile`` sees them as opaque kernels. On
CUDA and for other dtypes everything takes ``F.linear`` / ``scaled_dot_product_attention``.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ["set_cpu_kernels", "cpu_kernels", "chosen_kernels", "cpu_capability", "cpu_bf16_is_fast",
           "onednn_has_avx512", "linear", "attention", "MAX_SAVED_SCORES_BYTES", "SETTINGS"]

log = logging.getLogger(__name__)

#: Values of ``VIDEOHPM_CPU_KERNELS`` / :func:`set_cpu_kernels`.
SETTINGS = ("auto", "onednn", "aten")
#: Token count from which attention uses the oneDNN path (below it SDPA's overheads are lower).
MIN_ATTENTION_TOKENS = 512
#: Largest ``P`` (``B·h·N²`` fp32) the training attention may keep for backward; else SDPA.
MAX_SAVED_SCORES_BYTES = 256 << 20


def _setting_from_env() -> str:
    value = os.environ.get("VIDEOHPM_CPU_KERNELS", "auto").strip().lower() or "auto"
    if value not in SETTINGS:
        raise ValueError(f"environment variable VIDEOHPM_CPU_KERNELS must be one of {SETTINGS}, got {value!r}")
    return value


_SETTING = _setting_from_env()


def _available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_AVAILABLE = _available()


# ----------------------------------------------------------------------------------------------
# Capability (respecting the ISA caps)
# ----------------------------------------------------------------------------------------------
def _flag(name: str) -> bool:
    try:
        return bool(getattr(torch.cpu, name)())
    except (AttributeError, RuntimeError):
        return False


def _onednn_cap_allows(level: str) -> bool:
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
    return _flag("_is_avx512_supported") and _aten_avx512() and _onednn_cap_allows("avx512")


@lru_cache(maxsize=None)
def _bf16_probe() -> bool:
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
    native = ((_flag("_is_avx512_bf16_supported") and _aten_avx512() and _onednn_cap_allows("bf16"))
              or (_flag("_is_amx_tile_supported") and _onednn_cap_allows("amx")))
    return bool(native and _AVAILABLE and _bf16_probe())


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
        "mkldnn": _AVAILABLE,
    }


# ----------------------------------------------------------------------------------------------
# The choice
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _resolve(setting: str) -> bool:
    """fp32 oneDNN kernels on for ``setting``? Decided (and logged) once per process and setting."""
    on = _AVAILABLE and (onednn_has_avx512() if setting == "auto" else setting == "onednn")
    log.info("videohpm CPU kernels: %s", _describe(setting, on))
    return on


_RESOLVED: Dict[str, bool] = {}  # setting -> choice, a plain dict that torch.compile reads as a constant


def _enabled() -> bool:
    on = _RESOLVED.get(_SETTING)
    if on is None:
        on = _RESOLVED[_SETTING] = _resolve(_SETTING)
    return on


def _bf16_kernel(setting: str) -> str:
    if not cpu_bf16_is_fast():
        return "emulated (no native bf16 on this CPU): attention through SDPA, the HPM teacher runs in fp32"
    return "onednn" if setting != "aten" else "aten"


def _describe(setting: str, on: bool) -> str:
    cap = cpu_capability()
    return (f"VIDEOHPM_CPU_KERNELS={setting} -> fp32 linear/attention: {'onednn' if on else 'aten (F.linear / SDPA)'}; "
            f"bf16: {_bf16_kernel(setting)} (ATen {cap['aten']}, AVX-512 for oneDNN: {cap['onednn_avx512']}, "
            f"native bf16: {cap['bf16_fast']}{', caps ' + str(cap['caps']) if cap['caps'] else ''})")


def chosen_kernels() -> Dict[str, Any]:
    """What the current setting runs on this CPU: ``{"setting", "fp32", "bf16", "cpu"}`` (the
    benchmark JSON's ``kernels``)."""
    return {"setting": _SETTING, "fp32": "onednn" if _enabled() else "aten", "bf16": _bf16_kernel(_SETTING),
            "cpu": cpu_capability()}


def set_cpu_kernels(backend: str) -> None:
    """``"auto"`` (default: by capability), ``"onednn"`` or ``"aten"`` (plain ``F.linear`` / SDPA)
    for fp32 CPU tensors; the same as ``VIDEOHPM_CPU_KERNELS``."""
    global _SETTING
    if backend not in SETTINGS:
        raise ValueError(f"cpu kernels must be one of {SETTINGS}, got {backend!r}")
    _SETTING = backend


def cpu_kernels() -> str:
    """The current setting of :func:`set_cpu_kernels` (``auto``, ``onednn`` or ``aten``)."""
    return _SETTING


def _use_onednn(*tensors: torch.Tensor) -> bool:
    return (
        _enabled()
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not torch.is_autocast_enabled("cpu")
    )


def _gemm(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a @ b.T (+ bias)`` for 2-D ``a: [M, K]``, ``b: [N, K]``. oneDNN is fast on row-major
    operands and plain transposes; other strides (padded rows) can drop it to a slow reference
    kernel, so anything else is made contiguous first."""
    a = a if a.is_contiguous() or a.t().is_contiguous() else a.contiguous()
    b = b if b.is_contiguous() or b.t().is_contiguous() else b.contiguous()
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


# ----------------------------------------------------------------------------------------------
# Linear
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("videohpm::onednn_mm_nt", mutates_args=())
def onednn_mm_nt(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a @ b.T (+ bias)``: ``a: [M, K]``, ``b: [N, K]`` -> ``[M, N]`` (fp32 CPU, oneDNN)."""
    return _gemm(a, b, bias)


@onednn_mm_nt.register_fake
def _(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    return a.new_empty(a.shape[0], b.shape[0])


def _mm_nt_setup(ctx, inputs, output) -> None:
    a, b, bias = inputs
    ctx.save_for_backward(a, b)
    ctx.has_bias = bias is not None


def _mm_nt_backward(ctx, grad: torch.Tensor):
    a, b = ctx.saved_tensors
    ga = gb = gbias = None
    if ctx.needs_input_grad[0]:
        ga = onednn_mm_nt(grad, b.t())  # [M, N] @ [N, K]
    if ctx.needs_input_grad[1]:
        gb = onednn_mm_nt(grad.t(), a.t())  # [N, M] @ [M, K]
    if ctx.has_bias and ctx.needs_input_grad[2]:
        gbias = grad.sum(0)
    return ga, gb, gbias


onednn_mm_nt.register_autograd(_mm_nt_backward, setup_context=_mm_nt_setup)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear`` (``x: [..., K]``, ``weight: [N, K]``) with oneDNN GEMMs for fp32 CPU tensors."""
    if _use_onednn(x, weight):
        return onednn_mm_nt(x.reshape(-1, x.shape[-1]), weight, bias).view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------
def _heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, N, 3·D]`` ``(3 h hd)`` -> scaled ``q``, ``k``: ``[B, h, N, hd]`` and ``vᵀ``:
    ``[B, h, hd, N]``, contiguous (so every per-head GEMM operand is row-major)."""
    b, n, three_d = qkv.shape
    hd = three_d // 3 // num_heads
    parts = qkv.view(b, n, 3, num_heads, hd)
    q = (parts[:, :, 0] * hd ** -0.5).transpose(1, 2).contiguous()
    k = parts[:, :, 1].transpose(1, 2).contiguous()
    vt = parts[:, :, 2].permute(0, 2, 3, 1).contiguous()
    return q, k, vt


@torch.library.custom_op("videohpm::onednn_attention", mutates_args=())
def onednn_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Forward-only softmax attention: ``qkv: [B, N, 3·D]`` -> ``[B, N, D]`` (heads concatenated).

    fp32 or bf16 (a teacher under bf16 autocast: bf16 GEMMs at twice the fp32 rate on CPUs
    with AVX512-BF16; PyTorch's bf16 softmax accumulates in fp32). The loop tiles the
    work into per-(sample, head) score matrices (one alive at a time); it holds no per-sample
    logic.
    """
    b, n, three_d = qkv.shape
    q, k, vt = _heads(qkv, num_heads)
    out = qkv.new_empty(b, n, num_heads, three_d // 3 // num_heads)
    for i in range(b):
        for j in range(num_heads):
            out[i, :, j] = _gemm(torch.softmax(_gemm(q[i, j], k[i, j]), dim=-1), vt[i, j])
    return out.view(b, n, three_d // 3)


@onednn_attention.register_fake
def _(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    return qkv.new_empty(qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3)


@torch.library.custom_op("videohpm::onednn_attention_train", mutates_args=())
def onednn_attention_train(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Training forward: ``(out [B, N, D], P)`` with ``P`` the ``B·h`` probability matrices
    ``[N, N]`` (sample-major), kept for backward. They are separate tensors on purpose: one
    ``[B, h, N, N]`` block is above glibc's largest mmap threshold (32 MiB) and would be
    page-faulted in afresh every step, while ``N × N`` blocks get recycled by the heap."""
    b, n, three_d = qkv.shape
    q, k, vt = _heads(qkv, num_heads)
    probs = []
    out = qkv.new_empty(b, n, num_heads, three_d // 3 // num_heads)
    for i in range(b):
        for j in range(num_heads):
            p = torch.softmax(_gemm(q[i, j], k[i, j]), dim=-1)  # [N, N]
            out[i, :, j] = _gemm(p, vt[i, j])
            probs.append(p)
    return out.view(b, n, three_d // 3), probs


@onednn_attention_train.register_fake
def _(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    b, n, three_d = qkv.shape
    return qkv.new_empty(b, n, three_d // 3), [qkv.new_empty(n, n) for _ in range(b * num_heads)]


@torch.library.custom_op("videohpm::onednn_attention_backward", mutates_args=())
def onednn_attention_backward(grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor,
                              probs: list[torch.Tensor], num_heads: int) -> torch.Tensor:
    """Gradient w.r.t. ``qkv`` (``[B, N, 3·D]``) of :func:`onednn_attention_train`.

    With ``S = q kᵀ·s``, ``P = softmax(S)``, ``O = P v``: ``dv = Pᵀ dO``, ``dP = dO vᵀ``,
    ``dS = P ∘ (dP − rowsum(dO ∘ O))``, ``dq = dS k·s``, ``dk = dSᵀ q·s``.
    """
    b, n, three_d = qkv.shape
    d = three_d // 3
    hd = d // num_heads
    q, k, vt = _heads(qkv, num_heads)  # q is already scaled by s
    g = grad_out.reshape(b, n, num_heads, hd).transpose(1, 2).contiguous()  # [B, h, N, hd]
    o = out.reshape(b, n, num_heads, hd).transpose(1, 2)
    row = (g * o).sum(-1, keepdim=True)  # [B, h, N, 1] = rowsum(dP ∘ P)
    grad = qkv.new_empty(b, n, 3, num_heads, hd)
    scale = hd ** -0.5
    for i in range(b):
        for j in range(num_heads):
            p, gij = probs[i * num_heads + j], g[i, j]
            # An N × N operand is only ever passed row-major or as the (transposed) second
            # operand: oneDNN copies a transposed *first* operand, which would cost more than
            # the GEMM. Hence dv and dk are formed transposed.
            grad[i, :, 2, j] = _gemm(gij.t(), p.t()).t()  # dvᵀ = dOᵀ P
            ds = _gemm(gij, vt[i, j].t())  # dP = dO vᵀ   [N, N]
            ds.sub_(row[i, j]).mul_(p)  # dS
            grad[i, :, 0, j] = _gemm(ds, k[i, j].t()).mul_(scale)  # dq = dS k · s
            grad[i, :, 1, j] = _gemm(q[i, j].t(), ds.t()).t()  # dkᵀ = (q·s)ᵀ dS
    return grad.view(b, n, three_d)


@onednn_attention_backward.register_fake
def _(grad_out, qkv, out, probs, num_heads):
    return torch.empty_like(qkv)


def _attn_setup(ctx, inputs, output) -> None:
    qkv, num_heads = inputs
    out, probs = output
    ctx.save_for_backward(qkv, out, *probs)
    ctx.num_heads = num_heads
    # P is an output only to reach backward; don't let autograd fill zero gradients for it
    ctx.set_materialize_grads(False)


def _attn_backward(ctx, grad_out: Optional[torch.Tensor], grad_probs: Optional[list]):
    if grad_out is None:
        return None, None
    qkv, out, *probs = ctx.saved_tensors
    return onednn_attention_backward(grad_out, qkv, out, probs, ctx.num_heads), None


onednn_attention_train.register_autograd(_attn_backward, setup_context=_attn_setup)


def attention(qkv: torch.Tensor, num_heads: int, dropout_p: float = 0.0) -> torch.Tensor:
    """Multi-head softmax attention from a fused projection.

    Args:
        qkv: ``[B, N, 3·D]`` ordered ``(3 h hd)`` (VideoMAE's fused qkv linear).
        dropout_p: attention dropout (callers pass 0 outside training).
    Returns:
        ``[B, N, D]`` with the heads concatenated.
    """
    b, n, three_d = qkv.shape
    d = three_d // 3
    hd = d // num_heads
    if n >= MIN_ATTENTION_TOKENS and dropout_p == 0.0 and qkv.device.type == "cpu" and _AVAILABLE:
        forward_only = not (torch.is_grad_enabled() and qkv.requires_grad)
        # (custom ops bypass autocast: a bf16-autocast teacher hands in its bf16 qkv as is)
        if forward_only and ((qkv.dtype == torch.float32 and _enabled()) or (
                qkv.dtype == torch.bfloat16 and _SETTING != "aten" and cpu_bf16_is_fast())):
            return onednn_attention(qkv, num_heads)
        if _use_onednn(qkv) and b * num_heads * n * n * 4 <= MAX_SAVED_SCORES_BYTES:
            return onednn_attention_train(qkv, num_heads)[0]
    # [B, N, 3, h, hd] -> [3, B, h, N, hd]: strided views, SDPA handles the strides.
    q, k, v = qkv.view(b, n, 3, num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
    x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return x.transpose(1, 2).reshape(b, n, d)
