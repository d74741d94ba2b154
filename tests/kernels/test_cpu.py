"""videohpm.kernels.cpu: the oneDNN kernels' values and gradients, and the per-machine choice.

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

from videohpm import hardware
from videohpm.kernels import cpu as cpu_kernels

needs_onednn = pytest.mark.skipif(not hardware.ONEDNN_AVAILABLE, reason="PyTorch built without oneDNN (mkldnn)")
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
    bf16, SDPA's bf16 kernel elsewhere — never oneDNN's missing bf16 inner product (which crashes
    on AVX2-only CPUs), whatever the setting."""
    kernels(setting)
    torch.manual_seed(0)
    qkv = torch.randn(2, 520, 3 * 16)
    ref = _sdpa_reference(qkv, 2)
    with torch.inference_mode():
        low = cpu_kernels.attention(qkv.bfloat16(), 2)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.02)


@needs_onednn
@pytest.mark.skipif(not hardware.cpu_bf16_is_fast(), reason="no native bf16 on this CPU (AVX512-BF16 / AMX), "
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


@pytest.fixture
def fresh_choices(monkeypatch, kernels):
    """`auto` with no choice made yet and the cache off (a test may point it elsewhere); the
    process's choices come back afterwards."""
    saved = dict(cpu_kernels._CHOICES), dict(cpu_kernels._TUNED)
    cpu_kernels._CHOICES.clear()
    cpu_kernels._TUNED.clear()
    monkeypatch.setenv("VIDEOHPM_KERNEL_CACHE", "off")
    kernels("auto")
    yield
    cpu_kernels._CHOICES.clear()
    cpu_kernels._CHOICES.update(saved[0])
    cpu_kernels._TUNED.clear()
    cpu_kernels._TUNED.update(saved[1])


def _fake_clock(monkeypatch, **ms):
    """Replace the timing with fixed times per candidate (ms); count the timings."""
    calls = []

    def best(candidates):
        calls.append(sorted(candidates))
        return {name: ms[name] / 1e3 for name in candidates}

    monkeypatch.setattr(cpu_kernels, "_best_times", best)
    return calls


def _grad_fn_names(t: torch.Tensor) -> list:
    fn = t.grad_fn
    return [type(fn).__name__, *(type(g).__name__ for g, _ in fn.next_functions if g is not None)]


# a layer big enough to be timed (M·K·N = 2^24 multiply-adds = MIN_TUNED_MACS)
_X, _W, _B = (torch.randn(256, 256), torch.randn(256, 256), torch.randn(256))


def _linear_case():
    x, w, b = (t.clone().requires_grad_(True) for t in (_X, _W, _B))
    return x, w, b, torch.randn(256, 256, generator=torch.Generator().manual_seed(1))


@needs_onednn
@pytest.mark.parametrize("onednn_ms, expect", [(1.0, "onednn"), (1.99, "aten"), (3.0, "aten")])
def test_auto_runs_the_faster_kernel_per_shape(fresh_choices, monkeypatch, onednn_ms, expect):
    """`auto` times oneDNN against ATen on each GEMM of the layer (forward, both backward GEMMs)
    and runs the faster; a tie within TUNE_MARGIN (1.99 vs 2.0 ms) goes to plain F.linear."""
    calls = _fake_clock(monkeypatch, aten=2.0, onednn=onednn_ms)
    x, w, b, g = _linear_case()
    out = cpu_kernels.linear(x, w, b)
    assert any("onednn_mm_nt" in n for n in _grad_fn_names(out)) == (expect == "onednn"), _grad_fn_names(out)
    assert len(calls) == 3  # the layer's three GEMMs, each timed once
    ref = F.linear(x, w, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    for got, want in zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    cpu_kernels.linear(x, w, b).sum()  # the same shape again: no new timing
    assert len(calls) == 3
    shapes = cpu_kernels.chosen_kernels()["shapes"]
    assert {v["choice"] for v in shapes.values()} == {expect} and all(v["source"] == "timed" for v in shapes.values())
    assert cpu_kernels.chosen_kernels()["fp32"].startswith("timed per shape: 3 shapes")
    with torch.no_grad():  # forward only: one GEMM, already timed
        cpu_kernels.linear(x, w, b)
    assert len(calls) == 3


@needs_onednn
def test_small_layers_take_f_linear_untimed(fresh_choices, monkeypatch):
    calls = _fake_clock(monkeypatch, aten=9.0, onednn=1.0)
    x, w = torch.randn(64, 32, requires_grad=True), torch.randn(48, 32)
    out = cpu_kernels.linear(x, w)
    assert out.grad_fn.name() == F.linear(x, w).grad_fn.name() and calls == []


@needs_onednn
@pytest.mark.parametrize("faster", ["explicit", "sdpa"])
def test_auto_attention_runs_the_faster_per_shape(fresh_choices, monkeypatch, faster):
    calls = _fake_clock(monkeypatch, explicit=1.0 if faster == "explicit" else 5.0, sdpa=2.0)
    monkeypatch.setattr(cpu_kernels, "MIN_TUNED_MACS", 1 << 40)  # the GEMMs inside take ATen untimed
    torch.manual_seed(0)
    qkv = torch.randn(2, 520, 3 * 16, requires_grad=True)
    grad = torch.randn(2, 520, 16)
    out = cpu_kernels.attention(qkv, 2)
    assert ("onednn_attention_train" in type(out.grad_fn).__name__) == (faster == "explicit")
    ref = _sdpa_reference(qkv, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(out, qkv, grad)[0], torch.autograd.grad(ref, qkv, grad)[0],
                               rtol=1e-4, atol=1e-5)
    with torch.inference_mode():  # forward-only (the teacher): its own choice
        torch.testing.assert_close(cpu_kernels.attention(qkv.detach(), 2), ref.detach(), rtol=1e-5, atol=1e-5)
    assert calls == [["explicit", "sdpa"], ["explicit", "sdpa"]]
    assert {k.split("_")[1]: v["choice"] for k, v in cpu_kernels.chosen_kernels()["shapes"].items()} == {
        "train": faster, "forward": faster}


@needs_onednn
def test_timing_draws_no_random_numbers(fresh_choices):
    """Real timing on the call's own operands: the global RNG is untouched (a run's results do not
    depend on whether it timed or read the cache) and the results are the plain ops'."""
    torch.manual_seed(0)
    x, w, b, g = _linear_case()
    qkv = torch.randn(1, 520, 3 * 16, requires_grad=True)
    state = torch.random.get_rng_state()
    out = cpu_kernels.linear(x, w, b)
    att = cpu_kernels.attention(qkv, 2)
    with torch.no_grad():
        att_fwd = cpu_kernels.attention(qkv, 2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert len(cpu_kernels.chosen_kernels()["shapes"]) >= 5  # 3 GEMMs + attention train / forward
    torch.testing.assert_close(out, F.linear(x, w, b), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(att, _sdpa_reference(qkv, 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(att_fwd, att.detach(), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_choices_persist_per_machine_first_writer_wins(fresh_choices, monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOHPM_KERNEL_CACHE", str(tmp_path))
    calls = _fake_clock(monkeypatch, aten=1.0, onednn=2.0)
    x, w, b, _ = _linear_case()
    cpu_kernels.linear(x, w, b)
    files = sorted(tmp_path.glob("*/*.json"))
    assert len(files) == 3 and len(calls) == 3 and not list(tmp_path.glob("*/.tmp-*"))
    assert {json.loads(f.read_text())["choice"] for f in files} == {"aten"}
    # a new process (here: the choices forgotten) with a clock that now favours oneDNN reads the cache
    cpu_kernels._CHOICES.clear()
    cpu_kernels._TUNED.clear()
    calls = _fake_clock(monkeypatch, aten=2.0, onednn=1.0)
    out = cpu_kernels.linear(x, w, b)
    assert calls == [] and out.grad_fn.name() == F.linear(x, w, b).grad_fn.name()
    assert {v["source"] for v in cpu_kernels.chosen_kernels()["shapes"].values()} == {"cache"}
    # a second writer of a key keeps the first one's record
    name = files[0].stem
    assert cpu_kernels._cache_write(name, {"choice": "onednn", "ms": {}})["choice"] == "aten"
    assert json.loads(files[0].read_text())["choice"] == "aten"


_TWO_PROCESSES = r"""
import json, sys
import torch
from videohpm import hardware
from videohpm.kernels import cpu as ck
x, w = torch.randn(256, 256, requires_grad=True), torch.randn(256, 256, requires_grad=True)
ck.linear(x, w).backward(torch.ones(256, 256))  # a contiguous gradient, as a loss gives
print(json.dumps({k: [v["choice"], v["source"]] for k, v in ck.chosen_kernels()["shapes"].items()}))
"""


@needs_onednn
def test_processes_on_one_machine_agree(tmp_path):
    """The second process reads every choice the first one timed (DeepSpeed ranks, a resumed run)."""
    env = {**os.environ, "VIDEOHPM_KERNEL_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1",
           "VIDEOHPM_CPU_KERNELS": "auto"}
    runs = [subprocess.run([sys.executable, "-c", _TWO_PROCESSES], env=env, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert len(first) == 3 and {s for _, s in first.values()} == {"timed"}
    assert {k: c for k, (c, _) in second.items()} == {k: c for k, (c, _) in first.items()}
    assert {s for _, s in second.values()} == {"cache"}
    with pytest.raises(ValueError, match="auto"):
        cpu_kernels.set_cpu_kernels("mkl")


_PROBE = r"""
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import torch
from videohpm import hardware
from videohpm.kernels import cpu as ck
x, w = torch.randn(5, 8), torch.randn(4, 8)
for _ in range(3):
    ck.linear(x, w)
print(json.dumps({"chosen": ck.chosen_kernels(), "probe": hardware.bf16_probe() if hardware.ONEDNN_AVAILABLE else False}))
"""


def _probe(env: dict) -> tuple:
    full = {k: v for k, v in os.environ.items() if k not in AVX2_CAPS and k != "VIDEOHPM_CPU_KERNELS"}
    full.update(env, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True, text=True, timeout=120)
    return r.returncode, (json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None), r.stderr


def test_isa_caps_give_the_avx2_only_choice_logged_once():
    """Under ONEDNN_MAX_CPU_ISA=AVX2 + ATEN_CPU_CAPABILITY=avx2 (an AVX2-only CPU, emulated on any
    bigger one) the capability reads AVX2, no native bf16 (oneDNN's bf16 GEMM itself fails), the
    fp32 kernels are timed per shape (the probe's layer is too small to time), and the setting is
    logged once."""
    rc, out, err = _probe(AVX2_CAPS)
    assert rc == 0, err
    cap = out["chosen"]["cpu"]
    assert cap["aten"] == "AVX2" and cap["caps"] == AVX2_CAPS
    assert not cap["onednn_avx512"] and not cap["bf16_fast"] and out["probe"] is False
    assert out["chosen"]["fp32"].startswith("timed per shape") and out["chosen"]["bf16"].startswith("emulated")
    assert err.count("videohpm CPU kernels:") == 1, err


def test_env_override_and_bad_value():
    rc, out, err = _probe({**AVX2_CAPS, "VIDEOHPM_CPU_KERNELS": "onednn"})
    assert rc == 0, err
    assert out["chosen"]["setting"] == "onednn"
    assert out["chosen"]["fp32"] == ("onednn" if out["chosen"]["cpu"]["mkldnn"] else "aten")
    rc, _, err = _probe({"VIDEOHPM_CPU_KERNELS": "fast"})
    assert rc != 0 and "VIDEOHPM_CPU_KERNELS" in err and "'fast'" in err
