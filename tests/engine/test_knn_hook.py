"""The k-NN health metric of pre-training (`train.knn_every`): logged every epoch to log.jsonl,
TensorBoard and the epoch line, and equal to DINO's weighted k-NN recomputed here by brute force
(written from the paper's description) from the weights the run saved at that epoch."""
from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import pytest
import torch
from omegaconf import OmegaConf

from tests.engine.conftest import DEEPSPEED, PRETRAIN_CFG, data_overrides, read_log, run_train
from videohpm.config import load_config
from videohpm.tasks.train import Trainer  # the engine's Trainer with the k-NN hook (train.knn_every)

KS = [3, 20]  # 20 > the 16 training clips: capped, every clip votes
TEMPERATURE = 0.07



pytestmark = pytest.mark.usefixtures("one_thread")

def _knn_overrides(demo: Dict[str, str], out: Path) -> List[str]:
    return [*data_overrides(demo, val=True), "data.num_classes=8", f"train.output_dir={out}", "train.batch_size=4",
            "train.knn_every=1", f"train.knn_k=[{','.join(map(str, KS))}]", f"train.knn_temperature={TEMPERATURE}"]


def brute_force_knn(cfg, weights: Mapping[str, torch.Tensor], ks: Sequence[int],
                    temperature: float) -> Dict[int, float]:
    """Top-1 (percent) per k: features = encoder tokens over all patches, mean-pooled, ℓ2-normalized
    (supplement §A); each of the k most cosine-similar training clips votes for its label with
    weight exp(cos / T) (DINO); the class with the largest vote wins. One clip at a time."""
    from videohpm.data import build_dataset
    from videohpm.engine.build import build_model

    model = build_model(cfg)
    model.load_state_dict(dict(weights))
    model.eval()
    train_set = build_dataset(OmegaConf.merge(cfg.data, {"val": cfg.data.train}), "val")
    val_set = build_dataset(cfg.data, "val")

    def features(ds):
        out = []
        for i in range(len(ds)):
            s = ds[i]
            with torch.no_grad():
                f = model.encode(s["video"][None].float()).mean(dim=1)[0].double()
            out.append((f / f.norm(), int(s["label"])))
        return out

    bank, queries = features(train_set), features(val_set)
    result = {}
    for k in ks:
        correct = 0
        for f, y in queries:
            sims = sorted(((float(f @ g), label) for g, label in bank), key=lambda t: -t[0])[:k]
            votes: Dict[int, float] = {}
            for sim, label in sims:
                votes[label] = votes.get(label, 0.0) + math.exp(sim / temperature)
            correct += int(max(votes, key=votes.get) == y)
        result[k] = 100.0 * correct / len(queries)
    return result


def _check_knn_record(r: Mapping, expected: Mapping[int, float]) -> None:
    assert math.isfinite(r["knn_top1"]) and 0.0 <= r["knn_top1"] <= 100.0
    for k in KS:
        assert r[f"knn_top1@{k}"] == pytest.approx(expected[k], abs=1e-9), f"k={k}"
    assert r["knn_top1"] == max(expected.values())
    assert r["knn_best_k"] in KS and r[f"knn_top1@{r['knn_best_k']}"] == r["knn_top1"]


def test_knn_metric_logged_every_epoch_and_matches_brute_force(demo, tmp_path):
    from videohpm.engine.checkpoint import read_checkpoint

    out = tmp_path / "run"
    cfg = load_config(str(PRETRAIN_CFG), [*_knn_overrides(demo, out), "train.epochs=2", "train.tensorboard=true"])
    tr = Trainer(cfg)
    assert [len(loader.dataset) for loader in tr.knn_loaders] == [16, 8]
    try:
        tr.fit()
    finally:
        tr.close()
    epochs = [r for r in read_log(out) if r.get("type") == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    # Epoch 0's weights: the recipe in the epoch-0000 checkpoint; epoch 1's: model_final.pth.
    weights = [
        {k[len("model."):]: v for k, v in read_checkpoint(str(out / "checkpoints" / "epoch-0000")).model.items()},
        torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"],
    ]
    assert not torch.equal(weights[0]["encoder.patch_embed.proj.weight"], weights[1]["encoder.patch_embed.proj.weight"])
    for r, w in zip(epochs, weights):
        _check_knn_record(r, brute_force_knn(cfg, w, KS, TEMPERATURE))
        assert r["knn_time_s"] > 0
    assert epochs[1]["best_knn_top1"] == max(r["knn_top1"] for r in epochs)
    # The epoch line and TensorBoard carry it too.
    assert (out / "train.log").read_text().count(" knn_top1=") == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("epoch/knn_top1")] == pytest.approx([r["knn_top1"] for r in epochs])

    # tools/knn.py on the saved run gives the engine's last record; --teacher reads the EMA teacher
    # (Eq. 1) saved with it, --random-init the train.seed initialisation — each the brute force.
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import knn as knn_tool  # tools/knn.py

    args = ["--config", str(PRETRAIN_CFG), *_knn_overrides(demo, out)]
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    for extra, w in (([f"checkpoint={out / 'model_final.pth'}"], final["model"]),
                     ([f"checkpoint={out}", "--teacher"], final["teacher"]),
                     (["--random-init"], None)):
        dest = tmp_path / "knn" / extra[-1].replace("-", "")[:8]
        assert knn_tool.main([*args, *extra, "--output-dir", str(dest)]) == 0
        res = json.loads((dest / "knn.json").read_text())
        if w is None:
            torch.manual_seed(int(cfg.train.seed))
            from videohpm.engine.build import build_model
            w = build_model(cfg).state_dict()
        _check_knn_record(res, brute_force_knn(cfg, w, KS, TEMPERATURE))
        assert res["knn_val_samples"] == 8 and res["knn_train_samples"] == 16
        if extra[0].endswith("model_final.pth"):
            assert {k: res[f"knn_top1@{k}"] for k in KS} == {k: epochs[1][f"knn_top1@{k}"] for k in KS}
    assert not torch.equal(final["teacher"]["encoder.patch_embed.proj.weight"],
                           final["model"]["encoder.patch_embed.proj.weight"])


def test_knn_tool_refuses_bad_arguments_and_foreign_checkpoints(demo, tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import knn as knn_tool  # tools/knn.py
    from videohpm.engine.build import build_model

    args = ["--config", str(PRETRAIN_CFG), *_knn_overrides(demo, tmp_path / "run"), "--output-dir", str(tmp_path)]
    assert knn_tool.main(args) == 2 and "checkpoint=" in capsys.readouterr().err  # neither
    assert knn_tool.main([*args, "--random-init", "--teacher"]) == 2
    assert knn_tool.main([*args, f"checkpoint={tmp_path / 'nope.pth'}"]) == 2
    assert "no such file" in capsys.readouterr().err
    # another width: its encoder does not fit, named in the error, nothing written
    cfg = load_config(str(PRETRAIN_CFG), ["model.kwargs.embed_dim=32", "model.kwargs.num_heads=2"])
    torch.save(build_model(cfg).state_dict(), tmp_path / "other.pth")
    assert knn_tool.main([*args, f"checkpoint={tmp_path / 'other.pth'}"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "encoder." in err and not (tmp_path / "knn.json").exists()
    # a student-only checkpoint has no teacher to read
    assert knn_tool.main([*args, f"checkpoint={tmp_path / 'other.pth'}", "--teacher"]) == 2


@pytest.mark.slow
@pytest.mark.distributed
def test_knn_metric_two_ranks_zero3(demo, tmp_path):
    """Two ranks (gloo), ZeRO-3: each rank extracts its share of the (padded) lists; the gathered,
    de-duplicated result is the single-process brute force over every clip."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    # Each rank sees 8 of the 16 train and 4 of the 8 val clips, in batches of 3 (a short last one).
    args = ["--config", str(PRETRAIN_CFG), *_knn_overrides(demo, out), "train.batch_size=3", "train.epochs=1",
            "optim.warmup_epochs=0", "deepspeed.config=configs/deepspeed/zero3.json"]
    run_train(args, launcher=[DEEPSPEED, "--num_gpus", "2", "--master_port", str(port)], timeout=400)
    cfg = load_config(str(PRETRAIN_CFG), args[2:])
    (r,) = [r for r in read_log(out) if r.get("type") == "epoch"]
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    _check_knn_record(r, brute_force_knn(cfg, final, KS, TEMPERATURE))
