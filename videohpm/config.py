"""Structured run configuration: dataclass schema → YAML file(s) → `key=value` overrides.

    cfg = load_config("configs/pretrain/ssv2_vit_b_hpm.yaml", ["train.epochs=10", "optim.base_lr=1e-4"])

Sections (all typed; an unknown key anywhere is an error naming its full dotted path):
- `model`:    `name` for `videohpm.models.create_model` and its free `kwargs` (checked by the
              model's constructor when the run starts); `pretrained` checkpoint for fine-tuning.
- `mask`:     `name` for `videohpm.masking.make_mask_generator` (`none` for fine-tuning) + `kwargs`.
- `method`:   `name` for `videohpm.methods.build_recipe` (`mae`, `hpm`, `ccmim`, `classification`,
              `linear_probe`) + `kwargs`.
- `data`:     `videohpm.data.schema.DataConfig` (the data package's schema).
- `optim`:    AdamW (pre-training, fine-tuning) or SGD (linear probing), schedules (Tables S1–S3).
- `train`:    epochs, batch per rank, accumulation, precision, output, checkpoints, logging.
- `deepspeed`: a JSON file (`configs/deepspeed/zero{0,1,2,3}.json`) and/or inline keys.

`find_config` looks a path up as given, then in the bundled configs (`configs_dir()`), so
`configs/pretrain/ssv2_vit_b_hpm.yaml` works from any directory after `pip install .`. A YAML file
may start with `_base_: other.yaml` (or a list) to inherit, bases merged first, in order; a mapping
marked `_replace_: true` replaces the base's. Values are checked before any work (`validate_config`,
or `config_problems` for the trainer, which reports them with its own checks in one error).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videohpm.data import find_data_format
from videohpm.data.schema import DataConfig
from videohpm.data.schema import validate as validate_data
from videohpm.distributed import get_world_size, quiet_deepspeed
from videohpm.precision import PRECISIONS

__all__ = [
    "ConfigError",
    "ModelConfig",
    "MaskConfig",
    "MethodConfig",
    "OptimConfig",
    "TrainConfig",
    "DeepSpeedConfig",
    "Config",
    "PRECISIONS",
    "OPTIMIZERS",
    "load_config",
    "find_config",
    "configs_dir",
    "load_tool_config",
    "load_yaml_with_bases",
    "config_from_dict",
    "validate_config",
    "config_problems",
    "problem_key",
    "save_config",
    "repo_root",
    "OWNED_KEYS",
    "load_deepspeed_json",
    "resolve_deepspeed_dict",
    "check_data_against_model",
    "check_labels",
    "settings_error",
    "short_warmup",
]

# `optim.name`: AdamW for pre-training and fine-tuning (Tables S1–S2), SGD with momentum for
# linear probing (Table S3, MoCo v3's protocol).
OPTIMIZERS = ("adamw", "sgd")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the dotted key."""


@dataclass
class ModelConfig:
    """`create_model(name, **kwargs)`; `pretrained`: weights to start from (ours, VideoMAE V1/V2
    or Hugging Face layout, loaded with `videohpm.models.load_pretrained`).

    `pretrained_strict` (default true): the run stops before any work when a pre-trained key is
    unexpected, of another shape, or missing outside the model's new parts (a classifier's
    `fc_norm`/`head`; a pre-training model's decoders / loss predictor); the pre-training parts a
    classifier has no use for (decoder, `mask_token`, loss predictor, teacher) are ignored.
    `false`: load what fits and go on, with a WARNING that lists the rest. A checkpoint of which
    not one tensor fits is always an error.
    `pretrained_teacher` (default false): start from the EMA teacher saved next to the student
    (HPM's official `ema_state_dict`, our `teacher`) instead of the student, as the official
    fine-tuning's `--teacher`."""

    name: str = MISSING
    kwargs: Dict[str, Any] = field(default_factory=dict)
    pretrained: Optional[str] = None
    pretrained_strict: bool = True
    pretrained_teacher: bool = False


@dataclass
class MaskConfig:
    """`make_mask_generator(name, **kwargs)`; `none` = no masking (fine-tuning)."""

    name: str = "none"
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """`build_recipe(name, model, mask_generator, **kwargs)`."""

    name: str = MISSING
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimizer and per-iteration warm-up + cosine schedules (supplement Tables S1–S3).

    Attributes:
        name: "adamw" (pre-training, fine-tuning; Tables S1–S2) or "sgd" (linear probing,
            Table S3: momentum 0.9, no Nesterov, weight decay 0).
        base_lr: lr for a global batch of 256 clips; the run uses base_lr × global_batch / 256.
        lr: absolute peak lr; when set, `base_lr` and the scaling rule are not used.
        min_lr: lr at the end of the cosine.
        warmup_epochs: linear warm-up length (fractions allowed).
        warmup_lr: lr at the first step of warm-up.
        betas: AdamW (β1, β2): (0.9, 0.95) pre-training, (0.9, 0.999) fine-tuning. Unused by SGD.
        eps: AdamW ε. Unused by SGD.
        momentum: SGD momentum μ (heavy ball, `b ← μ·b + g`, `θ ← θ − lr·b`; Table S3's
            "β1 = 0.9"). Unused by AdamW.
        weight_decay: on matrices only (no decay on norms, biases, position tables, tokens);
            decoupled for AdamW, added to the gradient (L2) for SGD.
        weight_decay_end: if set, weight decay follows a cosine from `weight_decay` to it.
        layer_decay: layer-wise lr decay (1.0 = off; 0.75 VideoMAE fine-tuning).
        clip_grad: max global grad norm (DeepSpeed `gradient_clipping`); null = off.
        no_weight_decay: extra parameter-name patterns without weight decay.
    """

    name: str = "adamw"
    base_lr: float = 1.5e-4
    lr: Optional[float] = None
    min_lr: float = 1e-6
    warmup_epochs: float = 40.0
    warmup_lr: float = 1e-6
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    momentum: float = 0.9
    weight_decay: float = 0.05
    weight_decay_end: Optional[float] = None
    layer_decay: float = 1.0
    clip_grad: Optional[float] = None
    no_weight_decay: List[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """The loop, checkpoints and logging.

    Attributes:
        epochs: training epochs (the schedules and HPM's α_t run over them).
        batch_size: videos per rank per micro-step; with repeated augmentation
            (`data.num_sample = k`) a micro-batch holds batch_size × k clips.
        accum_steps: micro-steps per optimizer step. Global batch (clips) =
            batch_size × num_sample × world size × accum_steps (used by the lr scaling rule).
        output_dir: run folder (config.yaml, log.jsonl, tb/, checkpoints/, model_final.pth).
        save_every: keep a checkpoint every N epochs (and the last one); 0 = only the last.
        save_every_steps: also refresh the rolling `latest` checkpoint every N optimizer steps
            (0 = at epoch ends only).
        keep_latest: how many rolling `latest-*` checkpoints to keep (>= 1).
        eval_every: validate every N epochs (recipes with a validation split); 0 = never.
        keep_best: also validate before the first step (step 0: e.g. a head started from a fitted
            probe) and write as model_final.pth the weights of the best validation top-1 among
            step 0 and every validation (ties keep the earlier); needs `eval_every >= 1` and a
            validation list. The run never ends below its own start on the validation split.
        resume: "" (a new run), "auto" (continue the newest complete checkpoint in output_dir,
            if any — only if written with the same config, see `videohpm.engine.runs`) or a
            checkpoint folder. A new run refuses a folder that holds another run's checkpoints or
            model_final.pth.
        resume_force: with resume=auto, continue a checkpoint whose config differs (the keys are
            logged) instead of stopping.
        overwrite: a new run (resume="") in a folder that holds another run replaces that run's
            outputs (checkpoints, model_final.pth, logs) instead of stopping.
        seed: base seed (model init uses it as is; per-rank streams use seed + rank).
        precision: "auto" (bf16 on GPUs that support it, fp32 otherwise), "fp32", "bf16",
            "fp16" (DeepSpeed dynamic loss scaling).
        max_nonfinite: abort after this many non-finite losses in a row (each is skipped).
        max_nonfinite_fraction: a run that skipped more than this fraction of its micro-steps
            (non-finite losses, counted over the whole run) fails at its end: the final
            `log.jsonl` record says so, model_final.pth is not written, tools/train.py exits 1.
        check_nonfinite: test every loss for NaN/Inf before backward (one host sync per
            micro-step; the only way to skip the step). false = no check.
        log_every: optimizer steps between log points (the only host syncs of the loop).
        pin_memory: pin host batches (GPU runs).
        max_steps: stop after this many optimizer steps in total (smoke tests); 0 = no limit.
            The schedules still span `epochs`.
        tensorboard: write TensorBoard scalars under output_dir/tb.
        progress_bar: tqdm bar on rank 0.
        check_replicas_every: every N optimizer steps verify that all ranks hold identical
            student weights (all-reduce max − min; debugging aid, costs one full gather); 0 = off.
        dist_backend: "" (nccl on GPUs, gloo on CPUs), or an explicit backend.
        knn_every: every N epochs (and after the last one) report the weighted k-NN top-1 of
            the student encoder's mean-pooled features (HPM journal Tables 1/4/5, DINO's protocol) as a
            health metric of pre-training; 0 = off. Needs labelled `data.train` and `data.val`
            (and `data.num_classes` for video lists); both are read with the deterministic
            validation transform (centre clip, centre crop, no augmentation).
        knn_k: neighbourhood sizes; the best top-1 over them is logged as `knn_top1`, its k as
            `knn_best_k` (supplement §A.1: best of k = 10, 20, 100, 200).
        knn_temperature: T of the `exp(cos / T)` vote weights (0.07, DINO).
    """

    epochs: int = 800
    batch_size: int = 8
    accum_steps: int = 1
    output_dir: str = "outputs/run"
    save_every: int = 50
    save_every_steps: int = 0
    keep_latest: int = 1
    eval_every: int = 1
    keep_best: bool = False
    resume: str = ""
    resume_force: bool = False
    overwrite: bool = False
    seed: int = 0
    precision: str = "auto"
    max_nonfinite: int = 10
    max_nonfinite_fraction: float = 0.1
    check_nonfinite: bool = True
    log_every: int = 20
    pin_memory: bool = True
    max_steps: int = 0
    tensorboard: bool = True
    progress_bar: bool = True
    check_replicas_every: int = 0
    dist_backend: str = ""
    knn_every: int = 0
    knn_k: List[int] = field(default_factory=lambda: [10, 20, 100, 200])
    knn_temperature: float = 0.07


@dataclass
class DeepSpeedConfig:
    """DeepSpeed: `config` JSON file (relative to the working directory or the repo root),
    `zero_stage` to override its stage, and `extra` keys merged over the file."""

    config: Optional[str] = "configs/deepspeed/zero1.json"
    zero_stage: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """The whole run (see the module docstring)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


# --------------------------------------------------------------------------- loading
def _omega_message(e: OmegaConfBaseException) -> str:
    """OmegaConf's message with the full dotted key first."""
    key = getattr(e, "full_key", None)
    msg = str(e).split("\n")[0]
    return f"{key}: {msg}" if key else msg


def configs_dir() -> str:
    """The bundled configs: `videohpm/configs/` of an installed copy (`pip install .` packages the
    checkout's `configs/` there), else the checkout's `configs/`."""
    installed = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    return installed if os.path.isdir(installed) else os.path.join(repo_root(), "configs")


def find_config(name: str, base_dirs: Sequence[str] = ()) -> str:
    """The file a config path names (a YAML run config or a DeepSpeed JSON).

    Looked up, in order: as given (absolute, or relative to the working directory), under each of
    `base_dirs`, then in the bundled configs (`configs_dir()`; a leading `configs/` of `name` is
    dropped there, so `configs/deepspeed/zero2.json` and `deepspeed/zero2.json` both work).

    Raises:
        ConfigError: no such file; the message lists every place looked at.
    """
    places = _config_places(name, base_dirs)
    for place in places:
        if os.path.isfile(place):
            return place
    raise ConfigError(f"config file not found: {name} (looked in: {', '.join(places)})")


def _config_places(name: str, base_dirs: Sequence[str] = ()) -> List[str]:
    """Where `find_config` looks for `name`, in order."""
    places = [os.path.abspath(name)]
    if not os.path.isabs(name):
        places += [os.path.abspath(os.path.join(d, name)) for d in base_dirs]
        rel = os.path.normpath(name)
        rel = rel[len("configs" + os.sep):] if rel.startswith("configs" + os.sep) else rel
        places.append(os.path.join(configs_dir(), rel))
    return list(dict.fromkeys(places))


def load_yaml_with_bases(path: str, _seen: Optional[List[str]] = None) -> DictConfig:
    """Read `path` (looked up by `find_config`), merging the files named by its `_base_` key
    first (recursively; relative to the including file)."""
    path = find_config(path) if _seen is None else os.path.abspath(path)
    seen = list(_seen or [])
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(seen + [path])}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            top = yaml.safe_load(f)
        node = OmegaConf.load(path) if isinstance(top, dict) else None
    except Exception as e:  # yaml.YAMLError, a binary file, OmegaConf's own errors
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: not a readable YAML config ({first})") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: not a YAML config (the top level must be a mapping of sections, "
                          f"got {type(top).__name__})")
    bases = node.pop("_base_", None)
    if bases is None:
        return node
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, ListConfig)):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths")
    merged = OmegaConf.create({})
    for b in bases:
        if not isinstance(b, str) or not b.lower().endswith((".yaml", ".yml")):
            raise ConfigError(f"{path}: _base_ {str(b)[:200]!r} is not a YAML config file (.yaml / .yml)")
        bpath = b if os.path.isabs(b) else os.path.join(os.path.dirname(path), b)
        merged = OmegaConf.merge(merged, load_yaml_with_bases(bpath, seen + [path]))
    _apply_replace_markers(merged, node)
    return OmegaConf.merge(merged, node)


def _apply_replace_markers(base: DictConfig, child: DictConfig, prefix: str = "") -> None:
    """A child mapping with `_replace_: true` replaces the base's mapping instead of merging into
    it (e.g. `mask: {_replace_: true, name: tube, kwargs: {mask_ratio: 0.9}}` drops the base's
    HPM-only mask options)."""
    for key in list(child.keys()):
        value = child[key]
        if not isinstance(value, DictConfig):
            continue
        if value.pop("_replace_", False):
            if key in base:
                base.pop(key)
        elif isinstance(base.get(key), DictConfig):
            _apply_replace_markers(base[key], value, f"{prefix}{key}.")


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise ConfigError(f"override {o!r} is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"overrides: {_omega_message(e)}") from e


def config_from_dict(data: Union[Dict[str, Any], DictConfig], overrides: Sequence[str] = (), source: str = "<dict>",
                     check: bool = True) -> DictConfig:
    """Merge `data` and `overrides` onto the schema and validate; errors name `source` and the key.
    With `check=False` only keys, types and interpolations are checked here: the range and
    consistency problems (`config_problems`) are left to the caller, the trainer, which reports
    them together with its own checks of the weights and the data."""
    schema = OmegaConf.structured(Config)
    try:
        cfg = OmegaConf.merge(schema, data)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_omega_message(e)}") from e
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, _parse_overrides(overrides))
        except OmegaConfBaseException as e:
            raise ConfigError(f"command-line override: {_omega_message(e)}") from e
    if check:
        validate_config(cfg, source)
    else:
        _check_resolvable(cfg, source)
    return cfg  # type: ignore[return-value]


def load_config(path: str, overrides: Sequence[str] = (), check: bool = True) -> DictConfig:
    """Load a YAML run config (with `_base_` inheritance) and apply `key=value` overrides
    (`check=False`: values left to the caller, as in :func:`config_from_dict`).

    Raises:
        ConfigError: missing file, unknown key (full dotted path), value of the wrong type or out
            of range, malformed override.
    """
    return config_from_dict(load_yaml_with_bases(path), overrides, source=path, check=check)


def load_tool_config(path: str, args: Sequence[str], require_checkpoint: bool = True
                     ) -> "tuple[DictConfig, Optional[str]]":
    """The config and `checkpoint=<path>` of an evaluation tool (`tools/test.py`, `knn.py`,
    `visualize.py`): `args` mixes `checkpoint=` with `key=value` overrides. The weights come from
    `checkpoint=`, so the config's own start point (`model.pretrained`) is set to null: it is not
    needed and need not exist here.

    Raises:
        ValueError: no `checkpoint=` (when required) or more than one.
        FileNotFoundError: the checkpoint path does not exist.
        ConfigError: as :func:`load_config`.
    """
    checkpoints = [a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")]
    if len(checkpoints) > 1 or (require_checkpoint and not checkpoints) or (checkpoints and not checkpoints[0]):
        raise ValueError("give exactly one checkpoint=<path>")
    if checkpoints and not os.path.exists(checkpoints[0]):
        raise FileNotFoundError(f"checkpoint={checkpoints[0]}: no such file or folder")
    overrides = ["model.pretrained=null"] + [a for a in args if not a.startswith("checkpoint=")]
    return load_config(path, overrides), (checkpoints[0] if checkpoints else None)


def save_config(cfg: DictConfig, path: str) -> None:
    """Write the resolved config as YAML (atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- validation
def settings_error(source: str, problems: Sequence[str]) -> "ConfigError":
    """One `ConfigError` for all the settings problems of a launch: `source: key: reason` for one,
    `source: N settings problems:` and one indented line per problem for several (no `source: `
    prefix when `source` is empty)."""
    head = f"{source}: " if source else ""
    if len(problems) == 1:
        return ConfigError(f"{head}{problems[0]}")
    return ConfigError(f"{head}{len(problems)} settings problems:\n" + "\n".join(f"  {p}" for p in problems))


def problem_key(problem: str) -> str:
    """The config key a `key: reason` problem line names (`"optim.lr: must be > 0"` → `optim.lr`)."""
    return problem.split(":", 1)[0].split(" ", 1)[0]


def _optim_problems(o: DictConfig, epochs: int) -> List[str]:
    """`key: reason` of every bad `optim` value (the schedule against `train.epochs` included)."""
    checks = [
        (o.name.lower() in OPTIMIZERS, "optim.name", f"must be one of {OPTIMIZERS}, got {o.name!r}"),
        (o.base_lr > 0, "optim.base_lr", f"must be > 0, got {o.base_lr}"),
        (o.lr is None or o.lr > 0, "optim.lr", f"must be > 0 or null, got {o.lr}"),
        (o.min_lr >= 0, "optim.min_lr", f"must be >= 0, got {o.min_lr}"),
        (o.warmup_lr >= 0, "optim.warmup_lr", f"must be >= 0, got {o.warmup_lr}"),
        (0 <= o.warmup_epochs, "optim.warmup_epochs", f"must be >= 0, got {o.warmup_epochs}"),
        # a warm-up longer than the run never reaches the peak lr (one as long is warned of by the engine)
        (o.warmup_epochs <= epochs, "optim.warmup_epochs",
         f"{o.warmup_epochs:g} warm-up epochs do not fit the train.epochs={epochs} schedule; set "
         f"optim.warmup_epochs={short_warmup(epochs)} (or more train.epochs)"),
        (len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas), "optim.betas",
         f"must be two numbers in [0, 1), got {list(o.betas)}"),
        (o.eps > 0, "optim.eps", f"must be > 0, got {o.eps}"),
        (0.0 <= o.momentum < 1.0, "optim.momentum", f"must be in [0, 1), got {o.momentum}"),
        (o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}"),
        (o.weight_decay_end is None or o.weight_decay_end >= 0, "optim.weight_decay_end",
         f"must be >= 0 or null, got {o.weight_decay_end}"),
        (0 < o.layer_decay <= 1, "optim.layer_decay", f"must be in (0, 1], got {o.layer_decay}"),
        (o.clip_grad is None or o.clip_grad >= 0, "optim.clip_grad", f"must be >= 0 or null, got {o.clip_grad}"),
    ]
    return [f"{key}: {msg}" for ok, key, msg in checks if not ok]


def short_warmup(epochs: int) -> str:
    """A warm-up that fits `epochs`: a tenth of them (VideoMAE's 5 of 50), at most 5."""
    return f"{min(5.0, epochs / 10):g}"


def _train_problems(t: DictConfig) -> List[str]:
    """`key: reason` of every bad `train` value."""
    checks = [
        (t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}"),
        (t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}"),
        (t.accum_steps >= 1, "train.accum_steps", f"must be >= 1, got {t.accum_steps}"),
        (bool(t.output_dir), "train.output_dir", "must not be empty"),
        (t.save_every >= 0, "train.save_every", f"must be >= 0, got {t.save_every}"),
        (t.save_every_steps >= 0, "train.save_every_steps", f"must be >= 0, got {t.save_every_steps}"),
        (t.keep_latest >= 1, "train.keep_latest", f"must be >= 1, got {t.keep_latest}"),
        (t.eval_every >= 0, "train.eval_every", f"must be >= 0, got {t.eval_every}"),
        (not t.keep_best or t.eval_every >= 1, "train.keep_best", "chooses among validations: set train.eval_every >= 1"),
        (t.precision in PRECISIONS, "train.precision", f"must be one of {PRECISIONS}, got {t.precision!r}"),
        (t.max_nonfinite >= 1, "train.max_nonfinite", f"must be >= 1, got {t.max_nonfinite}"),
        (0.0 <= t.max_nonfinite_fraction <= 1.0, "train.max_nonfinite_fraction",
         f"must be in [0, 1], got {t.max_nonfinite_fraction}"),
        (not (t.overwrite and t.resume), "train.overwrite",
         f"true starts a new run, but train.resume={t.resume!r} continues one: set train.resume='' to replace "
         "the folder's run"),
        (t.log_every >= 1, "train.log_every", f"must be >= 1, got {t.log_every}"),
        (t.max_steps >= 0, "train.max_steps", f"must be >= 0, got {t.max_steps}"),
        (t.check_replicas_every >= 0, "train.check_replicas_every", f"must be >= 0, got {t.check_replicas_every}"),
        (t.dist_backend in ("", "nccl", "gloo", "mpi", "ccl", "hccl"), "train.dist_backend",
         f"unknown backend {t.dist_backend!r}"),
        (t.resume in ("", "auto") or os.path.isdir(t.resume), "train.resume",
         f"must be '', 'auto' or an existing checkpoint folder, got {t.resume!r}"),
        (t.knn_every >= 0, "train.knn_every", f"must be >= 0, got {t.knn_every}"),
        (len(t.knn_k) > 0 and all(int(k) >= 1 for k in t.knn_k), "train.knn_k",
         f"must be a non-empty list of ints >= 1, got {list(t.knn_k)}"),
        (t.knn_temperature > 0, "train.knn_temperature", f"must be > 0, got {t.knn_temperature}"),
    ]
    return [f"{key}: {msg}" for ok, key, msg in checks if not ok]


def _knn_problems(cfg: DictConfig) -> List[str]:
    """The k-NN health metric needs labelled train and val splits (read with the val transform)."""
    t = cfg.train
    if t.knn_every <= 0:
        return []
    why = f"train.knn_every={t.knn_every} needs labelled train and val splits"
    checks = [(bool(cfg.data.train), "data.train", f"not set, but {why}"),
              (bool(cfg.data.val), "data.val", f"not set, but {why}"),
              (not _needs_num_classes(cfg.data.kind) or cfg.data.num_classes is not None, "data.num_classes",
               f"not set, but {why} (labels of video lists are checked against it)")]
    return [f"{key}: {msg}" for ok, key, msg in checks if not ok]


def _needs_num_classes(kind: str) -> bool:
    """Labels of `data.kind`'s sources are checked against `data.num_classes` (an unknown kind:
    yes; `validate_data` reports the kind itself)."""
    fmt = find_data_format(kind)
    return fmt is None or fmt.needs_num_classes


def _batch_fit_problems(cfg: DictConfig) -> List[str]:
    """A video training list too short for one optimizer step: told with the config's other
    problems (the engine checks it again on the built data set, with the real rank count)."""
    d, t = cfg.data, cfg.train
    fmt = find_data_format(d.kind)
    if fmt is None or not fmt.source_is_list or not d.train or not os.path.isfile(str(d.train)):
        return []
    with open(str(d.train), encoding="utf-8", errors="replace") as f:
        n = sum(1 for line in f if line.strip())  # one video per non-blank line (videohpm.data.lists)
    world = max(1, get_world_size())
    per_rank, need = n // world, int(t.batch_size) * int(t.accum_steps)
    if n == 0 or per_rank >= need or t.batch_size < 1 or t.accum_steps < 1:
        return []
    fix = (f"train.accum_steps={per_rank // t.batch_size}" if per_rank >= t.batch_size else
           f"train.batch_size={max(per_rank, 1)} train.accum_steps=1")
    return [f"data.train: {n} videos are too few for one optimizer step with {world} rank(s) × "
            f"train.batch_size={t.batch_size} × train.accum_steps={t.accum_steps}; set {fix}"]


def validate_config(cfg: DictConfig, source: str = "<config>") -> None:
    """Range and consistency checks that the types alone cannot express; every problem found is
    reported in one `ConfigError` (`settings_error`), not only the first."""
    problems = config_problems(cfg, source)
    if problems:
        raise settings_error(source, problems)


def _check_resolvable(cfg: DictConfig, source: str) -> None:
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_omega_message(e)}" if source else _omega_message(e)) from e


def config_problems(cfg: DictConfig, source: str = "<config>") -> List[str]:
    """Every range and consistency problem of `cfg` as a `key: reason` line (empty: valid).

    Also runs the data package's `validate` on the `data` section and resolves the DeepSpeed
    section (JSON readable, no keys our config owns, valid ZeRO keys).

    Raises:
        ConfigError: a missing value or a broken interpolation (nothing else can be checked).
    """
    _check_resolvable(cfg, source)
    problems: List[str] = []
    if not cfg.model.name:
        problems.append("model.name: must name a registered model")
    if not cfg.method.name:
        problems.append("method.name: must name a recipe (mae, hpm, classification)")
    problems += _optim_problems(cfg.optim, int(cfg.train.epochs))
    problems += _train_problems(cfg.train)
    problems += _knn_problems(cfg)
    problems += _batch_fit_problems(cfg)
    # The data package's own checks (values; list paths are checked per split when the run
    # builds its datasets). Its messages already name the key ("data.num_frames: ...").
    try:
        validate_data(cfg.data)
    except (TypeError, ValueError) as e:
        problems.append(str(e))
    # DeepSpeed: file readable, no owned keys, ZeRO section valid.
    ds = cfg.deepspeed
    try:
        resolve_deepspeed_dict(ds.config, OmegaConf.to_container(ds.extra, resolve=True), ds.zero_stage,
                               base_dir=repo_root())
    except (OSError, ValueError) as e:
        problems.append(str(e))
    return problems


def check_data_against_model(cfg: DictConfig, model: Any) -> None:
    """The data geometry of `cfg` against a built model (before any work): frames a multiple of
    the tubelet, crop side a multiple of the patch, and the crop side the model's `img_size`
    unless `data.allow_resolution_change` (the position table is then interpolated).

    Raises:
        ConfigError naming `data.num_frames` / `data.input_size` / `data.kind` and the model's key.
    """
    enc = model.encoder
    p, t = int(enc.patch_size), int(enc.tubelet_size)
    d = cfg.data
    name = cfg.model.name
    fmt = find_data_format(d.kind)
    if fmt is not None and not fmt.is_video:
        if t != 1:
            raise ConfigError(f"data.kind: image clips have 1 frame, but model {name} has tubelet_size={t} "
                              "(set model.kwargs.tubelet_size=1 and num_frames=1)")
    elif int(d.num_frames) % t:
        raise ConfigError(f"data.num_frames: {d.num_frames} frames are not a multiple of the tubelet size {t} of "
                          f"model {name} (model.kwargs.tubelet_size)")
    size = int(d.input_size)
    if size % p:
        raise ConfigError(f"data.input_size: {size} is not a multiple of the patch size {p} of model {name} "
                          "(model.kwargs.patch_size)")
    built = int(enc.default_grid[1]) * p
    if size != built and not d.allow_resolution_change:
        raise ConfigError(
            f"data.input_size: {size}, but model {name} is built for {built} (model.kwargs.img_size). Set "
            f"model.kwargs.img_size={size}, or data.allow_resolution_change=true to run it at {size} with an "
            "interpolated position table")


def check_labels(lists: Dict[str, Any], num_classes: int, classes_key: str) -> None:
    """Every label of every list below the model's class count (before any work).

    Args:
        lists: `{config key: labels}` (e.g. `{"data.train": array}`; `-1` = unlabelled).
        num_classes: the classifier's outputs; `classes_key` names the key that sets it.
    Raises:
        ConfigError naming the list, the first offending label and both keys.
    """
    for key, labels in lists.items():
        labels = np.asarray(labels)
        if labels.size and int(labels.max()) >= num_classes:
            raise ConfigError(
                f"{key}: label {int(labels.max())} (of {int((labels >= num_classes).sum())} entries) does not fit "
                f"a {num_classes}-class model ({classes_key}={num_classes}); labels must lie in [0, {num_classes})")


def repo_root() -> str:
    """The checkout holding `configs/` (so `configs/deepspeed/zero2.json` works from any cwd)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- DeepSpeed section
# DeepSpeed keys that our own config decides; the value is the key to use instead.
OWNED_KEYS: Dict[str, str] = {
    "train_batch_size": "train.batch_size × world size × train.accum_steps",
    "train_micro_batch_size_per_gpu": "train.batch_size",
    "gradient_accumulation_steps": "train.accum_steps",
    "gradient_clipping": "optim.clip_grad",
    "optimizer": "optim.*",
    "scheduler": "optim.* (per-step schedules in videohpm.schedules)",
}


def _deep_merge(base: Dict[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_deepspeed_json(path: str) -> Dict[str, Any]:
    """Read a DeepSpeed JSON file; errors name the path (config key `deepspeed.config`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"deepspeed.config: no such file {path!r}")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"deepspeed.config: {path!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"deepspeed.config: {path!r} must hold a JSON object")
    return data


def resolve_deepspeed_dict(
    config_path: Optional[str], inline: Optional[Mapping[str, Any]] = None, zero_stage: Optional[int] = None,
    base_dir: Optional[str] = None,
) -> Dict[str, Any]:
    """The DeepSpeed-only part of a run's config: JSON file (if any), then inline keys, then
    `zero_stage` (used by `videohpm.engine.deepspeed_setup.build_deepspeed_config`).

    The file is looked up as given (relative to the working directory), then under `base_dir`,
    then in the bundled configs (`find_config`). Validated here, before any work starts: keys we
    own are rejected (see `OWNED_KEYS`), the `zero_optimization` section is checked by DeepSpeed's
    own pydantic model (typos such as `overlapcomm` fail naming the key) and the stage must be 0–3.
    """
    ds: Dict[str, Any] = {}
    if config_path:
        places = _config_places(config_path, [base_dir] if base_dir else [])
        path = next((p for p in places if os.path.isfile(p)), None)
        if path is None:
            raise FileNotFoundError(f"deepspeed.config: no such file {config_path!r} (looked in: {', '.join(places)})")
        ds = load_deepspeed_json(path)
    if inline:
        ds = _deep_merge(ds, inline)
    if zero_stage is not None:
        ds = _deep_merge(ds, {"zero_optimization": {"stage": int(zero_stage)}})
    for key, use in OWNED_KEYS.items():
        if key in ds:
            raise ValueError(f"deepspeed: key {key!r} is set by our config; use {use} instead")
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    if not isinstance(zero, dict):
        raise ValueError("deepspeed.zero_optimization must be a mapping")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"deepspeed.zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    try:
        with quiet_deepspeed():  # its first import probes the accelerator and says so
            # lazy: importing DeepSpeed is slow (it probes the accelerator); only this check needs it
            from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

        DeepSpeedZeroConfig(**zero)
    except ImportError:  # pragma: no cover - DeepSpeed is a hard dependency
        pass
    except Exception as e:  # pydantic.ValidationError: name each offending field
        errors = getattr(e, "errors", None)
        if callable(errors):
            parts = [f"deepspeed.zero_optimization.{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}"
                     for err in errors()]
            raise ValueError("; ".join(parts)) from e
        raise ValueError(f"deepspeed.zero_optimization: {e}") from e
    for section in ("bf16", "fp16"):
        if section in ds and not isinstance(ds[section], dict):
            raise ValueError(f"deepspeed.{section} must be a mapping")
    return ds
