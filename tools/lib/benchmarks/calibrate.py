"""Machine calibration: the rate of a 1-thread fp32 1024³ GEMM (``torch.mm``), in GFLOP/s.

One number that says what kind of CPU a timing comes from (the demo report's header and the
benchmark JSON print it): ~45 GFLOP/s on the slowest 2-core AVX2 machine the demo is sized for,
~80 on a Zen 3 AVX2 core, more with AVX-512. It honours the ISA caps in the environment
(``MKL_ENABLE_INSTRUCTIONS``, ``ATEN_CPU_CAPABILITY``), so an emulated AVX2-only run reports
the emulated rate.

    python -m tools.lib.benchmarks.calibrate        # prints the figure (from the checkout's root)
"""
from __future__ import annotations

import time

import torch

__all__ = ["gemm_gflops"]


def gemm_gflops(n: int = 1024, threads: int = 1, repeats: int = 3, min_seconds: float = 0.2) -> float:
    """Best-of-``repeats`` rate of ``n × n @ n × n`` fp32 ``torch.mm`` on ``threads`` threads
    (the caller's thread setting is restored). Takes about ``repeats × min_seconds``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)  # warm-up (MKL/oneDNN initialisation)
        best = float("inf")
        for _ in range(repeats):
            count, t0 = 0, time.perf_counter()
            while True:
                torch.mm(a, b, out=out)
                count += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= min_seconds:
                    break
            best = min(best, elapsed / count)
        return 2.0 * n ** 3 / best / 1e9
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    print(f"1-thread fp32 1024^3 GEMM: {gemm_gflops():.1f} GFLOP/s")
