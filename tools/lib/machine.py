"""What machine a run's timings come from: the calibration figure and the CPU kernels chosen."""
from __future__ import annotations

from typing import Any, Dict

__all__ = ["machine_summary", "format_machine"]


def machine_summary() -> Dict[str, Any]:
    """The calibration figure (GFLOP/s of a 1-thread fp32 1024³ GEMM), ATen's CPU capability, the
    ISA caps in the environment and the kernels chosen: what machine the timings are from."""
    from tools.lib.benchmarks.calibrate import gemm_gflops
    from videohpm.kernels import cpu as cpu_kernels

    kernels = cpu_kernels.chosen_kernels()
    cap = kernels["cpu"]
    return {"gemm_gflops_1thread": round(gemm_gflops(), 1), "aten": cap["aten"], "caps": cap["caps"],
            "bf16_fast": cap["bf16_fast"], "kernels": kernels["fp32"]}


def format_machine(m: Dict[str, Any]) -> str:
    """One line of :func:`machine_summary`'s content for a report ("not recorded" when empty)."""
    if not m:
        return "not recorded"
    caps = ", ISA caps " + " ".join(f"{k}={v}" for k, v in m.get("caps", {}).items()) if m.get("caps") else ""
    return (f"calibration {m.get('gemm_gflops_1thread', float('nan')):.0f} GFLOP/s (1-thread fp32 1024³ GEMM), "
            f"ATen {m.get('aten')}{caps}, fp32 kernels {m.get('kernels')}")

