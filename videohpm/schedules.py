"""Per-iteration schedules: linear warm-up then cosine decay (learning rate, weight decay).

A schedule is a pure function of the global optimizer step, so resuming needs nothing but the
step counter (stored in every checkpoint) — there is no hidden scheduler state to lose.
The shape is VideoMAE's / MAE's `cosine_scheduler`:

    v(s) = start + (base − start)·s / W                               for s < W (warm-up)
    v(s) = final + ½(base − final)(1 + cos(π (s − W) / (S − W)))      for W ≤ s < S
    v(s) = final                                                      for s ≥ S

with W warm-up steps and S total steps (supplement Table S1/S2: "cosine decay", warm-up epochs).

A bottom-layer module (no package imports): the engine's lr / weight-decay schedules and the
recipes' own schedules (HPM's EMA momentum, `cosine_between`) share it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict

__all__ = ["CosineSchedule", "cosine_value", "cosine_between"]


def cosine_between(start: float, end: float, t: float) -> float:
    """Half-cosine from `start` (t = 0) to `end` (t = 1): `end + ½(start − end)(1 + cos(π t))`.

    The decay branch of `cosine_value` and HPM's EMA momentum schedule (`momentum` →
    `momentum_end` over training). `start + (end − start)·½(1 − cos(π t))` is the same value,
    rounded differently (by up to about one ulp at some t); this form is the one used everywhere.
    """
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


def cosine_value(step: int, base: float, final: float, total_steps: int, warmup_steps: int = 0,
                 warmup_start: float = 0.0) -> float:
    """Value of the warm-up + cosine schedule at optimizer step `step` (0-based)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = max(0, min(int(warmup_steps), total_steps))
    if step < warmup_steps:
        return warmup_start + (base - warmup_start) * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    if step >= total_steps or decay_steps <= 0:
        return final
    return cosine_between(base, final, (step - warmup_steps) / decay_steps)


@dataclass(frozen=True)
class CosineSchedule:
    """Warm-up + cosine schedule evaluated per optimizer step (see module docstring).

    Attributes:
        base: peak value reached at the end of warm-up (for the lr: base_lr × batch / 256).
        final: value at the end of training (min_lr, or weight_decay_end).
        total_steps: optimizer steps of the whole run (epochs × steps per epoch).
        warmup_steps: linear warm-up steps (warm-up epochs × steps per epoch); 0 = none.
        warmup_start: value at step 0 of the warm-up.
    """

    base: float
    final: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start: float = 0.0

    def __call__(self, step: int) -> float:
        return cosine_value(step, self.base, self.final, self.total_steps, self.warmup_steps, self.warmup_start)

    def state_dict(self) -> Dict[str, float]:
        """The parameters, saved with checkpoints so a resumed run can detect a changed schedule."""
        return asdict(self)
