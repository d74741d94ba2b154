"""The device check stays runnable: its CPU dry run end to end, its pieces, and the wheel set.

No `__init__.py` in this folder: as a package it would be imported as `tools` and hide the
checkout's `tools` package."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.lib import device_check as dc
from tools.lib import device_wheels as dw

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_dry_run_writes_one_json_and_a_log(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", PIP_NO_INDEX="1")
    env.pop("OUT", None)
    res = subprocess.run(["bash", str(ROOT / "tools" / "device_check.sh"), "--device", "cpu", "--tiny",
                          "--out", str(tmp_path), "--work", str(tmp_path / "work")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "device_check.log").read_text()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:] + log[-5000:]
    assert "===== install" not in log and "pip install" not in log  # the CPU mode installs nothing
    out = json.loads((tmp_path / "device_check.json").read_text())
    steps = out["steps"]
    assert sorted(steps) == sorted(dc.STEPS) and out["failed_steps"] == []
    assert steps["environment"]["cuda_available"] is False
    n_cuda_tests = steps["tests"]["skipped"]
    assert n_cuda_tests >= 15 and steps["tests"]["passed"] == steps["tests"]["failed"] == 0
    bench = steps["benchmark"]
    for name in ("hf", "plain", "plain_decmask", "hpm", "hpm_decmask", "hpm_lowres_2", "hpm_subset_0.25",
                 "hpm_decmask_lowres_2"):
        assert bench[f"{name}_clips_per_s"] > 0 and 0 < bench[f"{name}_mfu"] < 1, name
    assert bench["gemm_peak_gflops"] > 0 and bench["config"]["precision"] == "bf16"
    train = steps["train"]
    assert train["rc"] == 0 and train["last_step"]["step"] == 3 and 0 <= train["data_wait_frac"] <= 1
    assert "skipped" in steps["compile"]
    assert out["targets"]["plain_mfu"]["value"] == bench["plain_mfu"]
    assert out["targets"]["no_host_device_sync_in_step"]["met"] is None  # not measured without a GPU
    for name in dc.STEPS[1:4]:
        assert f"===== {name}:" in log


def test_junit_counts_and_targets(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="a" name="ok"/>'
                   '<testcase classname="test_no_sync" name="t[hpm]"><failure message="x"/></testcase>'
                   '<testcase classname="b" name="s"><skipped/></testcase></testsuite></testsuites>')
    counts = dc.junit_counts(xml)
    assert counts == {"passed": 1, "failed": 1, "skipped": 1, "failures": ["test_no_sync::t[hpm]"]}
    t = dc.targets({"plain_clips_per_s": 310.0, "plain_mfu": 0.25}, counts)
    assert t["plain_clips_per_s_per_gpu"]["met"] is True and t["plain_mfu"]["met"] is False
    assert t["hpm_cheap_teacher_vs_plain_time"]["met"] is None
    assert t["no_host_device_sync_in_step"]["met"] is False
    assert [dc.batch_for_memory(g) for g in (79.2, 39.4, 23.6, 11.0)] == [64, 32, 16, 8]
    assert dc.last_json("x\n{\"a\": 1}\n{broken\n") == {"a": 1}


def test_wheel_set_is_what_the_roots_need_minus_the_device(tmp_path):
    pins = dw.wheel_set()
    for name in ("deepspeed", "decord", "av", "fvcore", "iopath", "pytorchvideo", "omegaconf", "pytest",
                 "hjson", "yacs", "setuptools"):
        assert name in pins, name
    for name in ("torch", "numpy", "transformers", "timm", "safetensors", "pyyaml", "tqdm", "nvidia-cublas"):
        assert name not in pins, name
    env = dw.target_environment()
    have = {**dw.device_provided(env), **pins}
    for name in pins:  # closed: every requirement (for Python 3.12 on Linux) is shipped or on the device
        import importlib.metadata as md

        for req in dw._requirements(md.distribution(name), env):
            assert dw.canonicalize_name(req.name) in have, f"{name} requires {req}"


def _python312():
    """A working CPython 3.12 on this machine (a pyenv shim may exist without the version selected)."""
    candidates = [shutil.which("python3.12"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))]
    for exe in filter(None, candidates):
        if subprocess.run([exe, "--version"], capture_output=True).returncode == 0:
            return exe
    return None


@pytest.mark.slow
def test_device_wheels_install_into_a_clean_target(tmp_path):
    """Needs PyPI: builds the set, installs it for CPython 3.12 into an empty --target, checks it is
    complete, and imports the project's dependencies from it."""
    dest, target, pure = tmp_path / "wheels", tmp_path / "target", tmp_path / "pure"
    report = dw.build_wheels(dest)
    assert report["wheels_bytes"] + dw.tree_bytes(ROOT) <= dw.LIMIT_BYTES
    wheels = sorted(str(w) for w in dest.glob("*.whl"))
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check"]
    plat = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--target", str(target),
            *(a for p in dw.PLATFORMS for a in ("--platform", p))]
    subprocess.run(pip + plat + wheels, check=True, capture_output=True)
    assert dw.missing_requirements(target) == []
    subprocess.run(pip + ["--target", str(pure)] + [w for w in wheels if w.endswith("-none-any.whl")], check=True,
                   capture_output=True)
    code = ("import deepspeed, fvcore, iopath, omegaconf, pytorchvideo, sys\n"
            "import videohpm.config, videohpm.engine\n"
            "bad = [m.__name__ for m in (deepspeed, fvcore, iopath, omegaconf, pytorchvideo) "
            "if not m.__file__.startswith(sys.argv[1])]\n"
            "assert not bad, bad\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pure), str(ROOT)]))
    subprocess.run([sys.executable, "-c", code, str(pure)], check=True, env=env, cwd=ROOT)
    py312 = _python312()
    if py312:  # the binary wheels load in the device's interpreter
        code = ("import av, glob, hjson, msgpack, psutil, sys, importlib.util as u\n"
                # pydantic-core's extension alone: its package needs typing-extensions (torch's, on the device)
                "so = glob.glob(sys.argv[1] + '/pydantic_core/_pydantic_core*.so')[0]\n"
                "spec = u.spec_from_file_location('_pydantic_core', so)\n"
                "spec.loader.exec_module(u.module_from_spec(spec))\n")
        subprocess.run([py312, "-c", code, str(target)], check=True, env=dict(os.environ, PYTHONPATH=str(target)))


def test_mfu_is_the_step_rate_over_the_measured_gemm_peak(monkeypatch):
    import argparse

    import torch

    from tools.lib.benchmarks import model as bench

    assert bench.gemm_peak_gflops(torch.device("cpu"), torch.float32, 64, iters=2) > 0
    calls = []
    monkeypatch.setattr(bench, "gemm_peak_gflops", lambda device, dtype, n: calls.append((dtype, n)) or 1000.0)
    v = argparse.Namespace(name="plain", peak_mem=[], step_mem=[])
    res = {"plain_step_s": 0.5}
    args = argparse.Namespace(device="cpu", mfu=True, precision="bf16", peak_gemm_size=0)
    bench._add_mfu_and_memory(res, args, [v], {"plain": 100.0})
    assert calls == [(torch.bfloat16, 1024)]  # the run's precision; 1024³ on a CPU
    assert res["gemm_peak_gflops"] == 1000.0 and res["plain_mfu"] == 100.0 / 0.5 / 1000.0
    assert "plain_peak_mem_mib" not in res  # memory is reported for CUDA steps only
