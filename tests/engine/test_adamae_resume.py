"""AdaMAE through `tools/train.py` with ZeRO-2: the run trains (the sampler learns and is checkpointed
with the recipe), and a run resumed from its epoch-1 checkpoint repeats steps 5–8 bit for bit (same
data, sampler draws, dropout and optimizer state)."""
from __future__ import annotations

import pytest
import torch

from tests.engine.conftest import REPO, data_overrides, read_log, run_train, step_losses

CFG = REPO / "configs" / "test" / "pretrain_adamae_tiny.yaml"
COMMON = ["train.epochs=2", "train.batch_size=4", "train.log_every=1", "data.num_workers=0",
          f"deepspeed.config={REPO / 'configs' / 'deepspeed' / 'zero2.json'}"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_adamae_trains_with_zero2_and_resumes_bit_identically(demo, tmp_path):
    base = ["--config", str(CFG), *data_overrides(demo), *COMMON]
    ref = tmp_path / "ref"
    run_train(base + [f"train.output_dir={ref}"])
    expected, sampling = step_losses(ref), step_losses(ref, "loss_sampling")
    assert sorted(expected) == list(range(1, 9))  # 16 videos / batch 4 = 4 steps × 2 epochs
    ckpt = ref / "checkpoints" / "epoch-0000"
    assert (ckpt / "COMPLETE").exists()

    from videohpm.engine.checkpoint import read_checkpoint

    weights = read_checkpoint(str(ckpt))
    assert any(k.startswith("sampler.") for k in weights.model)  # the sampler is saved with the recipe
    final = torch.load(ref / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["weights"] == "model" and not any(k.startswith("sampler.") for k in final["model"])

    out = tmp_path / "resumed"
    run_train(base + [f"train.output_dir={out}", f"train.resume={ckpt}"])
    resumed = [r for r in read_log(out) if r.get("type") == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == 4
    got, got_sampling = step_losses(out), step_losses(out, "loss_sampling")
    assert sorted(got) == [5, 6, 7, 8]
    for step in got:
        assert got[step] == expected[step], f"step {step}: {got[step]} != {expected[step]}"
        assert got_sampling[step] == sampling[step]
    a = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    for k, v in final["model"].items():
        assert torch.equal(a[k], v), k
