"""videohpm.models.cpu_kernels: the oneDNN kernels' values and gradients, and the per-machine choice.

Everything here holds on every CPU: the oneDNN fp32 kernels are forced on (they run on any x86
oneDNN supports), the bf16 oneDNN kernel is only called where the CPU has native bf16 (else the
test checks the fallback), and the ISA-cap behaviour runs in subprocesses with the caps set
(`.ci/run` runs this file once more under an emulated AVX2-only CPU).
"""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from videohpm.models import cpu_kernels

needs_onednn = pytest.mark.skipif(not cpu_kernels._AVAILABLE, reason="PyTorch built without oneDNN (mkldnn)")
AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


@pytest.fixture
def kernels():
    """Set the kernel choice for one test; the previous setting comes back afterwards."""
    previous = cpu_kernels.cpu_kernels()
    yield cpu_kernels.set_cpu_kernels
    cpu_kernels.set_cpu_kernels(previous)


def _sdpa_reference(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, three_d = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, three_d // 3 // heads).permute(2, 0, 3, 1, 4).unbind(0)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, three_d // 3)


@needs_onednn
def test_onednn_attention_matches_sdpa_values_and_grads(kernels):
    kernels("onednn")
    torch.manual_seed(0)
    qkv = torch.randn(2, 520, 3 * 16, requires_grad=True)  # >= 512 tokens: the oneDNN path
    grad = torch.randn(2, 520, 16)
    ref = _sdpa_reference(qkv, 2)
    (g_ref,) = torch.autograd.grad(ref, qkv, grad)
    out = cpu_kernels.attention(qkv, 2)
    assert "onednn_attention_train" in type(out.grad_fn).__name__
    (g_out,) = torch.autograd.grad(out, qkv, grad)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():  # forward-only kernel (HPM teacher)
        torch.testing.assert_close(cpu_kernels.attention(qkv.detach(), 2), ref.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.ops.videohpm.onednn_attention(qkv.detach(), 2), ref.detach(),
                                   rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("setting", ["auto", "onednn"])
def test_bf16_attention_runs_on_every_cpu(kernels, setting):
    """A bf16 teacher's attention (≥ 512 tokens): oneDNN's bf16 GEMMs where the CPU has native
    bf16, SDPA's bf16 kernel elsewhere — never oneDNN's missing bf16 inner product (the crash of
    issue 12 on AVX2-only CPUs), whatever the setting."""
    kernels(setting)
    torch.manual_seed(0)
    qkv = torch.randn(2, 520, 3 * 16)
    ref = _sdpa_reference(qkv, 2)
    with torch.inference_mode():
        low = cpu_kernels.attention(qkv.bfloat16(), 2)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.02)


@needs_onednn
@pytest.mark.skipif(not cpu_kernels.cpu_bf16_is_fast(), reason="no native bf16 on this CPU (AVX512-BF16 / AMX), "
                    "or capped by ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY: oneDNN has no bf16 GEMM to test")
def test_onednn_bf16_attention_kernel_where_native():
    torch.manual_seed(0)
    qkv = torch.randn(2, 520, 3 * 16)
    with torch.inference_mode():
        low = torch.ops.videohpm.onednn_attention(qkv.bfloat16(), 2)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), _sdpa_reference(qkv, 2), rtol=0.05, atol=0.02)


@needs_onednn
def test_onednn_linear_matches_f_linear_values_and_grads(kernels):
    kernels("onednn")
    torch.manual_seed(0)
    x = torch.randn(3, 7, 24, requires_grad=True)
    w = torch.randn(10, 24, requires_grad=True)
    b = torch.randn(10, requires_grad=True)
    g = torch.randn(3, 7, 10)
    ref = F.linear(x, w, b)
    out = cpu_kernels.linear(x, w, b)
    assert "onednn_mm_nt" in type(out.grad_fn.next_functions[0][0]).__name__  # under the view to [3, 7, 10]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)
    kernels("aten")
    assert cpu_kernels.linear(x, w, b).grad_fn.name() == F.linear(x, w, b).grad_fn.name()


def test_auto_follows_the_capability(kernels):
    """`auto` runs oneDNN's fp32 kernels exactly where oneDNN may use AVX-512, else F.linear."""
    kernels("auto")
    x, w = torch.randn(5, 8, requires_grad=True), torch.randn(4, 8)
    on = cpu_kernels._AVAILABLE and cpu_kernels.onednn_has_avx512()
    assert cpu_kernels.chosen_kernels()["fp32"] == ("onednn" if on else "aten")
    # the kernel works on [M, K] rows and the result is viewed back to x's shape: look one level down
    fn = cpu_kernels.linear(x, w).grad_fn
    names = [type(fn).__name__, *(type(g).__name__ for g, _ in fn.next_functions if g is not None)]
    assert any("onednn_mm_nt" in n for n in names) == on, names
    with pytest.raises(ValueError, match="auto"):
        cpu_kernels.set_cpu_kernels("mkl")


@pytest.mark.parametrize("cap, avx512, bf16, amx", [
    (None, True, True, True), ("ALL", True, True, True), ("AVX2", False, False, False), ("SSE41", False, False, False),
    ("AVX512_CORE", True, False, False), ("AVX512_CORE_VNNI", True, False, False),
    ("AVX512_CORE_BF16", True, True, False), ("AVX512_CORE_AMX", True, True, True), ("AVX10_1_512", True, True, False),
    ("bogus", False, False, False),
])
def test_onednn_isa_cap_levels(monkeypatch, cap, avx512, bf16, amx):
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert [cpu_kernels._onednn_cap_allows(level) for level in ("avx512", "bf16", "amx")] == [avx512, bf16, amx]


_PROBE = r"""
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import torch
from videohpm.models import cpu_kernels as ck
x, w = torch.randn(5, 8), torch.randn(4, 8)
for _ in range(3):
    ck.linear(x, w)
print(json.dumps({"chosen": ck.chosen_kernels(), "probe": ck._bf16_probe() if ck._AVAILABLE else False}))
"""


def _probe(env: dict) -> tuple:
    full = {k: v for k, v in os.environ.items() if k not in AVX2_CAPS and k != "VIDEOHPM_CPU_KERNELS"}
    full.update(env, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True, text=True, timeout=120)
    return r.returncode, (json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None), r.stderr


def test_isa_caps_give_the_avx2_only_choice_logged_once():
    """Under ONEDNN_MAX_CPU_ISA=AVX2 + ATEN_CPU_CAPABILITY=avx2 (an AVX2-only CPU, emulated on any
    bigger one) the capability reads AVX2, no native bf16 (oneDNN's bf16 GEMM itself fails), the
    plain kernels are chosen, and the choice is logged once."""
    rc, out, err = _probe(AVX2_CAPS)
    assert rc == 0, err
    cap = out["chosen"]["cpu"]
    assert cap["aten"] == "AVX2" and cap["caps"] == AVX2_CAPS
    assert not cap["onednn_avx512"] and not cap["bf16_fast"] and out["probe"] is False
    assert out["chosen"]["fp32"] == "aten" and out["chosen"]["bf16"].startswith("emulated")
    assert err.count("videohpm CPU kernels:") == 1, err


def test_env_override_and_bad_value():
    rc, out, err = _probe({**AVX2_CAPS, "VIDEOHPM_CPU_KERNELS": "onednn"})
    assert rc == 0, err
    assert out["chosen"]["setting"] == "onednn"
    assert out["chosen"]["fp32"] == ("onednn" if out["chosen"]["cpu"]["mkldnn"] else "aten")
    rc, _, err = _probe({"VIDEOHPM_CPU_KERNELS": "fast"})
    assert rc != 0 and "VIDEOHPM_CPU_KERNELS" in err and "'fast'" in err
