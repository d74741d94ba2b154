"""videohpm.precision: the table of precision name × device × native bf16 → dtype (module doc)."""
from __future__ import annotations

import logging
from unittest import mock

import pytest
import torch

from videohpm import hardware
from videohpm import precision as P
from videohpm.tasks.weights import eval_amp_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
BF, FP16 = torch.bfloat16, torch.float16


def _native(value):
    """This CPU as one with (True) or without (False) native bf16."""
    return mock.patch.object(hardware, "cpu_bf16_is_fast", lambda: value)


@pytest.mark.parametrize("name, cuda_bf16, expected", [
    ("auto", True, "bf16"), ("auto", False, "fp32"),
    ("fp32", True, "fp32"), ("bf16", False, "bf16"), ("fp16", False, "fp16"),
])
def test_resolve_precision_on_cuda(name, cuda_bf16, expected):
    with mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16):
        assert P.resolve_precision(name, CUDA) == expected


@pytest.mark.parametrize("name, expected", [("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")])
def test_resolve_precision_on_cpu_keeps_explicit_names(name, expected):
    with mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: True):
        assert P.resolve_precision(name, CPU) == expected  # "auto" is fp32 on any CPU


def test_amp_dtype_names():
    assert P.amp_dtype("fp32") is None and P.amp_dtype("bf16") is BF and P.amp_dtype("fp16") is FP16
    with pytest.raises(KeyError):
        P.amp_dtype("auto")  # resolve first


@pytest.mark.parametrize("name, device, native, expected, warned", [
    ("fp32", CPU, True, None, 0), ("fp32", CUDA, True, None, 0),
    ("bf16", CUDA, False, BF, 0), ("fp16", CUDA, False, FP16, 0),
    ("bf16", CPU, True, BF, 0),       # native bf16 CPU: bf16
    ("bf16", CPU, False, None, 1),    # emulated: fp32, said
    ("fp16", CPU, True, None, 0),     # no fp16 on a CPU
    ("auto", CPU, True, None, 0),     # auto is fp32 on a CPU
])
def test_autocast_dtype_table(name, device, native, expected, warned):
    calls = []
    with mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: True), _native(native):
        got = P.autocast_dtype(name, device, lambda: calls.append(1))
    assert got is expected and len(calls) == warned


def test_autocast_auto_on_cuda_follows_bf16_support():
    for supported, expected in ((True, BF), (False, None)):
        with mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: supported), _native(False):
            assert P.autocast_dtype("auto", CUDA, lambda: None) is expected


def test_runnable_dtype_only_touches_cpu_bf16():
    said = []
    warn = lambda: said.append(1)  # noqa: E731
    with _native(False):
        assert P.runnable_dtype(BF, CPU, warn) is torch.float32 and said == [1]
    with _native(True):
        assert P.runnable_dtype(BF, CPU, warn) is BF
    with _native(False):
        assert P.runnable_dtype(BF, None, warn) is BF  # no device: the setting itself
        assert P.runnable_dtype(BF, CUDA, warn) is BF
        assert P.runnable_dtype(FP16, CPU, warn) is FP16
    assert said == [1]


def test_emulated_bf16_warning_once_per_process(caplog):
    logger = logging.getLogger("videohpm.test_precision")
    warn = P.emulated_bf16_warning(logger, "train.precision", "evaluation runs in fp32 instead")
    with caplog.at_level("WARNING", logger=logger.name):
        warn()
        warn()
    msgs = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert len(msgs) == 1
    assert msgs[0].startswith("train.precision=bf16:") and "emulated" in msgs[0] and msgs[0].endswith("instead")
    warn.cache_clear()
    with caplog.at_level("WARNING", logger=logger.name):
        warn()
    assert sum(r.name == logger.name for r in caplog.records) == 2


def test_evaluation_uses_bf16_on_a_cpu_only_where_native(monkeypatch):
    """The merged rule in the evaluation runner (it used to run fp32 on every CPU)."""
    monkeypatch.setattr(hardware, "cpu_bf16_is_fast", lambda: True)
    assert eval_amp_dtype("bf16", CPU) is BF
    monkeypatch.setattr(hardware, "cpu_bf16_is_fast", lambda: False)
    assert eval_amp_dtype("bf16", CPU) is None
    assert eval_amp_dtype("fp32", CPU) is None and eval_amp_dtype("fp16", CPU) is None
