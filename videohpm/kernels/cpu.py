"""CPU kernels for the two ops that dominate a ViT step (linear and attention): oneDNN or ATen,
whichever is faster on this machine for each shape.

Why: PyTorch's fp32 CPU matmuls go through MKL, whose AVX-512 code is only dispatched on Intel
CPUs, while oneDNN (also bundled) runs AVX-512 on AMD too; without AVX-512 MKL's AVX2 code is the
faster one. The CPU's capability alone does not say which wins (docs/BENCHMARKS.md), so
``VIDEOHPM_CPU_KERNELS=auto`` (default; or ``onednn`` / ``aten``, :func:`set_cpu_kernels`) times
the candidates on the shapes that occur, as ``torch.backends.cudnn.benchmark`` does: each fp32
GEMM of a linear layer of at least :data:`MIN_TUNED_MACS` multiply-adds (oneDNN's inner product vs
``addmm`` / ``mm``), and attention over ``N ≥ 512`` tokens (the explicit kernels vs SDPA).
Candidates run on the call's own operands (best of :data:`TUNE_ROUNDS`, no RNG draw); oneDNN must
win by :data:`TUNE_MARGIN`, so a tie goes to the plain op. Each choice is logged once and kept in
a per-machine cache (``$VIDEOHPM_KERNEL_CACHE``, default ``~/.cache/videohpm/cpu_kernels``;
``off``: this process only), first writer wins, so every process of a machine runs the same kernel.

bf16 GEMMs go to oneDNN only where the CPU has native bf16 (``videohpm.hardware``). Training
attention keeps ``P`` for backward (at most :data:`MAX_SAVED_SCORES_BYTES`) and uses FlashAttention's
identity ``rowsum(dP ∘ P) = rowsum(dO ∘ O)``: four GEMMs and two in-place passes. The ops are
``torch.library`` custom ops (opaque to ``torch.compile``); CUDA tensors and other dtypes take
``F.linear`` / ``scaled_dot_product_attention``."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F

from videohpm import hardware

__all__ = ["set_cpu_kernels", "cpu_kernels", "chosen_kernels", "linear", "attention", "MAX_SAVED_SCORES_BYTES",
           "SETTINGS"]

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


# ----------------------------------------------------------------------------------------------
# The choice: timed per shape, once per process (and machine, through the cache)
# ----------------------------------------------------------------------------------------------
#: GEMMs below this many multiply-adds (``M·K·N``) take ATen untimed: there the custom op's and the
#: timing's overheads (tens of µs) outweigh anything a kernel could win (the tiny configs).
MIN_TUNED_MACS = 1 << 24
#: oneDNN must beat ATen by this fraction to be chosen: a tie goes to the plain op.
TUNE_MARGIN = 0.03
#: Timed rounds per candidate (interleaved, best of): the first call of each is excluded.
TUNE_ROUNDS = 5

_CHOICES: Dict[tuple, str] = {}  # (kind, shape..., threads) -> candidate; a plain dict torch.compile reads
_TUNED: Dict[str, Dict[str, Any]] = {}  # key text -> {"choice", "ms": {candidate: best ms}, "source"}
_HEADER_LOGGED: set = set()  # settings whose header line was logged


def _describe(setting: str) -> str:
    cap = hardware.cpu_capability()
    fp32 = {"auto": "timed per shape, oneDNN vs ATen (F.linear / torch.mm / SDPA), the faster one",
            "onednn": "oneDNN (forced)",
            "aten": "ATen (F.linear / SDPA)"}[setting if hardware.ONEDNN_AVAILABLE else "aten"]
    cache = _cache_dir()
    return (f"VIDEOHPM_CPU_KERNELS={setting} -> fp32 linear/attention: {fp32}"
            f"{'; choices cached in ' + str(cache) if setting == 'auto' and cache else ''}; "
            f"bf16: {_bf16_kernel(setting)} (ATen {cap['aten']}, AVX-512 for oneDNN: {cap['onednn_avx512']}, "
            f"native bf16: {cap['bf16_fast']}{', caps ' + str(cap['caps']) if cap['caps'] else ''})")


def _log_header() -> None:
    if _SETTING not in _HEADER_LOGGED:
        _HEADER_LOGGED.add(_SETTING)
        log.info("videohpm CPU kernels: %s", _describe(_SETTING))


def _bf16_kernel(setting: str) -> str:
    if not hardware.cpu_bf16_is_fast():
        return "emulated (no native bf16 on this CPU): attention through SDPA, the HPM teacher runs in fp32"
    return "onednn" if setting != "aten" else "aten"


def _fp32_summary() -> str:
    if _SETTING == "aten" or not hardware.ONEDNN_AVAILABLE:
        return "aten"
    if _SETTING == "onednn":
        return "onednn"
    tuned = [t["choice"] for t in _TUNED.values()]
    if not tuned:
        return "timed per shape (none seen yet)"
    fast = sum(c in ("onednn", "explicit") for c in tuned)
    return f"timed per shape: {len(tuned)} shapes, {fast} on oneDNN / explicit attention, {len(tuned) - fast} on ATen"


def chosen_kernels() -> Dict[str, Any]:
    """What the current setting runs on this CPU: ``{"setting", "fp32", "bf16", "shapes", "cpu"}``
    (the benchmark JSON's ``kernels``). ``shapes`` lists the per-shape choices of ``auto`` made so
    far in this process: key → ``{"choice", "ms": {candidate: best time}, "source": "timed" | "cache"}``."""
    return {"setting": _SETTING, "fp32": _fp32_summary(), "bf16": _bf16_kernel(_SETTING),
            "shapes": {k: dict(v) for k, v in _TUNED.items()}, "cpu": hardware.cpu_capability()}


def set_cpu_kernels(backend: str) -> None:
    """``"auto"`` (default: the faster of oneDNN and ATen, timed per shape), ``"onednn"`` or
    ``"aten"`` (plain ``F.linear`` / SDPA) for fp32 CPU tensors; the same as ``VIDEOHPM_CPU_KERNELS``."""
    global _SETTING
    if backend not in SETTINGS:
        raise ValueError(f"cpu kernels must be one of {SETTINGS}, got {backend!r}")
    _SETTING = backend


def cpu_kernels() -> str:
    """The current setting of :func:`set_cpu_kernels` (``auto``, ``onednn`` or ``aten``)."""
    return _SETTING


def _fp32_cpu(*tensors: torch.Tensor) -> bool:
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not torch.is_autocast_enabled("cpu"))


def _use_onednn(*tensors: torch.Tensor) -> bool:
    """fp32 CPU tensors outside autocast, and a setting that may use oneDNN (``auto``, ``onednn``)."""
    return hardware.ONEDNN_AVAILABLE and _SETTING != "aten" and _fp32_cpu(*tensors)


# -- the cache ---------------------------------------------------------------------------------
def _cache_dir() -> Optional[Path]:
    """Where ``auto``'s choices persist, one folder per machine: ``$VIDEOHPM_KERNEL_CACHE``
    (``off`` or empty: this process only), default ``~/.cache/videohpm/cpu_kernels``. The folder
    name digests what makes a choice machine-specific: the CPU model, the capability under the ISA
    caps and the torch version (threads are part of every key)."""
    root = os.environ.get("VIDEOHPM_KERNEL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "videohpm",
                                                                 "cpu_kernels"))
    if root.strip().lower() in ("", "off", "0", "none"):
        return None
    return Path(root) / _machine_digest()


@lru_cache(maxsize=None)
def _machine_digest() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    cap = hardware.cpu_capability()
    text = json.dumps([model, cap["aten"], cap["caps"], cap["onednn_avx512"], cap["bf16_fast"], cap["amx"],
                       torch.__version__], sort_keys=True)
    slug = "".join(c if c.isalnum() else "-" for c in model)[:40].strip("-")
    return f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _cache_read(name: str) -> Optional[Dict[str, Any]]:
    folder = _cache_dir()
    if folder is None:
        return None
    try:
        return json.loads((folder / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def _cache_write(name: str, record: Dict[str, Any]) -> Dict[str, Any]:
    """Store ``record`` unless another process stored this key first; return the stored record
    (first writer wins, so every process on the machine runs the same kernel for a shape and
    results do not depend on which process timed it). Written to a temporary file and linked into
    place (atomic, never overwrites); a read-only cache only costs the persistence."""
    folder = _cache_dir()
    if folder is None:
        return record
    final = folder / f"{name}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.link(tmp, final)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as e:
        log.debug("videohpm CPU kernels: cache %s not written (%s)", final, e)
        return record
    return _cache_read(name) or record


# -- timing --------------------------------------------------------------------------------------
def _best_times(candidates: Dict[str, Callable[[], Any]]) -> Dict[str, float]:
    """Best wall time (s) of each candidate over :data:`TUNE_ROUNDS` interleaved rounds, after one
    untimed call each. The callables run on the caller's real operands and have no side effects
    (no RNG draws, no in-place writes to their inputs)."""
    for fn in candidates.values():
        fn()
    best = {name: float("inf") for name in candidates}
    for _ in range(TUNE_ROUNDS):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _choose(key: tuple, candidates: Dict[str, Callable[[], Any]], plain: str) -> str:
    """The faster candidate for ``key`` (cached per process and machine). ``plain`` (the ATen op)
    wins unless another is faster by :data:`TUNE_MARGIN`."""
    choice = _CHOICES.get(key)
    if choice is not None:
        return choice
    _log_header()
    name = "_".join(str(k) for k in key)
    record = _cache_read(name)
    source = "cache"
    if record is None or record.get("choice") not in candidates:
        times = _best_times(candidates)
        fastest = min(times, key=times.get)
        choice = fastest if times[fastest] < times[plain] * (1.0 - TUNE_MARGIN) else plain
        record = _cache_write(name, {"choice": choice, "ms": {k: round(v * 1e3, 4) for k, v in times.items()}})
        source = "timed" if record.get("choice") == choice else "cache"
        log.info("videohpm CPU kernels: %s -> %s (%s)", name, record["choice"],
                 ", ".join(f"{k} {v:.3f} ms" for k, v in record["ms"].items()))
    choice = _CHOICES[key] = record["choice"]
    _TUNED[name] = {"choice": choice, "ms": record.get("ms", {}), "source": source}
    return choice


def _layout(t: torch.Tensor) -> str:
    return "n" if t.is_contiguous() else "t" if t.t().is_contiguous() else "s"


def _gemm_choice(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor]) -> str:
    """``"onednn"`` or ``"aten"`` for ``a @ b.T (+ bias)`` (fp32) under the current setting."""
    if _SETTING == "onednn":
        return "onednn"
    m, k = a.shape
    n = b.shape[0]
    if _SETTING == "aten" or m * k * n < MIN_TUNED_MACS:
        return "aten"
    key = ("mm", 1 << (m - 1).bit_length(), k, n, _layout(a), _layout(b), bias is not None, torch.get_num_threads())
    choice = _CHOICES.get(key)
    if choice is None:
        choice = _choose(key, {"aten": lambda: _aten_gemm(a, b, bias), "onednn": lambda: _gemm(a, b, bias)}, "aten")
    return choice


def _aten_gemm(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a @ b.T (+ bias)`` as ``F.linear`` computes it (``addmm`` / ``mm``, transposes as flags)."""
    return torch.addmm(bias, a, b.t()) if bias is not None else torch.mm(a, b.t())


def _mm(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a @ b.T (+ bias)`` on the faster kernel for this shape: fp32 per :func:`_gemm_choice`;
    bf16 (a teacher under autocast, only reached where the CPU has native bf16) on oneDNN."""
    if a.dtype == torch.float32 and _gemm_choice(a, b, bias) == "aten":
        return _aten_gemm(a, b, bias)
    return _gemm(a, b, bias)


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
    """``a @ b.T (+ bias)``: ``a: [M, K]``, ``b: [N, K]`` -> ``[M, N]`` (fp32 CPU). This GEMM and
    the two of its backward each run on the faster kernel for their shape (:func:`_gemm_choice`;
    all on oneDNN under ``VIDEOHPM_CPU_KERNELS=onednn``)."""
    return _mm(a, b, bias)


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


def _linear_route(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], grad: bool) -> str:
    """``"onednn"`` (the custom op, whose GEMMs each take their faster kernel) or ``"aten"``
    (``F.linear``, when its forward and — if a gradient is needed — both backward GEMMs are at
    least as fast on ATen). Timed on first sight of the shape, on ``x`` and ``weight`` themselves
    and a stand-in output gradient (the forward's result: real values, no RNG draw)."""
    if _SETTING == "onednn":
        return "onednn"
    m, k = x.shape
    n = weight.shape[0]
    if m * k * n < MIN_TUNED_MACS:
        return "aten"
    key = ("linear", 1 << (m - 1).bit_length(), k, n, bias is not None, grad, torch.get_num_threads())
    route = _CHOICES.get(key)
    if route is None:
        with torch.no_grad():
            choices = [_gemm_choice(x, weight, bias)]
            if grad:
                g = _aten_gemm(x.detach(), weight.detach())  # [M, N], contiguous as autograd's
                choices += [_gemm_choice(g, weight.t(), None), _gemm_choice(g.t(), x.t(), None)]
        route = _CHOICES[key] = "onednn" if "onednn" in choices else "aten"
    return route


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear`` (``x: [..., K]``, ``weight: [N, K]``); for fp32 CPU tensors each of its GEMMs
    runs on the faster of oneDNN and ATen for its shape (``VIDEOHPM_CPU_KERNELS``)."""
    if _SETTING not in _HEADER_LOGGED and x.device.type == "cpu":
        _log_header()
    if _use_onednn(x, weight):
        x2 = x.reshape(-1, x.shape[-1])
        grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                            or (bias is not None and bias.requires_grad))
        if _linear_route(x2, weight, bias, grad) == "onednn":
            return onednn_mm_nt(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])
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
            out[i, :, j] = _mm(torch.softmax(_mm(q[i, j], k[i, j]), dim=-1), vt[i, j])
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
            p = torch.softmax(_mm(q[i, j], k[i, j]), dim=-1)  # [N, N]
            out[i, :, j] = _mm(p, vt[i, j])
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
            grad[i, :, 2, j] = _mm(gij.t(), p.t()).t()  # dvᵀ = dOᵀ P
            ds = _mm(gij, vt[i, j].t())  # dP = dO vᵀ   [N, N]
            ds.sub_(row[i, j]).mul_(p)  # dS
            grad[i, :, 0, j] = _mm(ds, k[i, j].t()).mul_(scale)  # dq = dS k · s
            grad[i, :, 1, j] = _mm(q[i, j].t(), ds.t()).t()  # dkᵀ = (q·s)ᵀ dS
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


def _sdpa(qkv: torch.Tensor, num_heads: int, dropout_p: float = 0.0) -> torch.Tensor:
    b, n, three_d = qkv.shape
    # [B, N, 3, h, hd] -> [3, B, h, N, hd]: strided views, SDPA handles the strides.
    q, k, v = qkv.view(b, n, 3, num_heads, three_d // 3 // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return x.transpose(1, 2).reshape(b, n, three_d // 3)


def _train_pass(fn: Callable[[torch.Tensor], torch.Tensor], qkv: torch.Tensor, grad_out: torch.Tensor) -> None:
    x = qkv.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
    torch.autograd.backward(out, grad_out)


def _attention_choice(qkv: torch.Tensor, num_heads: int, mode: str) -> str:
    """``"explicit"`` (:func:`onednn_attention` / :func:`onednn_attention_train`, GEMMs per
    :func:`_mm`) or ``"sdpa"`` for fp32 ``qkv`` under the current setting: the faster for this
    shape, timed on ``qkv`` itself (``mode="train"``: forward + backward with a stand-in gradient
    made of ``qkv``'s own values, so no RNG draw)."""
    if _SETTING == "onednn":
        return "explicit"
    b, n, three_d = qkv.shape
    key = ("attn", mode, b, n, num_heads, three_d // 3 // num_heads, torch.get_num_threads())
    choice = _CHOICES.get(key)
    if choice is None:
        with torch.no_grad():
            if mode == "forward":
                cands = {"sdpa": lambda: _sdpa(qkv, num_heads), "explicit": lambda: onednn_attention(qkv, num_heads)}
            else:
                g = qkv.detach()[..., : three_d // 3].contiguous()
                cands = {"sdpa": lambda: _train_pass(lambda x: _sdpa(x, num_heads), qkv, g),
                         "explicit": lambda: _train_pass(lambda x: onednn_attention_train(x, num_heads)[0], qkv, g)}
        choice = _choose(key, cands, "sdpa")
    return choice


def attention(qkv: torch.Tensor, num_heads: int, dropout_p: float = 0.0) -> torch.Tensor:
    """Multi-head softmax attention from a fused projection.

    Args:
        qkv: ``[B, N, 3·D]`` ordered ``(3 h hd)`` (VideoMAE's fused qkv linear).
        dropout_p: attention dropout (callers pass 0 outside training).
    Returns:
        ``[B, N, D]`` with the heads concatenated.
    """
    b, n, three_d = qkv.shape
    if (n >= MIN_ATTENTION_TOKENS and dropout_p == 0.0 and qkv.device.type == "cpu" and hardware.ONEDNN_AVAILABLE
            and _SETTING != "aten"):
        # (custom ops bypass autocast: a bf16-autocast teacher hands in its bf16 qkv as is)
        if not (torch.is_grad_enabled() and qkv.requires_grad):  # forward only (the HPM teacher)
            if qkv.dtype == torch.bfloat16 and hardware.cpu_bf16_is_fast():
                return onednn_attention(qkv, num_heads)
            if _fp32_cpu(qkv) and _attention_choice(qkv, num_heads, "forward") == "explicit":
                return onednn_attention(qkv, num_heads)
        elif (_fp32_cpu(qkv) and b * num_heads * n * n * 4 <= MAX_SAVED_SCORES_BYTES
              and _attention_choice(qkv, num_heads, "train") == "explicit"):
            return onednn_attention_train(qkv, num_heads)[0]
    return _sdpa(qkv, num_heads, dropout_p)
