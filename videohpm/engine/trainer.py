"""The training loop: DeepSpeed engine, schedules, the recipe's step end, logging, checkpoints, eval.

The engine drives any recipe through the contract of `videohpm.methods.base.Recipe`:
`forward(batch, progress) -> {"loss", parts...}`, `on_step_end()` after every applied optimizer
step (the EMA teacher's update, which gathers ZeRO-3 parameters itself), its EMA teacher
(`recipe.ema`: moved to the device, compared across ranks, checkpointed through
`teacher_state_dict()` / `load_teacher_state_dict()`), `train_split`, and, for recipes with an
`eval_split`, `predict(video) -> {name: logits}`: validation top-1/top-5 every
`train.eval_every` epochs on a deterministic centre view.

Other end-of-epoch metrics are hooks the application hands to the trainer
(`Trainer(cfg, eval_hooks=[...])`, `videohpm.engine.hooks.EvalHook`), e.g. the k-NN health metric
of `videohpm.tasks.train`. The loop is MAE's `engine_pretrain` split at its phases: `fit` →
`train_one_epoch` → `_train_micro_batch` / `_after_optimizer_step` → `_end_epoch`.

One optimizer step = `train.accum_steps` micro-batches of `train.batch_size` videos per rank.
`progress = (epoch + micro_step / micro_steps_per_epoch) / epochs` is passed to the recipe
(HPM's α_t, Eq. 8). The per-step lr / weight decay are pure functions of the global step
(`videohpm.schedules`), so a checkpoint needs only the step counter to resume them.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from videohpm import distributed as vdist
from videohpm.accuracy import topk_hits
from videohpm.config import (
    ConfigError,
    check_data_against_model,
    check_labels,
    config_problems,
    problem_key,
    repo_root,
    settings_error,
    short_warmup,
)
from videohpm.data import build_dataset
from videohpm.engine import checkpoint as ckpt
from videohpm.engine import elastic
from videohpm.engine.build import build_mask_generator, build_model, build_recipe_from_config, check_buildable
from videohpm.engine.data import ResumableDistributedSampler, build_loader
from videohpm.engine.deepspeed_setup import (
    build_deepspeed_config,
    full_state_dict,
    gathered_parameters,
    resolve_deepspeed_dict,
)
from videohpm.engine.diagnostics import LoopDiagnostics
from videohpm.engine.hooks import EvalHook
from videohpm.engine.metrics import MetricLogger, StepAverager
from videohpm.engine.pretrained import fit_model_to_pretrained
from videohpm.engine.runs import flatten_config, plan_run, prepare_run_folder
from videohpm.engine.optim import apply_schedules, build_optimizer, build_param_groups, scaled_lr
from videohpm.methods.base import Recipe
from videohpm.models.loading import PretrainedMismatchError, load_pretrained
from videohpm.precision import amp_dtype, resolve_precision
from videohpm.schedules import CosineSchedule

__all__ = ["Trainer", "train", "resolve_precision", "NonFiniteLossError"]

log = logging.getLogger(__name__)

# A peak lr below this barely moves a network in a fine-tuning's or pre-training's few thousand
# steps: most often the scaling rule (base_lr × global batch / 256) applied to a small batch.
LR_FLOOR = 1e-5

# The data section's lists: a list's own problem (missing, too short) leaves the section's other
# values usable, so `Trainer._reported("data.")` does not count them.
_LIST_KEYS = ("data.train", "data.val", "data.test")

# Without these nothing else can be checked: the process group, the precision, the model, the recipe.
_NEEDED_TO_START = ("train.dist_backend", "train.precision", "model.name", "method.name")


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses: in a row (`train.max_nonfinite`), or in all at the end of the run
    (`train.max_nonfinite_fraction`)."""


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _to_device(batch: Any, device: torch.device, float_dtype: Optional[torch.dtype] = None) -> Any:
    """Move a (nested) batch to `device`; floating tensors are cast to `float_dtype` if given."""
    if isinstance(batch, torch.Tensor):
        if float_dtype is not None and batch.is_floating_point():
            return batch.to(device, dtype=float_dtype, non_blocking=True)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, float_dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device, float_dtype) for v in batch)
    return batch


class _EpochTally:
    """What one epoch accumulates for its log lines and its record."""

    def __init__(self, device: torch.device) -> None:
        self.window = StepAverager()  # parts since the last log line
        self.epoch = StepAverager()  # parts over the whole epoch
        self.broken = torch.zeros((), device=device)  # undecodable videos replaced on this rank
        self.skipped = 0  # micro-steps skipped for a non-finite loss
        self.clips_since_log = 0
        self.t_log = self.t_start = time.time()


class Trainer:
    """Builds everything from a validated config and runs `fit()`.

    Order (so that errors come before work): the config's values (`config_problems`) and the
    model / recipe built on the meta device → process group and run plan (the model sized like
    its pre-trained checkpoint, `engine.pretrained`) → model (+ pre-trained weights) → mask
    generator → recipe → datasets (list files checked), batch against them, the evaluation hooks'
    setup, labels → optimizer / schedules / DeepSpeed config → one `ConfigError` with every
    settings problem found, the config's values first → loaders → the run folder is written →
    DeepSpeed → resume → loop. A check that needs a value already reported as bad is skipped.

    Args:
        cfg: a config from `videohpm.config.load_config` (with `check=False` its value problems
            are reported here, with those of the weights and the data).
        eval_hooks: metrics computed at the end of some epochs (`videohpm.engine.hooks.EvalHook`;
            the application builds them, e.g. the k-NN health metric of
            `videohpm.tasks.train`).
    """

    def __init__(self, cfg: DictConfig, eval_hooks: Sequence[EvalHook] = ()) -> None:
        self.cfg = cfg
        self.eval_hooks: List[EvalHook] = list(eval_hooks)
        self.problems: List[str] = config_problems(cfg, "")  # found so far, raised together
        self._bad_values = {problem_key(p) for p in self.problems}
        vdist.setup_logging(None)  # rank-filtered console; train.log once every check has passed
        self._check_can_start()
        self._start_process()
        self._build_model_and_recipe()
        self._build_data()
        if self.steps_per_epoch and not self._reported("optim.", "train.", "deepspeed."):
            self._collect(self._build_optimization)  # with the checks of the optimizer and the resume plan
        if self.problems:
            raise settings_error("", self.problems)
        self._build_loaders()
        prepare_run_folder(self.run, cfg)  # every check passed: config.yaml, train.log
        self._write_pretrained_report()
        self._start_engine()
        self._init_loop_state()
        if cfg.train.resume:
            self._resume(cfg.train.resume)

    @property
    def teacher(self) -> Optional[torch.nn.Module]:
        """The recipe's EMA copy (`Recipe.teacher`: fp32, unregistered), or None."""
        return self.recipe.teacher

    # ------------------------------------------------------------------ building helpers
    def _reported(self, *keys: str) -> bool:
        """Whether the config's values named one of `keys` as bad; a key ending in "." is a whole
        section (for `data.` without its lists, `_LIST_KEYS`)."""
        return any(k == key or (key.endswith(".") and k.startswith(key) and k not in _LIST_KEYS)
                   for k in self._bad_values for key in keys)

    def _check_can_start(self) -> None:
        """The model sized like its pre-trained checkpoint (`engine.pretrained`: sizes the config
        leaves to the name's default come from it, so they are built as the checkpoint's); then
        stop at once, with every problem known, when the process group or the model cannot be set
        up (`_NEEDED_TO_START` bad, or a model / mask / recipe keyword refused on the meta device,
        `check_buildable`): nothing after them could be checked."""
        self._fits_pretrained = self._collect(fit_model_to_pretrained, self.cfg)  # before the run's digest
        if self._reported(*_NEEDED_TO_START) or not self._collect(check_buildable, self.cfg):
            raise settings_error("", self.problems)

    def _plan_run(self) -> None:
        self.run = plan_run(self.cfg)
        self.run_id = self.run.run_id

    def _start_process(self) -> None:
        """Process group, run plan and precision. Nothing is written into the run folder before
        every check of this launch has passed (engine.runs): the run the folder holds, the
        weights, the data against the model."""
        train_cfg = self.cfg.train
        self.device = vdist.init_distributed(train_cfg.dist_backend or None)
        self.rank, self.world = vdist.get_rank(), vdist.get_world_size()
        self.out = os.path.abspath(train_cfg.output_dir)
        self.ckpt_root = os.path.join(self.out, "checkpoints")
        if not self._reported("train.output_dir", "train.resume", "train.overwrite"):
            self._collect(self._plan_run)
        self.precision = resolve_precision(train_cfg.precision, self.device)
        if self.precision == "fp16" and self.device.type == "cpu":
            self.problems.append("train.precision: fp16 needs a GPU (DeepSpeed's CPU accelerator has no fp16); "
                                 "use fp32 or bf16")
            self.precision = "fp32"  # for the checks still to come
        self.amp_dtype = amp_dtype(self.precision)
        # DeepSpeed casts the student to bf16/fp16. On CUDA, autocast runs norms in fp32 and mixes
        # dtypes freely, so clips stay fp32 (an exact reconstruction target). CPU autocast leaves
        # layer_norm alone and it refuses an fp32 input with bf16 weights: feed clips in the
        # compute dtype there (DeepSpeed's own convention, as VideoMAE's `samples.half()`).
        self.input_dtype = self.amp_dtype if self.device.type == "cpu" else None
        log.info("rank %d/%d on %s, precision %s", self.rank, self.world, self.device, self.precision)

    def _build_model_and_recipe(self) -> None:
        """Model (identical initialisation on every rank: the same seed), pre-trained weights,
        mask generator and recipe; then per-rank random streams."""
        cfg = self.cfg
        _seed_all(cfg.train.seed)
        self.model = build_model(cfg)
        if not self._reported("data."):
            self._collect(check_data_against_model, cfg, self.model)
        self.pretrained_report = None
        if cfg.model.pretrained and self._fits_pretrained:
            self._collect(self._load_pretrained, cfg.model.pretrained)
        self.mask_generator = build_mask_generator(cfg)
        self.recipe: Recipe = build_recipe_from_config(cfg, self.model, self.mask_generator)
        _seed_all(cfg.train.seed + self.rank)

    def _collect(self, check: Any, *args: Any) -> bool:
        """Run `check(*args)`; a `ConfigError` joins `self.problems` instead of stopping the launch
        (all of them are reported together). Returns whether it passed."""
        try:
            check(*args)
        except ConfigError as e:
            self.problems.append(str(e))
            return False
        return True

    def _build_data(self) -> None:
        """The training set on the recipe's `train_split` and the batch against it, the validation
        set on its `eval_split` (when it has one and `train.eval_every > 0`), the evaluation hooks'
        setup, label checks; each skipped where it needs a value already reported."""
        cfg, train_cfg = self.cfg, self.cfg.train
        self.train_split = self.recipe.train_split
        self.num_sample = int(cfg.data.num_sample) if self.train_split in ("pretrain", "train") else 1
        self.pin_memory = bool(train_cfg.pin_memory) and self.device.type == "cuda"
        self.steps_per_epoch, self.val_set = 0, None
        if self._reported("data.") or (not cfg.data.train and self._reported("data.train")):
            return
        if not self._collect(self._build_train_set):
            return
        val_built = self._collect(self._build_val_set)
        batch_ok = not self._reported("train.batch_size", "train.accum_steps")
        if batch_ok:
            self._fit_batch()
        if train_cfg.keep_best and val_built and self.val_set is None and not self._reported("train.keep_best"):
            self.problems.append(f"train.keep_best: chooses on the validation split, but there is none "
                                 f"(data.{self.recipe.eval_split or 'val'} with a recipe that validates)")
        if batch_ok and not self._reported("data.train", "data.val"):  # the hooks read both lists
            for hook in self.eval_hooks:
                self._collect(hook.setup, self)
        self._collect(self._check_labels, self.val_set)

    def _build_train_set(self) -> None:
        self.dataset = _checked_dataset(self.cfg.data, self.train_split)

    def _fit_batch(self) -> None:
        """The sampler and the steps of an epoch; a list too short for one optimizer step is a
        problem (unless the config's own check named it already)."""
        train_cfg = self.cfg.train
        batch_size, accum = int(train_cfg.batch_size), int(train_cfg.accum_steps)
        self.sampler = ResumableDistributedSampler(self.dataset, self.world, self.rank, shuffle=True,
                                                   seed=train_cfg.seed, drop_last=True)
        self.micro_per_epoch = (self.sampler.num_samples // batch_size) // accum * accum
        self.steps_per_epoch = self.micro_per_epoch // accum
        if self.micro_per_epoch == 0 and not self._reported("data.train"):
            fit = max(1, self.sampler.num_samples // batch_size)
            self.problems.append(
                f"data.train: {len(self.dataset)} samples are too few for one optimizer step with "
                f"{self.world} rank(s) × train.batch_size={batch_size} × train.accum_steps={accum}; set "
                + (f"train.accum_steps={fit}" if fit > 1 or batch_size <= self.sampler.num_samples else
                   f"train.batch_size={max(1, self.sampler.num_samples)} train.accum_steps=1"))

    def _build_val_set(self) -> None:
        """The recipe's `eval_split` (None without validation). Broken videos are kept as
        `ok=False` samples, never swapped: `evaluate` scores only the real ones."""
        cfg = self.cfg
        split = self.recipe.eval_split
        if not split or cfg.train.eval_every <= 0:
            return
        if not getattr(cfg.data, split, None):
            log.warning("no data.%s list: validation is skipped", split)
            return
        self.val_set = _checked_dataset(cfg.data, split, keep_broken=True)

    def _build_loaders(self) -> None:
        """Training loader (shuffled, the last partial batch dropped) and a deterministic validation
        loader (no shuffle, the last batch kept; `evaluate` drops the sampler's padding)."""
        cfg = self.cfg
        batch_size, workers = int(cfg.train.batch_size), int(cfg.data.num_workers)
        self.loader = build_loader(self.dataset, batch_size, self.sampler, workers, drop_last=True,
                                   pin_memory=self.pin_memory, persistent_workers=bool(cfg.data.persistent_workers))
        self.val_loader: Optional[DataLoader] = None
        self.val_size = len(self.val_set) if self.val_set is not None else 0
        if self.val_set is not None:
            sampler = DistributedSampler(self.val_set, self.world, self.rank, shuffle=False, drop_last=False)
            self.val_loader = build_loader(self.val_set, batch_size, sampler, workers, drop_last=False,
                                           pin_memory=self.pin_memory)

    def _build_optimization(self) -> None:
        """Global batch → peak lr, the lr / weight-decay schedules, the optimizer over the
        recipe's parameter groups, DeepSpeed's config and, with `train.resume`, the resume plan
        (another rank count is checked here, before DeepSpeed is built: engine.elastic)."""
        cfg, train_cfg, optim_cfg = self.cfg, self.cfg.train, self.cfg.optim
        accum = int(train_cfg.accum_steps)
        self.micro_clips = int(train_cfg.batch_size) * self.num_sample
        self.global_batch = self.micro_clips * self.world * accum
        self.peak_lr = float(optim_cfg.lr) if optim_cfg.lr is not None else scaled_lr(optim_cfg.base_lr,
                                                                                       self.global_batch)
        total = int(train_cfg.epochs) * self.steps_per_epoch
        warmup = int(round(float(optim_cfg.warmup_epochs) * self.steps_per_epoch))
        self.lr_schedule = CosineSchedule(self.peak_lr, float(optim_cfg.min_lr), total, warmup,
                                          float(optim_cfg.warmup_lr))
        wd_end = optim_cfg.weight_decay if optim_cfg.weight_decay_end is None else optim_cfg.weight_decay_end
        self.wd_schedule = CosineSchedule(float(optim_cfg.weight_decay), float(wd_end), total, 0,
                                          float(optim_cfg.weight_decay))
        self._warn_schedule(total, warmup)
        try:
            self.client_optimizer = build_optimizer(
                str(optim_cfg.name), self._param_groups(), self.peak_lr, float(optim_cfg.weight_decay),
                betas=list(optim_cfg.betas), eps=float(optim_cfg.eps), momentum=float(optim_cfg.momentum))
        except ValueError as e:
            raise ConfigError(str(e)) from e
        ds_cfg = cfg.deepspeed
        ds_dict = resolve_deepspeed_dict(ds_cfg.config, OmegaConf.to_container(ds_cfg.extra, resolve=True),
                                         ds_cfg.zero_stage, base_dir=repo_root())
        self.ds_config = build_deepspeed_config(ds_dict, self.micro_clips, accum, self.world, self.precision,
                                                optim_cfg.clip_grad, optimizer=str(optim_cfg.name))
        self.resume_plan = elastic.plan_resume(
            train_cfg.resume, self.ckpt_root, world=self.world, batch_size=int(train_cfg.batch_size),
            accum_steps=accum, num_sample=self.num_sample, steps_per_epoch=self.steps_per_epoch,
            train_split=self.train_split,
            zero_stage=int(ds_dict["zero_optimization"]["stage"])) if train_cfg.resume else None
        if self.resume_plan is not None and self.resume_plan.universal:
            self.ds_config.setdefault("checkpoint", {})["load_universal"] = True

    def _warn_schedule(self, total: int, warmup: int) -> None:
        """Name, before any work, a peak lr below `LR_FLOOR` (how it was scaled, what to set) and a
        warm-up as long as the run (the lr never leaves it)."""
        o, t = self.cfg.optim, self.cfg.train
        if self.peak_lr < LR_FLOOR and self.rank == 0:
            how = ("optim.lr" if o.lr is not None else
                   f"optim.base_lr={o.base_lr:g} × global batch {self.global_batch} / 256")
            log.warning("peak lr %.3g (%s) is below %g: the weights will barely move. Set an absolute "
                        "optim.lr (e.g. optim.lr=%g) or a larger batch", self.peak_lr, how, LR_FLOOR,
                        min(float(o.base_lr), 1e-3) if o.lr is None else LR_FLOOR * 10)
        if warmup >= total > 0 and self.rank == 0:
            log.warning("optim.warmup_epochs=%g spans all train.epochs=%d: the lr never leaves the warm-up; set "
                        "optim.warmup_epochs=%s", float(o.warmup_epochs), int(t.epochs), short_warmup(int(t.epochs)))

    def _start_engine(self) -> None:
        """`deepspeed.initialize` around the recipe; the EMA teacher (not DeepSpeed's) to the device."""
        import deepspeed  # heavy optional import (seconds): only once every check has passed

        with vdist.quiet_deepspeed():  # op probes of DeepSpeed's optional ops
            self.engine, self.optimizer, _, _ = deepspeed.initialize(model=self.recipe, optimizer=self.client_optimizer,
                                                                     config=self.ds_config)
        self.zero_stage = int(self.engine.zero_optimization_stage())
        if self.recipe.ema is not None:
            self.recipe.ema.to(self.device)
        train_cfg, optim_cfg = self.cfg.train, self.cfg.optim
        log.info(
            "%s, global batch %d clips (%d videos × %d samples × %d ranks × %d accum) → lr %.3e "
            "(base %.3e); %d steps/epoch, %d epochs, warm-up %d steps; ZeRO-%d",
            type(self.client_optimizer).__name__, self.global_batch, train_cfg.batch_size, self.num_sample,
            self.world, train_cfg.accum_steps, self.peak_lr, optim_cfg.base_lr, self.steps_per_epoch,
            train_cfg.epochs, self.lr_schedule.warmup_steps, self.zero_stage)

    def _init_loop_state(self) -> None:
        """Position, non-finite counters, history of best metrics, logger, loop diagnostics."""
        train_cfg = self.cfg.train
        self.epoch = 0
        self.micro = 0  # next micro-batch of `self.epoch`
        self.global_step = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.history: Dict[str, Any] = {}
        self._last_saved: Optional[Tuple[int, int, int, bool]] = None
        self._last_saved_path = ""
        self.micro_total = 0  # micro-steps run (skipped ones included), for train.max_nonfinite_fraction
        self.logger = MetricLogger(self.out, tensorboard=train_cfg.tensorboard, progress_bar=train_cfg.progress_bar,
                                   run_id=self.run_id)
        self.diag = LoopDiagnostics(self.device)  # data wait / compute / peak memory (engine.diagnostics)

    def _load_pretrained(self, path: str) -> None:
        """`model.pretrained` into the model, strictly unless `model.pretrained_strict=false`
        (`videohpm.models.load_pretrained(strict="parts")`); every refusal is a `ConfigError`
        naming the keys, raised before anything is written."""
        if not os.path.exists(path):
            raise ConfigError(f"model.pretrained: no such file {path!r}")
        strict = bool(self.cfg.model.pretrained_strict)
        try:
            report = load_pretrained(self.model, path, strict="parts" if strict else False,
                                     teacher=bool(self.cfg.model.pretrained_teacher))
        except PretrainedMismatchError as e:
            # strict=false loads what fits: no way on when nothing does
            way = ("To start anyway, with those weights at their initialisation: model.pretrained_strict=false"
                   if strict and e.report.loaded else "Check model.name / model.kwargs against the checkpoint's model")
            raise ConfigError(f"model.pretrained: {path}: {e}\n{way}") from e
        except (ValueError, FileNotFoundError) as e:  # refused file (CheckpointRefusedError), unknown layout
            raise ConfigError(f"model.pretrained: {e}") from e
        self.pretrained_report = report
        log.info("loaded pre-trained weights from %s\n%s", path, report)
        if report.problem_keys() and self.rank == 0:
            log.warning("model.pretrained_strict=false: %s does not fit the model, going on:\n%s", path,
                        report.problems())
        elif report.missing and self.rank == 0:
            log.warning("%d parameters were not in %s and keep their initialisation: %s", len(report.missing), path,
                        ", ".join(report.missing[:10]))

    def _write_pretrained_report(self) -> None:
        report = self.pretrained_report
        if report is None or self.rank != 0:
            return
        with open(os.path.join(self.out, "pretrained_report.json"), "w") as f:
            json.dump({"path": os.path.abspath(self.cfg.model.pretrained), "format": report.source_format,
                       "loaded": len(report.loaded), "missing": report.missing, "unexpected": report.unexpected,
                       "ignored": report.ignored, "mismatched": [list(map(str, m)) for m in report.mismatched],
                       "interpolated": report.interpolated, "strict": bool(self.cfg.model.pretrained_strict)},
                      f, indent=1)

    def _check_labels(self, val_set: Any) -> None:
        """Labels of the training and validation lists against the classifier's class count."""
        classes = self.recipe.num_classes
        if self.train_split == "pretrain" or not classes:
            return
        key = "method.kwargs.num_classes" if self.recipe.head_outside_model else "model.kwargs.num_classes"
        n_data = self.cfg.data.num_classes
        if n_data is not None and int(n_data) > int(classes):
            raise ConfigError(f"data.num_classes: {n_data}, but the model has {classes} outputs ({key}={classes})")
        lists = {"data.train": _labels_of(self.dataset)}
        if val_set is not None:
            lists["data.val"] = _labels_of(val_set)
        check_labels(lists, int(classes), key)

    def _param_groups(self) -> List[Dict[str, Any]]:
        """Optimizer groups: no decay on norms / biases / position tables / tokens (and the models'
        `no_weight_decay()` names), layer-wise lr decay when `optim.layer_decay < 1`
        (VideoMAE's `get_num_layer_for_vit` numbering, see `engine.optim.default_layer_id`)."""
        o = self.cfg.optim
        groups = build_param_groups(self.recipe, float(o.weight_decay), layer_decay=float(o.layer_decay),
                                    no_weight_decay=list(o.no_weight_decay))
        for g in groups:
            g.pop("param_names", None)
        n_decay = sum(p.numel() for g in groups if g["wd_scale"] > 0 for p in g["params"])
        n_all = sum(p.numel() for g in groups for p in g["params"])
        log.info("optimizer: %d groups, %.2fM parameters (%.2fM with weight decay)", len(groups), n_all / 1e6,
                 n_decay / 1e6)
        return groups

    # ------------------------------------------------------------------ resume / save
    def _resume(self, spec: str) -> None:
        info = self.run.resume  # found, and its config compared, by engine.runs.plan_run
        if info is None:
            log.info("train.resume=%s: no complete checkpoint in %s, starting from scratch", spec, self.ckpt_root)
            return
        info = elastic.prepare_load(self.resume_plan, info, self.ckpt_root)  # universal copy if ranks changed
        state = ckpt.load_checkpoint(self.engine, info)
        self.recipe.load_teacher_state_dict(state.get("teacher"))
        if self.recipe.ema is not None:
            self.recipe.ema.to(self.device)
        self.epoch, self.micro = int(state["epoch"]), int(state["micro_step"])
        self.global_step = int(state["global_step"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.nonfinite_run = int(state.get("nonfinite_run", 0))
        self.micro_total = int(state.get("micro_total", self.global_step * int(self.cfg.train.accum_steps)
                                         + self.nonfinite_total))
        self.history = dict(state.get("history", {}))
        if self.resume_plan is not None:  # another rank count, same global batch (checked by plan_resume)
            self.micro = self.resume_plan.micro
            log.warning("resuming a %d-rank checkpoint on %d rank(s): position %d micro-steps into epoch %d",
                        self.resume_plan.saved_world, self.world, self.micro, self.epoch)
        elif state.get("micro_per_epoch") not in (None, self.micro_per_epoch):
            raise RuntimeError(
                f"checkpoint {info.path} has {state['micro_per_epoch']} micro-steps per epoch, this run "
                f"{self.micro_per_epoch}: the data list, batch size, accumulation or world size changed")
        if state.get("lr_schedule") and state["lr_schedule"] != self.lr_schedule.state_dict():
            log.warning("lr schedule differs from the checkpoint's: %s vs %s", self.lr_schedule.state_dict(),
                        state["lr_schedule"])
        old = flatten_config(state.get("config", {}))
        new = flatten_config(OmegaConf.to_container(self.cfg, resolve=True))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith(
            ("train.resume", "train.max_steps", "train.output_dir")))
        if changed:
            log.warning("config differs from the checkpoint's in: %s", ", ".join(changed))
        self.logger.log_event("resume", checkpoint=info.path, epoch=self.epoch, micro_step=self.micro,
                              step=self.global_step)
        log.info("resumed from %s: epoch %d, micro-step %d, global step %d", info.path, self.epoch, self.micro,
                 self.global_step)

    def _trainer_state(self) -> Dict[str, Any]:
        return {
            "epoch": self.epoch,
            "micro_step": self.micro,
            "global_step": self.global_step,
            "micro_per_epoch": self.micro_per_epoch,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_run": self.nonfinite_run,
            "micro_total": self.micro_total,
            "run_id": self.run_id,
            "config_digest": self.run.digest,
            "lr_schedule": self.lr_schedule.state_dict(),
            "wd_schedule": self.wd_schedule.state_dict(),
            "teacher": self.recipe.teacher_state_dict(),
            "history": self.history,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def save(self, milestone: bool) -> str:
        """Checkpoint the current position (collective); a position already saved is not
        written again."""
        key = (self.global_step, self.epoch, self.micro, milestone)
        if self._last_saved == key:
            return self._last_saved_path
        tag = f"epoch-{self.epoch - 1:04d}" if milestone else f"latest-{self.global_step:08d}"
        path = ckpt.save_checkpoint(self.engine, self.ckpt_root, tag, self._trainer_state(),
                                    keep_rolling=int(self.cfg.train.keep_latest))
        self.logger.log_event("checkpoint", path=path, step=self.global_step, epoch=self.epoch, micro_step=self.micro)
        self._last_saved, self._last_saved_path = key, path
        return path

    def export_module(self) -> torch.nn.Module:
        """The module whose weights `model_final.pth` holds: the model when the recipe wraps it
        whole (MAE, HPM, ccMIM, fine-tuning), otherwise the recipe itself. A linear probe keeps
        only the model's encoder and adds its own BatchNorm + head; exporting the model would
        drop exactly the trained part, so its recipe is exported (keys `encoder.*`, `bn.*`,
        `head.*`, which `videohpm.models.load_pretrained` and `tools/test.py` both read)."""
        if any(m is self.model for m in self.recipe.modules()):
            return self.model
        return self.recipe

    def export(self, path: Optional[str] = None) -> str:
        """Write the trained full fp32 weights (and teacher) as `model_final.pth` (collective).

        The file is `{"model": state_dict, "weights": "model" | "recipe", "teacher": ...,
        "config": ..., "global_step": ...}` — "ours" for `videohpm.models.load_pretrained`
        (fine-tuning reads its "model" entry). "weights" says which module the state dict is
        of (`export_module`: the recipe for a linear probe, whose BN + head live outside the
        model).
        """
        path = path or os.path.join(self.out, "model_final.pth")
        module = self.export_module()
        sd = full_state_dict(module, self.zero_stage)
        if self.rank == 0:
            obj = {"model": sd, "weights": "model" if module is self.model else "recipe",
                   "global_step": self.global_step, "epoch": self.epoch,
                   "teacher": self.recipe.teacher_state_dict(),
                   "config": OmegaConf.to_container(self.cfg, resolve=True)}
            tmp = f"{path}.tmp{os.getpid()}"
            torch.save(obj, tmp)
            os.replace(tmp, path)
        vdist.barrier()
        return path

    # ------------------------------------------------------------------ loop pieces
    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def replica_max_diff(self) -> float:
        """max |θ_rank − θ_other| over all student (and teacher) parameters and ranks
        (collective; 0 = every rank holds the same weights)."""
        with gathered_parameters(self.recipe, self.zero_stage):
            tensors = [p.detach().float().reshape(-1) for p in self.recipe.parameters()]
        if self.recipe.ema is not None:
            tensors += [p.detach().float().reshape(-1) for p in self.recipe.ema.parameters()]
        flat = torch.cat(tensors)
        hi, lo = flat.clone(), flat.clone()
        vdist.all_reduce(hi, "max")
        vdist.all_reduce(lo, "min")
        return float((hi - lo).abs().max().item()) if flat.numel() else 0.0

    def _nonfinite(self, loss: torch.Tensor) -> bool:
        """Is the loss NaN/Inf on any rank? (One scalar all-reduce and host read per micro-step:
        the only way to skip the step consistently on every rank.)"""
        flag = (~torch.isfinite(loss.detach().float())).float().reshape(1)
        vdist.all_reduce(flag, "max")
        return bool(flag.item() > 0)

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """Top-1 / top-5 on the validation split over its decodable videos (collective): padded
        samples are not counted, broken videos (`ok=False`, never swapped) are counted once in
        `val_broken` and left out of the accuracies, like `tools/test.py`."""
        if self.val_loader is None:
            return {}
        self.engine.eval()
        sums: Dict[str, torch.Tensor] = {}
        pos = 0
        broken = torch.zeros((), device=self.device)
        for batch in self.val_loader:
            batch = _to_device(batch, self.device, self.input_dtype)
            video, label = batch["video"], batch["label"]
            n = label.shape[0]
            gpos = torch.arange(pos, pos + n, device=self.device) * self.world + self.rank
            real = gpos < self.val_size  # not the sampler's padding
            ok = batch["ok"] if "ok" in batch else torch.ones_like(real)
            broken += (real & ~ok).sum()
            valid = (real & ok).float()
            pos += n
            with self._autocast():
                outs = self.recipe.predict(video)
            for name, logits in outs.items():
                hits = topk_hits(logits.float(), label, (1, 5))
                c1 = (hits[1].float() * valid).sum()
                c5 = (hits[5].float() * valid).sum()
                s = torch.stack([c1, c5, valid.sum()])
                sums[name] = sums[name] + s if name in sums else s
        self.engine.train()
        out: Dict[str, float] = {}
        for name in sorted(sums):
            s = vdist.all_reduce(sums[name], "sum").tolist()
            suffix = f"_{name}" if name else ""
            out[f"val_acc1{suffix}"] = 100.0 * s[0] / max(s[2], 1)
            out[f"val_acc5{suffix}"] = 100.0 * s[1] / max(s[2], 1)
        out["val_broken"] = float(vdist.all_reduce(broken, "sum").item())
        return out

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Dict[str, Any]:
        """Train to `train.epochs` (or `train.max_steps`), then write `model_final.pth` (both ends);
        returns the last epoch's record."""
        epochs = int(self.cfg.train.epochs)
        apply_schedules(self.optimizer, self.lr_schedule(self.global_step), self.wd_schedule(self.global_step))
        if self.cfg.train.keep_best and self.global_step == 0 and self.micro == 0:
            self._keep_if_best(self.evaluate(), start=True)  # step 0: the model as it starts
        self.engine.train()
        last: Dict[str, Any] = {}
        while self.epoch < epochs and not self._reached_max_steps():
            tally = self.train_one_epoch()
            if self.micro < self.micro_per_epoch:  # stopped by max_steps mid-epoch
                self.save(milestone=False)
                break
            last = self._end_epoch(tally)
        self._check_nonfinite_fraction()
        if self.epoch >= epochs or self._reached_max_steps():  # a `train.max_steps` run ends here too
            self._export_final()
        return last

    # ------------------------------------------------------------------ train.keep_best
    def _keep_if_best(self, metrics: Dict[str, float], start: bool = False) -> None:
        """`train.keep_best`: write the current weights to `model_best.pth` when their validation
        top-1 beats every earlier one (step 0 included; ties keep the earlier) (collective)."""
        acc = metrics.get("val_acc1")
        if acc is None:
            return
        if start:
            self.history["start_val_acc1"] = acc
            self.logger.log_event("start_eval", step=self.global_step, **metrics)
            log.info("step 0 (the model as it starts): val top-1 %.2f %%", acc)
        if acc > self.history.get("kept_val_acc1", -1.0):
            self.history.update(kept_val_acc1=acc, kept_epoch=self.epoch, kept_step=self.global_step)
            self.export(os.path.join(self.out, "model_best.pth"))

    def _export_final(self) -> None:
        """`model_final.pth`: the last weights, or with `train.keep_best` the kept best ones."""
        best = os.path.join(self.out, "model_best.pth")
        if not self.cfg.train.keep_best or not os.path.isfile(best):
            self.export()
            return
        h = self.history
        if self.rank == 0:
            shutil.copyfile(best, os.path.join(self.out, "model_final.pth"))
        vdist.barrier()
        self.logger.log_event("final_weights", kept_epoch=h["kept_epoch"], kept_step=h["kept_step"],
                              kept_val_acc1=h["kept_val_acc1"], start_val_acc1=h.get("start_val_acc1"))
        log.info("train.keep_best: model_final.pth holds the weights after %d epoch(s) (step %d): val top-1 %.2f %% "
                 "(step 0, the start: %s %%)", h["kept_epoch"], h["kept_step"], h["kept_val_acc1"],
                 f"{h['start_val_acc1']:.2f}" if "start_val_acc1" in h else "?")

    def train_one_epoch(self) -> "_EpochTally":
        """The rest of epoch `self.epoch`, from micro-step `self.micro` (a resumed run starts
        mid-epoch), until its last micro-step or `train.max_steps`."""
        train_cfg = self.cfg.train
        epoch, epochs, accum = self.epoch, int(train_cfg.epochs), int(train_cfg.accum_steps)
        self.sampler.set_epoch(epoch, start=self.micro * int(train_cfg.batch_size))
        self.logger.start_epoch(epoch, epochs, self.steps_per_epoch, initial=self.micro // accum)
        self.diag.start_epoch(self.global_step)
        tally = _EpochTally(self.device)
        for batch in self.diag.timed(self.loader):
            if self.micro >= self.micro_per_epoch:
                break
            progress = (epoch + self.micro / self.micro_per_epoch) / epochs
            if not self._train_micro_batch(batch, progress, tally):
                continue
            self._after_optimizer_step(progress, tally)
            if self._reached_max_steps():
                break
            if train_cfg.save_every_steps and self.global_step % train_cfg.save_every_steps == 0 and \
                    self.micro < self.micro_per_epoch:
                with self.diag.excluded():
                    self.save(milestone=False)
        self.logger.close_bar()
        return tally

    def _train_micro_batch(self, batch: Any, progress: float, tally: "_EpochTally") -> bool:
        """Forward, backward and `engine.step()` of one micro-batch (the optimizer steps at the
        accumulation boundary). A non-finite loss skips the micro-step on every rank. Returns
        whether an optimizer step boundary was reached."""
        batch = _to_device(batch, self.device, self.input_dtype)
        if isinstance(batch, dict) and "broken" in batch:
            tally.broken += batch.pop("broken").sum()
        with self._autocast():
            out = self.engine(batch, progress)
        loss = out["loss"]
        self.micro += 1
        self.micro_total += 1
        if self.cfg.train.check_nonfinite and self._nonfinite(loss):
            self._on_nonfinite(loss, self.epoch)
            tally.skipped += 1
            return False
        self.nonfinite_run = 0
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.backward(loss)
        self.engine.step()
        parts = {k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        tally.window.add(parts)
        tally.epoch.add(parts)
        tally.clips_since_log += self.micro_clips
        return boundary

    def _after_optimizer_step(self, progress: float, tally: "_EpochTally") -> None:
        """The recipe's step end (the EMA teacher, Eq. 1) when the step was applied, the next
        step's lr / weight decay, the progress bar, and every `train.log_every` steps a log line
        (every `train.check_replicas_every` steps the replicas' largest difference)."""
        train_cfg = self.cfg.train
        self.global_step += 1
        if self.engine.was_step_applied():
            self.recipe.on_step_end()
        apply_schedules(self.optimizer, self.lr_schedule(self.global_step), self.wd_schedule(self.global_step))
        self.logger.advance()
        check_replicas = bool(train_cfg.check_replicas_every) and self.global_step % train_cfg.check_replicas_every == 0
        if self.global_step % train_cfg.log_every == 0:
            self._log_step(progress, tally, check_replicas)
        elif check_replicas:
            diff = self.replica_max_diff()
            self.logger.log_event("replicas", step=self.global_step, replica_max_diff=diff)

    def _log_step(self, progress: float, tally: "_EpochTally", check_replicas: bool) -> None:
        """One step record: the window's averaged parts, loop diagnostics, lr / wd of the step
        just taken, throughput, the gradient norm (and the replicas' largest difference)."""
        now = time.time()
        values = tally.window.pop(self.device)
        values.update(self.diag.step_values(self.global_step))  # after pop's sync
        values.update(epoch=self.epoch, progress=progress, lr=self.lr_schedule(self.global_step - 1),
                      wd=self.wd_schedule(self.global_step - 1),
                      clips_per_s=tally.clips_since_log * self.world / max(now - tally.t_log, 1e-9))
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        if check_replicas:
            values["replica_max_diff"] = self.replica_max_diff()
        self.logger.log_step(self.global_step, values)
        tally.t_log, tally.clips_since_log = now, 0

    def _end_epoch(self, tally: "_EpochTally") -> Dict[str, Any]:
        """The epoch record (train averages, skipped / broken counts, time, diagnostics,
        validation and evaluation hooks when due, best-so-far history), logged; then a
        checkpoint (a milestone every `train.save_every` epochs and at the last)."""
        train_cfg = self.cfg.train
        epoch, epochs = self.epoch, int(train_cfg.epochs)
        self.epoch, self.micro = epoch + 1, 0
        record: Dict[str, Any] = {f"train_{k}": v for k, v in tally.epoch.pop(self.device).items()}
        record["skipped_nonfinite"] = tally.skipped  # the same on every rank (global decision)
        record["broken_videos"] = float(vdist.all_reduce(tally.broken, "sum").item())
        record["epoch_time_s"] = time.time() - tally.t_start
        record.update(self.diag.epoch_values())  # data_wait_frac: how much the loader starved the step
        record.update(self._evaluate_when_due(epochs))
        record.update(self.history)
        self.logger.log_epoch(epoch, self.global_step, record)
        log.info("epoch %d/%d: %s", epoch + 1, epochs,
                 ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        milestone = self.epoch == epochs or (train_cfg.save_every > 0 and self.epoch % train_cfg.save_every == 0)
        self.save(milestone=milestone)
        return record

    def _evaluate_when_due(self, epochs: int) -> Dict[str, Any]:
        """Validation every `train.eval_every` epochs and the evaluation hooks when due (both at
        the last epoch), with their best values kept in `history` (collective)."""
        out: Dict[str, Any] = {}
        if self.val_loader is not None and (self.epoch % self.cfg.train.eval_every == 0 or self.epoch == epochs):
            out.update(self.evaluate())
            for k, v in out.items():
                if k.startswith("val_acc1"):
                    self.history[f"best_{k}"] = max(self.history.get(f"best_{k}", -1.0), v)
            if self.cfg.train.keep_best:
                self._keep_if_best(out)
        for hook in self.eval_hooks:
            if hook.due(self.epoch, epochs):
                metrics = hook(self)
                out.update(metrics)
                for k in hook.best:
                    self.history[f"best_{k}"] = max(self.history.get(f"best_{k}", -1.0), metrics[k])
        return out

    def _reached_max_steps(self) -> bool:
        max_steps = self.cfg.train.max_steps
        return bool(max_steps) and self.global_step >= max_steps

    def _check_nonfinite_fraction(self) -> None:
        """The run's final record: how many micro-steps were skipped (non-finite loss). More than
        `train.max_nonfinite_fraction` of them fails the run (no model_final.pth; the checkpoints
        stay), since its weights saw too little of the data to be trusted."""
        limit = float(self.cfg.train.max_nonfinite_fraction)
        frac = self.nonfinite_total / max(self.micro_total, 1)
        failed = self.nonfinite_total > 0 and frac > limit
        msg = (f"{self.nonfinite_total} of {self.micro_total} micro-steps ({100 * frac:.1f} %) were skipped for a "
               f"non-finite loss, more than train.max_nonfinite_fraction={limit:g}")
        self.logger.log_event("final", step=self.global_step, epoch=self.epoch, micro_steps=self.micro_total,
                              skipped_nonfinite=self.nonfinite_total, nonfinite_fraction=frac,
                              max_nonfinite_fraction=limit, status=f"failed: {msg}" if failed else "ok")
        if failed:
            raise NonFiniteLossError(
                f"{msg}: the run is failed and model_final.pth is not written (its checkpoints are in "
                f"{self.ckpt_root}). Lower optim.base_lr, set optim.clip_grad, or prefer train.precision=bf16 "
                "over fp16")

    def _on_nonfinite(self, loss: torch.Tensor, epoch: int) -> None:
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        value = float(loss.detach().float().item())
        log.warning("non-finite loss (%s) at epoch %d, micro-step %d (global step %d): step skipped "
                    "(%d in a row, %d in total)", value, epoch, self.micro - 1, self.global_step, self.nonfinite_run,
                    self.nonfinite_total)
        self.logger.log_event("nonfinite", epoch=epoch, micro_step=self.micro - 1, step=self.global_step,
                              loss=value, in_a_row=self.nonfinite_run)
        if self.nonfinite_run >= self.cfg.train.max_nonfinite:
            raise NonFiniteLossError(
                f"the loss was non-finite for {self.nonfinite_run} micro-steps in a row (limit "
                f"train.max_nonfinite={self.cfg.train.max_nonfinite}; last value {value} at epoch {epoch}, "
                f"global step {self.global_step}). Lower optim.base_lr, set optim.clip_grad, or prefer "
                f"train.precision=bf16 over fp16; the newest checkpoint is in {self.ckpt_root}")

    def close(self) -> None:
        self.logger.close()


def _checked_dataset(data_cfg: Any, split: str, keep_broken: bool = False) -> Any:
    """`build_dataset(data_cfg, split, keep_broken)` with list errors (malformed line, label out of
    range, empty list, missing file) as `ConfigError`: tools/train.py's exit 2, before any folder."""
    try:
        return build_dataset(data_cfg, split, keep_broken=keep_broken)
    except (ValueError, FileNotFoundError) as e:  # ListFormatError is a ValueError
        raise e if isinstance(e, ConfigError) else ConfigError(str(e)) from e


def _labels_of(dataset: Any) -> Any:
    """Class labels of a built dataset (list entries, or an image folder's samples)."""
    if hasattr(dataset, "videos"):
        return dataset.videos.labels
    return [c for _, c in dataset.folder.samples]


def train(cfg: DictConfig, eval_hooks: Sequence[EvalHook] = ()) -> Dict[str, Any]:
    """Run a training job described by a config (see `videohpm.config.load_config`; its value
    problems, when not checked there, come with the trainer's own in one `ConfigError`), with the
    given end-of-epoch evaluation hooks (tools/train.py: `videohpm.tasks.train.train`)."""
    trainer = Trainer(cfg, eval_hooks)
    try:
        return trainer.fit()
    finally:
        trainer.close()
