"""tools/teacher_fidelity.py: hard-patch overlap and Spearman's ρ of cheap teacher modes vs `full`."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_tool_on_a_tiny_checkpoint(tmp_path, capsys):
    from videohpm.config import load_config
    from videohpm.data import make_demo_data
    from videohpm.engine.build import build_all

    info = make_demo_data(tmp_path / "data", seed=0, tiny=True, formats=("ssv2",), images=False)
    lists = info.lists["ssv2"]
    cfg_path = str(ROOT / "configs/test/pretrain_hpm_tiny.yaml")
    over = [f"data.train={lists['train']}", f"data.val={lists['val']}", f"data.data_root={info.video_dirs['ssv2']}",
            f"train.output_dir={tmp_path / 'run'}"]
    cfg = load_config(cfg_path, over)
    torch.manual_seed(0)
    model, _, recipe = build_all(cfg)
    teacher = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
               for k, v in recipe.teacher_state_dict().items()}
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict(), "teacher": teacher, "config": {}, "weights": "model"}, ckpt)

    spec = importlib.util.spec_from_file_location("_videohpm_tool_teacher_fidelity", ROOT / "tools/teacher_fidelity.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = tool.main

    out = tmp_path / "fid"
    rc = main(["--config", cfg_path, f"checkpoint={ckpt}", "--modes", "subset:0.99,lowres:2", "--output-dir",
               str(out), "--batch-size", "3", *over])
    assert rc == 0
    res = json.loads((out / "teacher_fidelity.json").read_text())
    n_val = sum(1 for _ in open(lists["val"]))
    assert res["clips"] == n_val and res["teacher"] == "ema" and res["grid"] == [2, 4, 4]
    assert res["num_hard_per_row"] == int(16 * 0.75 * 0.5)  # Eq. 8's p per time slice at α = 0.5
    # subset:0.99 keeps every token of a 4×4 slice: it *is* the full teacher
    assert res["modes"]["subset:0.99"]["overlap"]["mean"] == pytest.approx(1.0)
    assert res["modes"]["subset:0.99"]["spearman"]["mean"] == pytest.approx(1.0, abs=1e-4)
    low = res["modes"]["lowres:2"]
    assert 0.0 <= low["overlap"]["mean"] <= 1.0 and -1.0 <= low["spearman"]["mean"] <= 1.0
    assert res["random"]["overlap_expected"] == pytest.approx(6 / 16)
    assert "| `lowres:2` |" in capsys.readouterr().out
    # a bad mode fails before any work, naming the key
    rc = main(["--config", cfg_path, f"checkpoint={ckpt}", "--modes", "lowres:1", "--output-dir",
               str(tmp_path / "bad"), *over])
    assert rc == 2 and "method.kwargs.teacher_mode" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
