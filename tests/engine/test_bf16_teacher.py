"""bf16 training keeps the HPM teacher in fp32 and updates it as the exact EMA (Eq. 1)."""
from __future__ import annotations

import math

import torch

from tests.engine.conftest import PRETRAIN_CFG, data_overrides, step_losses
from videohpm.config import load_config
from videohpm.engine import Trainer

M = 0.999  # the paper's momentum: (1 − m)·Δ underflows when added to a bf16 teacher


def test_bf16_student_fp32_teacher_exact_ema(demo, tmp_path):
    cfg = load_config(str(PRETRAIN_CFG), [*data_overrides(demo), f"train.output_dir={tmp_path}", "train.precision=bf16",
                                          "train.max_steps=3", f"method.kwargs.momentum={M}", "optim.base_lr=0.05",
                                          "optim.warmup_epochs=0"])
    tr = Trainer(cfg)
    records = []
    original = tr.recipe.on_step_end

    def recording_hook():
        before = {k: v.clone() for k, v in tr.teacher.state_dict().items()}
        original()
        records.append((before, {k: v.detach().clone() for k, v in tr.recipe.model.state_dict().items()},
                        {k: v.clone() for k, v in tr.teacher.state_dict().items()}))

    tr.recipe.on_step_end = recording_hook
    try:
        tr.fit()
    finally:
        tr.close()
    assert len(records) == 3
    lost_in_bf16 = moved = 0
    for before, student, after in records:
        for k, t in after.items():
            assert t.dtype == torch.float32 and student[k].dtype == torch.bfloat16
            expected = M * before[k] + (1 - M) * student[k].float()
            torch.testing.assert_close(t, expected, rtol=0, atol=1e-6)
            changed = t != before[k]
            moved += int(changed.sum())
            # The same EMA kept in bf16 would round most of these updates away.
            b16 = before[k].bfloat16()
            ema16 = (M * b16 + (1 - M) * student[k]).bfloat16()
            lost_in_bf16 += int((changed & (ema16 == b16)).sum())
    assert moved > 0 and lost_in_bf16 > 0.5 * moved
    losses = step_losses(tmp_path)
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values())
