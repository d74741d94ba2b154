"""The recipe contract the engine relies on (`Recipe`), the one EMA teacher (`EmaTeacher`), and
the small helpers every recipe shares.

A recipe is an `nn.Module` that turns a batch into a loss. `videohpm.engine.Trainer` calls only
what `Recipe` names (timm's `task/task.py` habit: the contract is a class, not attribute probes):

- `forward(batch, progress) -> {"loss": scalar with grad, <part>: detached scalar, ...}`;
- `on_step_end()` after every applied optimizer step (the EMA update of HPM journal Eq. 1);
- `teacher` / `ema`: the EMA copy the recipe keeps (or None), moved to the device, compared
  across ranks and checkpointed by the engine through `teacher_state_dict()` /
  `load_teacher_state_dict()`;
- `train_split` / `eval_split` / `num_classes` / `predict(video)`: which data split it trains on,
  and, for supervised recipes, validation top-1 / top-5 on a deterministic centre view.

The defaults are those of a pre-training recipe without a teacher: train on "pretrain", no
validation, nothing to do after a step, no teacher state.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, ClassVar, ContextManager, Dict, Iterator, Mapping, Optional

import torch
from torch import nn

__all__ = ["Recipe", "EmaTeacher", "full_parameters", "clip_of", "num_visible"]


def clip_of(batch: Any) -> torch.Tensor:
    """The clip tensor `[B, C, T, H, W]` of a batch (a dict with "video", or the tensor itself)."""
    if isinstance(batch, torch.Tensor):
        return batch
    try:
        return batch["video"]
    except (KeyError, TypeError) as e:
        raise KeyError("a pre-training batch must be a tensor or a dict with a 'video' entry") from e


def num_visible(mask_generator: Any, grid: Any) -> Optional[int]:
    """Visible tokens per sample that `mask_generator` guarantees for `grid` (B, T', H', W').

    Handing it to `encode` keeps the training step free of a device→host sync; None (a custom
    callable without the method) falls back to reading the count from the mask.
    """
    count = getattr(mask_generator, "num_visible_per_sample", None)
    return None if count is None else int(count(grid))


def full_parameters(module: nn.Module) -> ContextManager[Any]:
    """`module`'s full parameters, readable on every rank, for the duration of a `with` block.

    Under ZeRO-3 each rank holds a shard of every parameter: they are all-gathered with
    `deepspeed.zero.GatheredParameters` (read-only: nothing is scattered back) and partitioned
    again on exit. Collective then: every rank must enter the block. Without ZeRO-3 (no parameter
    carries DeepSpeed's `ds_id` mark, deepspeed's own `is_zero_param` test) it does nothing.
    """
    params = list(module.parameters())
    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    import deepspeed  # heavy optional import; only reached under ZeRO-3, where it is loaded already

    return deepspeed.zero.GatheredParameters(params)


class EmaTeacher:
    """An exponential moving average of a model: `θ_t ← m·θ_t + (1 − m)·θ_s` (HPM journal Eq. 1;
    also the fine-tuning model EMA, timm's `ModelEmaV3`), held outside the recipe's module tree.

    HPM's teacher, the `ema_features` target of MAE / HPM and the fine-tuning model EMA are all
    one of these. It is a plain object, not an `nn.Module`, so a recipe that holds it as
    `self.ema` does not register the copy: DeepSpeed neither casts it to bf16/fp16 (an EMA with
    m = 0.999 underflows there) nor partitions it under ZeRO-3, the optimizer never sees it, and
    it is not in the recipe's `state_dict()` (the engine checkpoints it through the recipe's
    `teacher_state_dict()`).

    Args:
        model: the student; `module` is a frozen (`requires_grad=False`), eval-mode fp32 deep
            copy of it, taken before DeepSpeed wraps the student.

    Attributes:
        module: the copy, an `nn.Module` of the student's class (call `module.encode(...)` etc.).
    """

    def __init__(self, model: nn.Module) -> None:
        self.module: nn.Module = copy.deepcopy(model).float().eval()
        self.module.requires_grad_(False)

    def parameters(self) -> Iterator[nn.Parameter]:
        """The copy's parameters (fp32, `requires_grad=False`)."""
        return self.module.parameters()

    def to(self, device: torch.device | str) -> "EmaTeacher":
        """Move the copy to `device` (its dtype stays fp32); returns self."""
        self.module.to(device)
        return self

    def follow(self, device: torch.device) -> nn.Module:
        """The copy, moved to `device` first if it is elsewhere (recipes call it with the input's
        device, so the teacher follows the student without the engine's help)."""
        if next(self.module.parameters()).device != device:
            self.module.to(device)
        return self.module

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """Eq. 1 in place, `θ_t ← m·θ_t + (1 − m)·θ_s`, over all parameters; buffers are copied.

        Args:
            student: the module the copy was made of (same parameter order). Under ZeRO-3 its
                parameters are gathered for the update (`full_parameters`), so every rank must
                call this, as the engine does after every applied optimizer step.
            momentum: m ∈ [0, 1].

        The copy follows the student's device; student tensors (bf16/fp16 under DeepSpeed) are
        cast to fp32 first, so the EMA itself never rounds to the student's precision.
        """
        with full_parameters(student):
            s_params = [p.detach() for p in student.parameters()]
            t_params = list(self.module.parameters())
            if t_params and s_params and t_params[0].device != s_params[0].device:
                self.module.to(s_params[0].device)
                t_params = list(self.module.parameters())
            s_params = [s if s.dtype == t.dtype else s.to(t.dtype) for s, t in zip(s_params, t_params)]
            torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
            for tb, sb in zip(self.module.buffers(), student.buffers()):
                tb.copy_(sb)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The copy's state dict: the student's keys, fp32 tensors (not cloned)."""
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a `state_dict()` (strict: the student's keys); values are cast to the copy's fp32."""
        self.module.load_state_dict(state)


class Recipe(nn.Module):
    """Base of every recipe: what the engine calls, with the defaults of a teacher-less
    pre-training recipe (see the module doc).

    Subclasses set `self.model` (the trained network) when they wrap one, `self.ema` to an
    `EmaTeacher` when they keep one, and override `forward` (always), `on_step_end` (when something
    follows an optimizer step) and `predict` (supervised recipes with an `eval_split`).

    Class attributes:
        train_split: the `build_dataset` split the recipe trains on ("pretrain" or "train").
        eval_split: the split validated every `train.eval_every` epochs with `predict`, or None
            (no validation).
        num_classes: classifier outputs (checked against the lists' labels), or None.
        classifier: the recipe trains a classifier that `tools/test.py` evaluates.
        head_outside_model: the classifier's layers (a linear probe's BatchNorm + head) live in
            the recipe, outside `model`: read from the DeepSpeed checkpoints, evaluated through
            `logits`, sized by `method.kwargs.num_classes`, absent from the export formats.
        learned_sampler: a learned token sampler (a recipe submodule, `sampler`) draws the mask
            through `token_probs`; its weights are in the DeepSpeed checkpoints only.
    """

    train_split: str = "pretrain"
    eval_split: Optional[str] = None
    num_classes: Optional[int] = None
    classifier: ClassVar[bool] = False
    head_outside_model: ClassVar[bool] = False
    learned_sampler: ClassVar[bool] = False

    @classmethod
    def weights_outside_model(cls) -> bool:
        """Trained weights live outside `model` (so not in `model_final.pth`): read the DeepSpeed
        checkpoint of the run."""
        return cls.head_outside_model or cls.learned_sampler

    def __init__(self) -> None:
        super().__init__()
        self.ema: Optional[EmaTeacher] = None  # a plain object: never a registered submodule

    def forward(self, batch: Any, progress: float = 0.0) -> Dict[str, torch.Tensor]:
        """One training step's loss.

        Args:
            batch: a collated batch, `{"video": [B, C, T, H, W], ...}` (`"label": [B]` for
                supervised recipes), already on the device.
            progress: training progress `(epoch + micro_step / micro_steps_per_epoch) / epochs`
                in [0, 1] (HPM's α_t, Eq. 8).
        Returns:
            `{"loss": scalar with grad, ...}`; the other entries are detached scalars the engine
            averages and logs (`loss_rec`, `loss_pred`, `acc`, ...).
        """
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def on_step_end(self) -> None:
        """After every applied optimizer step, on every rank (collective under ZeRO-3 when it
        reads the student, as `EmaTeacher.update` does). Default: nothing."""

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The EMA copy (`ema.module`: fp32, frozen, unregistered), or None without one."""
        return None if self.ema is None else self.ema.module

    def teacher_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        """The EMA copy's state dict (the student's keys) for checkpoints, or None."""
        return None if self.ema is None else self.ema.state_dict()

    def load_teacher_state_dict(self, state: Optional[Mapping[str, torch.Tensor]]) -> None:
        """Restore `teacher_state_dict()`; None (a checkpoint without a teacher) or a recipe
        without one leaves everything as it is."""
        if self.ema is not None and state is not None:
            self.ema.load_state_dict(state)

    def predict(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Validation logits `{name: [B, num_classes]}` of `video: [B, C, T, H, W]` ("" for the
        model itself, e.g. "ema" for its EMA); needed by recipes with an `eval_split`."""
        raise NotImplementedError(f"{type(self).__name__} has no predict (eval_split={self.eval_split!r})")
