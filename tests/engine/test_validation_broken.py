"""Validation during training never swaps broken videos: a broken video of the val list is reported
once, counted once in `val_broken`, and the accuracies are those of the decodable videos alone
(what `tools/test.py` does for the multi-view test)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tests.engine.conftest import FINETUNE_CFG, data_overrides
from videohpm.config import load_config
from videohpm.data import build_dataset
from videohpm.engine import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _val_with_broken(demo, tmp_path: Path) -> Path:
    """The demo's 8 val videos plus one undecodable file (label 3) in the middle of the list."""
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"\x1a\x45\xdf\xa3 not a video" * 8)
    lines = Path(demo["val"]).read_text().splitlines()
    lines.insert(4, f"{broken} 3")
    out = tmp_path / "val.csv"
    out.write_text("\n".join(lines) + "\n")
    return out


def test_val_dataset_keeps_broken_videos(demo, tmp_path, caplog):
    val = _val_with_broken(demo, tmp_path)
    cfg = load_config(str(FINETUNE_CFG), [*data_overrides(demo), f"data.val={val}"])
    ds = build_dataset(cfg.data, "val", keep_broken=True)
    with caplog.at_level(logging.WARNING, logger="videohpm.data"):
        samples = [ds[i] for i in range(len(ds))] + [ds[4]]  # the broken one read twice
    bad = samples[4]
    assert bad["ok"] is False and bad["broken"] == 1 and bad["index"] == 4 and bad["label"] == 3
    assert torch.equal(bad["video"], torch.zeros(3, 4, 32, 32))
    assert [s["ok"] for s in samples[:9]] == [True] * 4 + [False] + [True] * 4
    assert [s["index"] for s in samples[:9]] == list(range(9))  # nothing swapped
    warnings = [r.getMessage() for r in caplog.records if "broken.webm" in r.getMessage()]
    assert len(warnings) == 1 and "not evaluated" in warnings[0] and "replaced" not in warnings[0]
    # training keeps its semantics: the broken video is replaced by another sample
    train_like = build_dataset(load_config(str(FINETUNE_CFG), [*data_overrides(demo), f"data.train={val}"]).data,
                               "train")
    assert train_like[4]["broken"] >= 1 and train_like[4]["index"] != 4


def test_evaluate_scores_only_the_real_videos(demo, tmp_path):
    val = _val_with_broken(demo, tmp_path)
    tr = Trainer(load_config(str(FINETUNE_CFG), [*data_overrides(demo), f"data.val={val}",
                                                  f"train.output_dir={tmp_path / 'run'}", "train.batch_size=4"]))
    try:
        out = tr.evaluate()
        # the same numbers by hand: every decodable video once, the broken one nowhere
        tr.engine.eval()
        hits1, n = {}, 0
        ds = tr.val_loader.dataset
        with torch.no_grad():
            for i in range(len(ds)):
                s = ds[i]
                if not s["ok"]:
                    continue
                n += 1
                for name, logits in tr.recipe.predict(s["video"][None]).items():
                    hits1[name] = hits1.get(name, 0) + int(logits.argmax(1).item() == s["label"])
    finally:
        tr.close()
    assert n == 8 and out["val_broken"] == 1.0
    for name, h in hits1.items():
        key = f"val_acc1_{name}" if name else "val_acc1"
        assert out[key] == pytest.approx(100.0 * h / 8, abs=1e-9)
