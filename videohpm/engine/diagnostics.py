"""Run diagnostics of the training loop: data wait, compute time, peak memory, loader starvation.

Why the GPU is idle (the loader cannot keep up) or out of memory are the two questions users of
video MAE code ask most; these numbers answer them from the run's own log. Measured per rank, on
the host only (no host-device sync is added to the step):

* **data wait**: time blocked in `next(loader)` (`timed(loader)`): with `data.num_workers=0` all
  of decoding and augmentation, with workers the time the prefetch queue was empty.
* **compute**: the rest of the loop's time between two log points, read right after the log
  point's loss all-reduce (where the host already waits for the device, so on CUDA it covers the
  queued device work). Time inside `excluded()` (mid-epoch checkpoint writes) counts as neither.
* **peak memory** (MiB): `torch.cuda.max_memory_allocated` on CUDA, else the main process's peak
  resident set size; peaks since the process started.

`step_values()` (per log point) and `epoch_values()` (per epoch) are collective (one all-reduce of
a `[world, 4]` tensor) and report the rank the loader starved most, so its numbers add up.
"""
from __future__ import annotations

import contextlib
import resource
import sys
import time
from typing import Any, Dict, Iterable, Iterator

import torch

from videohpm import distributed as vdist

__all__ = ["peak_memory_mb", "memory_kind", "LoopDiagnostics"]


def memory_kind(device: torch.device) -> str:
    """`"cuda_max_allocated"` on a CUDA device, `"rss_peak"` otherwise."""
    return "cuda_max_allocated" if device.type == "cuda" else "rss_peak"


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA `max_memory_allocated(device)` on a GPU (a host
    query, no sync), else the peak resident set size of the process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class LoopDiagnostics:
    """Host-side timers of one training loop (see the module docstring for the fields).

    Use: `start_epoch(global_step)` at the top of an epoch, iterate `timed(loader)` instead of
    the loader, `step_values(global_step)` at each log point and `epoch_values()` at the end of
    the epoch.
    """

    def __init__(self, device: torch.device, clock=time.perf_counter) -> None:
        self.device = device
        self.clock = clock
        self.kind = memory_kind(device)
        self.start_epoch(0)

    # ------------------------------------------------------------------ timing
    def start_epoch(self, global_step: int) -> None:
        now = self.clock()
        self._window_step = int(global_step)
        self._epoch_start = self._window_start = now
        self._wait_window = self._wait_epoch = 0.0
        self._excluded_window = self._excluded_epoch = 0.0

    def timed(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Yield the loader's batches, adding the time blocked in `next()` to the data wait."""
        it = iter(loader)
        while True:
            t0 = self.clock()
            try:
                batch = next(it)
            except StopIteration:
                self._add_wait(self.clock() - t0)
                return
            self._add_wait(self.clock() - t0)
            yield batch

    def _add_wait(self, dt: float) -> None:
        self._wait_window += dt
        self._wait_epoch += dt

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """Time spent inside counts as neither data wait nor compute (checkpoint writes)."""
        t0 = self.clock()
        try:
            yield
        finally:
            dt = self.clock() - t0
            self._excluded_window += dt
            self._excluded_epoch += dt

    # ------------------------------------------------------------------ records
    def _rows(self, values) -> list:
        """Every rank's `values` (one all-reduce of a [world, n] tensor holding this rank's row)."""
        world, rank = vdist.get_world_size(), vdist.get_rank()
        t = torch.zeros(world, len(values), dtype=torch.float64 if self.device.type == "cpu" else torch.float32,
                        device=self.device)
        t[rank] = torch.tensor(values, dtype=t.dtype)
        return vdist.all_reduce(t, "sum").tolist()

    def _starved_rank(self, values) -> list:
        """The row (data wait, compute, frac, mem) of the rank whose loader starved it most, with
        the peak memory replaced by the largest over ranks."""
        rows = self._rows(values)
        worst = max(rows, key=lambda r: r[2])
        return worst[:3] + [max(r[3] for r in rows)]

    def step_values(self, global_step: int) -> Dict[str, Any]:
        """Diagnostics of the window since the previous call or the epoch start (collective; call
        it right after the log point's loss all-reduce): `data_wait_s` and `compute_s` (mean
        seconds per optimizer step), `data_wait_frac` (wait / (wait + compute)) of the most
        starved rank, `peak_mem_mb` (largest over ranks) and `mem_kind`
        (`"cuda_max_allocated"` or `"rss_peak"`)."""
        now = self.clock()
        steps, self._window_step = int(global_step) - self._window_step, int(global_step)
        wall = max(now - self._window_start - self._excluded_window, 0.0)
        wait = min(self._wait_window, wall)
        compute = wall - wait
        steps = max(int(steps), 1)
        frac = wait / wall if wall > 0 else 0.0
        wait_s, compute_s, frac, mem = self._starved_rank([wait / steps, compute / steps, frac,
                                                           peak_memory_mb(self.device)])
        self._window_start, self._wait_window, self._excluded_window = now, 0.0, 0.0
        return {"data_wait_s": wait_s, "compute_s": compute_s, "data_wait_frac": frac, "peak_mem_mb": mem,
                "mem_kind": self.kind}

    def epoch_values(self) -> Dict[str, Any]:
        """The epoch's totals (collective): `data_wait_frac` = the fraction of the loop's time the
        loader starved the step, with `data_wait_total_s` and `compute_total_s` of that most starved
        rank, and `peak_mem_mb`."""
        wall = max(self.clock() - self._epoch_start - self._excluded_epoch, 0.0)
        wait = min(self._wait_epoch, wall)
        frac = wait / wall if wall > 0 else 0.0
        wait, compute, frac, mem = self._starved_rank([wait, wall - wait, frac, peak_memory_mb(self.device)])
        return {"data_wait_frac": frac, "data_wait_total_s": wait, "compute_total_s": compute, "peak_mem_mb": mem,
                "mem_kind": self.kind}
