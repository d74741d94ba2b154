"""One metric logger: tqdm progress bar, TensorBoard scalars and JSON lines (rank 0 only).

Loss parts are accumulated *on the device* between log points (`StepAverager`), so a training
step never waits for the GPU; every `train.log_every` steps the sums are all-reduced across ranks
and read once (the only host-device sync logging needs).

JSON lines (`<output_dir>/log.jsonl`): one object per log point
`{"type": "step", "step": global optimizer step, "epoch", "progress", "loss", <parts>, "lr", "wd",
"clips_per_s", "data_wait_s", "compute_s", "data_wait_frac", "peak_mem_mb", "mem_kind", "time"}`
and one per epoch `{"type": "epoch", ...}` (train averages, validation top-1/top-5, skipped
steps, broken videos, `data_wait_frac`: the share of the time the loader starved the step; see
`videohpm.engine.diagnostics`). Appending keeps the history across resumes; a reader
takes the last record of each step.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, Mapping

import torch
from tqdm.auto import tqdm

from videohpm import distributed as vdist

__all__ = ["StepAverager", "MetricLogger"]


class StepAverager:
    """Running sums of scalar tensors kept on the device; `pop()` returns rank-averaged means."""

    def __init__(self) -> None:
        self._sums: Dict[str, torch.Tensor] = {}
        self._count = 0

    def add(self, values: Mapping[str, Any]) -> None:
        """Accumulate this micro-step's detached scalars (tensors or floats)."""
        for k, v in values.items():
            t = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            if t.numel() != 1:
                continue
            t = t.reshape(())
            if k in self._sums:
                self._sums[k] = self._sums[k] + t.to(self._sums[k].device)
            else:
                self._sums[k] = t.clone()
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def pop(self, device: torch.device) -> Dict[str, float]:
        """Means since the last `pop`, averaged over ranks (collective: all ranks must call it)."""
        if not self._sums:
            self._count = 0
            return {}
        keys = sorted(self._sums)
        stacked = torch.stack([self._sums[k].to(device) for k in keys]) / max(self._count, 1)
        vdist.all_reduce(stacked, "mean")
        values = stacked.tolist()
        self._sums.clear()
        self._count = 0
        return dict(zip(keys, values))


# Shown in the tqdm postfix besides the loss parts: schedule, throughput and the run diagnostics
# of `engine.diagnostics` (data wait / compute seconds per step, peak memory in MiB).
_BAR_KEYS = ("lr", "alpha", "clips_per_s", "acc", "data_wait_s", "compute_s", "peak_mem_mb")


def _fmt(v: float) -> str:
    if v == 0 or math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.3e}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}"


class MetricLogger:
    """Writes progress (tqdm), TensorBoard scalars and JSON lines on rank 0; silent elsewhere.

    Args:
        output_dir: run folder; `log.jsonl` and `tb/` go there.
        tensorboard: create a `SummaryWriter` under `<output_dir>/tb`.
        progress_bar: show a tqdm bar (rank 0).
        run_id: written into every JSON line as `"run_id"`, so that the records of two runs
            appended to one `log.jsonl` can be told apart (`videohpm.engine.runs`).
    """

    def __init__(self, output_dir: str, tensorboard: bool = True, progress_bar: bool = True,
                 run_id: str = "") -> None:
        self.main = vdist.is_main_process()
        self.run_id = run_id
        self.output_dir = output_dir
        self.bar = None
        self.writer = None
        self.progress_bar = progress_bar
        self._jsonl = None
        if self.main:
            os.makedirs(output_dir, exist_ok=True)
            self._jsonl = open(os.path.join(output_dir, "log.jsonl"), "a", buffering=1)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # lazy: pulls in tensorboard

                self.writer = SummaryWriter(os.path.join(output_dir, "tb"))

    # ------------------------------------------------------------------ progress bar
    def start_epoch(self, epoch: int, epochs: int, total: int, initial: int = 0) -> None:
        """Open the bar for `epoch` (`total` optimizer steps, `initial` already done on resume)."""
        if not (self.main and self.progress_bar):
            return
        self.close_bar()
        self.bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", dynamic_ncols=True,
                        leave=True, mininterval=1.0)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # ------------------------------------------------------------------ records
    def log_step(self, step: int, values: Mapping[str, Any]) -> None:
        """A per-step record: JSON line, TensorBoard `train/<key>` and the bar's postfix."""
        if not self.main:
            return
        record = {"type": "step", "step": int(step), **{k: _jsonable(v) for k, v in values.items()},
                  "time": time.time()}
        self._write(record)
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k not in ("epoch",):
                    self.writer.add_scalar(f"train/{k}", v, step)
        if self.bar is not None:
            show = {k: _fmt(float(v)) for k, v in values.items()
                    if isinstance(v, (int, float)) and (k.startswith("loss") or k in _BAR_KEYS)}
            self.bar.set_postfix(show, refresh=False)

    def log_epoch(self, epoch: int, step: int, values: Mapping[str, Any]) -> None:
        """A per-epoch record (train means, validation metrics, counters)."""
        if not self.main:
            return
        self._write({"type": "epoch", "epoch": int(epoch), "step": int(step),
                     **{k: _jsonable(v) for k, v in values.items()}, "time": time.time()})
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"epoch/{k}", v, epoch)
            self.writer.flush()

    def log_event(self, kind: str, **fields: Any) -> None:
        """A free-form record (resume, non-finite skip, checkpoint written)."""
        if self.main:
            self._write({"type": kind, **{k: _jsonable(v) for k, v in fields.items()}, "time": time.time()})

    def _write(self, record: Dict[str, Any]) -> None:
        assert self._jsonl is not None
        self._jsonl.write(json.dumps({**record, "run_id": self.run_id} if self.run_id else record) + "\n")

    def close(self) -> None:
        self.close_bar()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return v
