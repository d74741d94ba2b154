"""videohpm.schedules: bit-identical to the engine's old lr formula; HPM's momentum schedule is the
same function (within an ulp of its old expression)."""
from __future__ import annotations

import math

import pytest

from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe
from videohpm.models.autoencoder import MaskedAutoencoder
from videohpm.schedules import CosineSchedule, cosine_between, cosine_value


def _old_engine(step, base, final, total, warmup, start):
    """engine/schedules.py's `cosine_value` before the move, verbatim arithmetic."""
    warmup = max(0, min(int(warmup), total))
    if step < warmup:
        return start + (base - start) * step / warmup
    decay = total - warmup
    if step >= total or decay <= 0:
        return final
    t = (step - warmup) / decay
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * t))


def _old_hpm_momentum(m, m_end, progress):
    """methods/hpm.py's `current_momentum` before the merge."""
    w = 0.5 * (1.0 - math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return m + (m_end - m) * w


@pytest.mark.parametrize("base, final, total, warmup, start", [
    (1.2e-3, 1e-5, 1000, 40, 1e-6), (0.05, 0.0, 97, 0, 0.0), (0.04, 0.4, 333, 333, 0.0), (3e-4, 1e-6, 7, 2, 1e-7),
])
def test_cosine_value_bit_identical_to_the_old_engine_formula(base, final, total, warmup, start):
    for step in range(total + 3):
        assert cosine_value(step, base, final, total, warmup, start) == _old_engine(step, base, final, total, warmup, start)
        assert CosineSchedule(base, final, total, warmup, start)(step) == _old_engine(step, base, final, total, warmup, start)


@pytest.mark.parametrize("m, m_end", [(0.996, 1.0), (0.99, 0.999), (0.999, 0.9999), (0.5, 0.9)])
def test_hpm_momentum_is_cosine_between_within_an_ulp_of_its_old_form(m, m_end):
    ulp = math.ulp(max(abs(m), abs(m_end)))
    for i in range(-2, 1003):
        p = i / 1000
        new = cosine_between(m, m_end, min(max(p, 0.0), 1.0))
        assert abs(new - _old_hpm_momentum(m, m_end, p)) <= ulp, p
    assert cosine_between(m, m_end, 0.0) == m and cosine_between(m, m_end, 1.0) == m_end


def test_hpm_momentum_uses_cosine_between():
    model = MaskedAutoencoder(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=1,
                              num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                              loss_predictor=False)
    recipe = build_recipe("hpm", model, make_mask_generator("tube", mask_ratio=0.75),
                          loss_pred="none", learn_to_mask=False, momentum=0.996, momentum_end=1.0)
    for p in (-0.5, 0.0, 0.123, 0.5, 0.77, 1.0, 2.0):
        recipe._progress = p
        assert recipe.current_momentum() == cosine_between(0.996, 1.0, min(max(p, 0.0), 1.0))
