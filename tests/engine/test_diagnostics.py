"""Run diagnostics (videohpm.engine.diagnostics): data wait, compute time, peak memory, clips/s
in log.jsonl, TensorBoard and the progress bar; the epoch's loader-starvation fraction."""
from __future__ import annotations

import io
import math
import time

import pytest
import torch

from tests.engine.conftest import PRETRAIN_CFG, data_overrides, read_log
from videohpm.config import load_config
from videohpm.engine import Trainer
from videohpm.engine.diagnostics import LoopDiagnostics, peak_memory_mb

STEP_FIELDS = ("data_wait_s", "compute_s", "data_wait_frac", "peak_mem_mb", "mem_kind", "clips_per_s")


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_timings_with_a_fake_clock():
    """Each batch costs 0.3 s in the loader and 0.1 s in the step; a 5 s checkpoint is excluded."""
    clock = _Clock()
    d = LoopDiagnostics(torch.device("cpu"), clock=clock)

    class Loader:
        def __iter__(self):
            for i in range(6):
                clock.t += 0.3
                yield i

    d.start_epoch(global_step=10)
    logs = []
    for i in d.timed(Loader()):
        clock.t += 0.1  # the step
        if i % 2 == 1:  # accum 2 → one optimizer step per two batches, logged every 2 steps
            step = 10 + (i + 1) // 2
            if step % 2 == 0:
                logs.append(d.step_values(step))
            if i == 1:
                with d.excluded():
                    clock.t += 5.0
    assert len(logs) == 1  # step 12 (after 4 batches)
    v = logs[0]
    assert v["data_wait_s"] == pytest.approx(0.6) and v["compute_s"] == pytest.approx(0.2)  # per optimizer step
    assert v["data_wait_frac"] == pytest.approx(0.75) and v["mem_kind"] == "rss_peak"
    assert v["peak_mem_mb"] == pytest.approx(peak_memory_mb(torch.device("cpu")), rel=0.05)
    e = d.epoch_values()
    assert e["data_wait_total_s"] == pytest.approx(6 * 0.3) and e["compute_total_s"] == pytest.approx(6 * 0.1)
    assert e["data_wait_frac"] == pytest.approx(0.75)


def test_peak_memory_is_the_process_rss_peak():
    before = peak_memory_mb(torch.device("cpu"))
    big = torch.ones(64 * 2**20, dtype=torch.uint8)  # +64 MiB touched
    after = peak_memory_mb(torch.device("cpu"))
    del big
    assert after >= before and after > 50  # a torch process is far above 50 MiB
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        assert peak_memory_mb(torch.device("cuda")) == torch.cuda.max_memory_allocated() / 2**20


class _SlowLoader:
    """The trainer's loader, 0.25 s slower per batch: the step must be seen starving."""

    def __init__(self, loader, delay: float) -> None:
        self.loader, self.delay = loader, delay

    def __iter__(self):
        for b in self.loader:
            time.sleep(self.delay)
            yield b


def _run(demo, out, overrides, delay=0.0):
    cfg = load_config(str(PRETRAIN_CFG), [*data_overrides(demo), f"train.output_dir={out}", "train.epochs=1",
                                          "train.log_every=1", *overrides])
    tr = Trainer(cfg)
    if delay:
        tr.loader = _SlowLoader(tr.loader, delay)
    try:
        tr.fit()
    finally:
        tr.close()
    return read_log(out)


def test_fields_in_log_tensorboard_and_bar(demo, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    log = _run(demo, tmp_path / "fast", ["train.tensorboard=true", "train.progress_bar=true"])
    steps = [r for r in log if r["type"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6, 7, 8]  # 16 videos / batch 2, every step logged
    for r in steps:
        assert all(k in r for k in STEP_FIELDS), r
        assert r["data_wait_s"] > 0 and r["compute_s"] > 0 and r["clips_per_s"] > 0
        assert 0 < r["data_wait_frac"] < 1 and r["mem_kind"] == "rss_peak" and r["peak_mem_mb"] > 50
        assert r["data_wait_frac"] == pytest.approx(r["data_wait_s"] / (r["data_wait_s"] + r["compute_s"]))
    assert all(b["peak_mem_mb"] >= a["peak_mem_mb"] for a, b in zip(steps, steps[1:]))  # a peak only grows
    epoch = [r for r in log if r["type"] == "epoch"][-1]
    assert 0 < epoch["data_wait_frac"] < 1
    total = epoch["data_wait_total_s"] + epoch["compute_total_s"]
    assert epoch["data_wait_frac"] == pytest.approx(epoch["data_wait_total_s"] / total)
    assert total <= epoch["epoch_time_s"] + 1e-3
    # the per-step windows cover the epoch's loop: their sums are the epoch totals (up to the
    # last next() that ends the epoch and the end-of-epoch bookkeeping)
    assert sum(r["data_wait_s"] for r in steps) <= epoch["data_wait_total_s"] + 1e-6
    assert sum(r["compute_s"] for r in steps) == pytest.approx(epoch["compute_total_s"], rel=0.2, abs=0.5)
    acc = EventAccumulator(str(tmp_path / "fast" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for k in ("data_wait_s", "compute_s", "data_wait_frac", "peak_mem_mb", "clips_per_s"):
        assert f"train/{k}" in tags, tags
        assert len(acc.Scalars(f"train/{k}")) == 8
    assert "epoch/data_wait_frac" in tags
    bar = err.getvalue()
    assert "data_wait_s=" in bar and "compute_s=" in bar and "peak_mem_mb=" in bar and "clips_per_s=" in bar


def test_a_slow_loader_is_reported_as_starving(demo, tmp_path):
    delay = 1.0  # several times the tiny model's step, also on a loaded 2-core machine
    log = _run(demo, tmp_path / "slow", ["train.max_steps=4"], delay=delay)
    steps = [r for r in log if r["type"] == "step"]
    assert len(steps) == 4
    for r in steps:
        assert r["data_wait_s"] >= delay  # one batch per optimizer step, each waited ≥ delay
        assert math.isfinite(r["compute_s"]) and r["compute_s"] > 0
    # the step of this tiny model takes far less than the delay: the loader starves it most of the time
    assert sum(r["data_wait_s"] for r in steps) > sum(r["compute_s"] for r in steps)
    assert sum(r["data_wait_frac"] for r in steps[1:]) / 3 > 0.5
