"""videohpm.distributed: typed environment getters and rank-filtered logging."""
from __future__ import annotations

import logging

import pytest

from videohpm import distributed as vdist


def test_env_getters(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("CROSS_RANK", "2")
    monkeypatch.setenv("LOCAL_SIZE", "8")
    assert vdist.get_local_rank() == 3 and vdist.get_node_rank() == 2 and vdist.get_local_world_size() == 8
    monkeypatch.delenv("CROSS_RANK")
    monkeypatch.setenv("GROUP_RANK", "5")  # torchrun's name
    assert vdist.get_node_rank() == 5
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK='x'"):
        vdist.get_local_rank()
    monkeypatch.delenv("MASTER_PORT", raising=False)
    assert not vdist.launched_by_launcher()


def test_rank_filtered_logging(monkeypatch, tmp_path):
    log_file = tmp_path / "train.log"
    monkeypatch.setattr(vdist, "get_rank", lambda: 1)
    vdist.setup_logging(str(log_file))
    log = logging.getLogger("videohpm.test")
    log.info("info from rank 1")
    log.warning("warning from rank 1")
    monkeypatch.setattr(vdist, "get_rank", lambda: 0)
    vdist.setup_logging(str(log_file))  # idempotent: handlers are replaced, not stacked
    log.info("info from rank 0")
    for h in logging.getLogger().handlers:
        h.flush()
    rank1 = (tmp_path / "train.log.rank1").read_text()
    rank0 = log_file.read_text()
    assert "warning from rank 1" in rank1 and "info from rank 1" not in rank1
    assert "[rank 0]" in rank0 and rank0.count("info from rank 0") == 1
    assert sum(getattr(h, "_videohpm", False) for h in logging.getLogger().handlers) == 2
    for h in list(logging.getLogger().handlers):
        if getattr(h, "_videohpm", False):
            logging.getLogger().removeHandler(h)
            h.close()
