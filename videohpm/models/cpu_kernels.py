"""CPU kernels on oneDNN for the two ops that dominate a ViT step: linear and attention.

Why: PyTorch runs fp32 CPU matmuls (``F.linear``, ``bmm``, and the GEMMs inside the CPU flash
attention kernel) through MKL, whose AVX-512 code is only dispatched on Intel CPUs — on AMD Zen
it runs AVX2 kernels (~100 GFLOP/s per core on the benchmark machine). oneDNN, also bundled with
PyTorch, runs AVX-512 on both (~225 GFLOP/s per core there). Same fp32 math, same results to
rounding; on CUDA and for other dtypes everything falls back to ``F.linear`` /
``scaled_dot_product_attention`` unchanged.

- :func:`linear` (fp32, no autocast): forward and both backward GEMMs through
  ``videohpm::onednn_mm_nt``.
- :func:`attention` on ``N ≥ 512`` tokens (the decoders and the HPM teacher see all 1568):
  per (sample, head) one GEMM forms the ``N × N`` scores, softmax, one GEMM applies them.
  Forward-only passes (``no_grad``/``inference_mode``: the teacher; fp32, or bf16 under
  autocast) keep one score matrix alive at a time. Training (fp32) keeps the probabilities
  ``P`` for backward (``B·h·N²`` floats, at most :data:`MAX_SAVED_SCORES_BYTES` per call, else
  SDPA) and uses FlashAttention's identity ``rowsum(dP ∘ P) = rowsum(dO ∘ O)`` so that the
  backward is four GEMMs and two in-place passes.

The ops are ``torch.library`` custom ops, so ``torch.compile`` sees them as opaque kernels.
Switch off with :func:`set_cpu_kernels("aten") <set_cpu_kernels>` or ``VIDEOHPM_CPU_KERNELS=aten``.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["set_cpu_kernels", "cpu_kernels", "cpu_bf16_is_fast", "linear", "attention", "MAX_SAVED_SCORES_BYTES"]

_ENABLED = os.environ.get("VIDEOHPM_CPU_KERNELS", "onednn").lower() != "aten"
#: Token count from which attention uses the oneDNN path (below it SDPA's overheads are lower).
MIN_ATTENTION_TOKENS = 512
#: Largest ``P`` (``B·h·N²`` fp32) the training attention may keep for backward; else SDPA.
MAX_SAVED_SCORES_BYTES = 256 << 20


def _available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_AVAILABLE = _available()


def set_cpu_kernels(backend: str) -> None:
    """``"onednn"`` (default) or ``"aten"`` (plain ``F.linear`` / SDPA) for fp32 CPU tensors."""
    global _ENABLED
    if backend not in ("onednn", "aten"):
        raise ValueError(f"cpu kernels must be 'onednn' or 'aten', got {backend!r}")
    _ENABLED = backend == "onednn"


def cpu_kernels() -> str:
    """The current setting of :func:`set_cpu_kernels`."""
    return "onednn" if _ENABLED else "aten"


def cpu_bf16_is_fast() -> bool:
    """Whether this CPU runs bf16 GEMMs natively (AVX512-BF16 or AMX): there a bf16-autocast
    forward (e.g. the HPM teacher) runs at about twice the fp32 rate; elsewhere oneDNN would
    emulate bf16 and be slower than fp32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def _use_onednn(*tensors: torch.Tensor) -> bool:
    return (
        _ENABLED
        and _AVAILABLE
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
    if n >= MIN_ATTENTION_TOKENS and dropout_p == 0.0 and _ENABLED and _AVAILABLE and qkv.device.type == "cpu":
        forward_only = not (torch.is_grad_enabled() and qkv.requires_grad)
        # (custom ops bypass autocast: a bf16-autocast teacher hands in its bf16 qkv as is)
        if forward_only and qkv.dtype in (torch.float32, torch.bfloat16):
            return onednn_attention(qkv, num_heads)
        if _use_onednn(qkv) and b * num_heads * n * n * 4 <= MAX_SAVED_SCORES_BYTES:
            return onednn_attention_train(qkv, num_heads)[0]
    # [B, N, 3, h, hd] -> [3, B, h, N, hd]: strided views, SDPA handles the strides.
    q, k, v = qkv.view(b, n, 3, num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
    x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return x.transpose(1, 2).reshape(b, n, d)
