"""The fine-tuning recipe: video Mixup/CutMix, soft-target loss, model EMA."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from videohpm.methods.classification import Classification


class _Linear(nn.Module):
    def __init__(self, k=4):
        super().__init__()
        self.num_classes = k
        self.fc = nn.Linear(3 * 2 * 8 * 8, k)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.randn(b, 3, 2, 8, 8, generator=g), "label": torch.arange(b) % 4}


def test_cutmix_cuts_the_same_box_in_every_frame():
    r = Classification(_Linear(), mixup=0.0, cutmix=1.0, label_smoothing=0.0)
    b = _batch()
    x, y = b["video"].clone(), b["label"]
    np.random.seed(3)
    mixed, target = r.mix(x.clone(), y)
    flipped = x.flip(0)
    from_other = (mixed == flipped) & (mixed != x)           # [B, C, T, H, W]
    box = from_other.any(dim=(0, 1, 2))                      # [H, W] cut region
    assert box.any() and not box.all()
    # Every frame and channel of every clip takes the same box from its partner.
    for t in range(x.shape[2]):
        assert torch.equal(mixed[:, :, t][:, :, box], flipped[:, :, t][:, :, box])
        assert torch.equal(mixed[:, :, t][:, :, ~box], x[:, :, t][:, :, ~box])
    lam = 1.0 - box.float().mean().item()                     # area kept → label weight
    expected = lam * nn.functional.one_hot(y, 4).float() + (1 - lam) * nn.functional.one_hot(y.flip(0), 4).float()
    torch.testing.assert_close(target, expected)


def test_mixup_loss_is_soft_target_cross_entropy():
    r = Classification(_Linear(), mixup=0.8, cutmix=0.0, label_smoothing=0.1)
    b = _batch()
    np.random.seed(0)
    out = r(dict(b))
    np.random.seed(0)
    x, target = r.mix(b["video"].clone(), b["label"])
    logits = r.model(x)
    ref = (-target * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(out["loss"], ref)
    assert target.sum(-1).allclose(torch.ones(4)) and (target > 0).all()  # smoothed: no zero entry
    assert 0.0 <= out["acc"].item() <= 1.0
    with pytest.raises(ValueError, match="even"):
        r.mix(torch.zeros(3, 3, 2, 8, 8), torch.zeros(3, dtype=torch.long))


def test_label_smoothing_without_mixup_and_eval():
    r = Classification(_Linear(), mixup=0.0, cutmix=0.0, label_smoothing=0.1)
    assert r.mixup is None
    b = _batch()
    logits = r.model(b["video"])
    logp = logits.log_softmax(-1)
    ref = (0.9 * -logp.gather(1, b["label"][:, None]).squeeze(1) + 0.1 * -logp.mean(-1)).mean()
    torch.testing.assert_close(r(b)["loss"], ref)
    assert set(r.predict(b["video"])) == {""}


def test_model_ema_update_and_prediction():
    torch.manual_seed(0)
    r = Classification(_Linear(), mixup=0.0, cutmix=0.0, model_ema=True, model_ema_decay=0.9)
    assert "teacher" not in dict(r.named_children())  # not registered: DeepSpeed must not see it
    before = {k: v.clone() for k, v in r.teacher.state_dict().items()}
    with torch.no_grad():
        for p in r.model.parameters():
            p.add_(1.0)
    r.on_step_end()
    for k, v in r.teacher.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * r.model.state_dict()[k])
    out = r.predict(_batch()["video"])
    assert set(out) == {"", "ema"} and out["ema"].shape == (4, 4)
    r.load_teacher_state_dict(before)
    torch.testing.assert_close(r.teacher_state_dict()["fc.weight"], before["fc.weight"])


def test_rejects_a_mask_generator_and_missing_classes():
    with pytest.raises(ValueError, match="mask.name=none"):
        Classification(_Linear(), mask_generator=object())
    m = _Linear()
    m.num_classes = 0
    with pytest.raises(ValueError, match="num_classes"):
        Classification(m)
