"""The work behind `tools/test.py` and `tools/visualize.py`: read checkpoints, build the model from
a run config, run the multi-view test and write its files, draw a clip's HPM maps.

Checkpoints accepted wherever a `checkpoint=` path is asked for:

- a file: `model_final.pth` of a run (`{"model", "teacher", ...}`), a VideoMAE V1/V2 or Hugging
  Face state dict (converted by `videohpm.models.load_pretrained`);
- a DeepSpeed checkpoint folder written by the engine (`<run>/checkpoints/epoch-0009`): the
  recipe's weights (`mp_rank_00_model_states.pt`, or the ZeRO-3 shards through DeepSpeed's
  `zero_to_fp32`) and the EMA teacher from `trainer_state.pt` (`engine.checkpoint.TRAINER_STATE`);
- a run folder (`model_final.pth` if present, else the newest complete checkpoint) or the
  `checkpoints/` root (its `latest` tag).
"""
from __future__ import annotations

import copy
import glob
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn

from videohpm import distributed as vdist
from videohpm.config import check_labels
from videohpm.data import build_collate, build_dataset, resolve
from videohpm.data.sampling import dense_indices
from videohpm.data.transforms import eval_transform, frames_to_video
from videohpm.data.video import VideoReader
from videohpm.engine.build import build_mask_generator, build_model, build_recipe_from_config
from videohpm.engine.checkpoint import TRAINER_STATE, deepspeed_safe_globals, read_trainer_state
from videohpm.engine.data import build_knn_loaders
from videohpm.evaluation.flops import CostSummary, count_flops, count_parameters, format_table
from videohpm.evaluation.knn import knn_eval, mean_pooled_features
from videohpm.evaluation.multiview import evaluate_multiview, write_metrics_json, write_predictions_csv
from videohpm.evaluation.visualize import compute_visualization, render_grid_png, write_animation
from videohpm.models import cpu_kernels, load_pretrained
from videohpm.models.checkpoint import read_checkpoint_file, resolve_checkpoint_path, teacher_state_dict, \
    weights_only_loads
from videohpm.models.export import built_name
from videohpm.precision import autocast_dtype, emulated_bf16_warning

__all__ = ["CheckpointWeights", "read_checkpoint", "load_classifier", "run_test", "load_encoder", "run_knn",
           "load_clip", "run_visualize"]

log = logging.getLogger(__name__)


@dataclass
class CheckpointWeights:
    """Weights read from a checkpoint. `model`: state dict (recipe- or model-level keys);
    `teacher`: the EMA teacher / model EMA state dict, if saved; `source`: the file(s) read."""

    model: Dict[str, torch.Tensor]
    teacher: Optional[Dict[str, torch.Tensor]] = None
    source: str = ""
    meta: Dict[str, Any] = field(default_factory=dict)


def _tensors(d: Any) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in d.items() if isinstance(v, torch.Tensor)} if isinstance(d, Mapping) else {}


def _deepspeed_folder(folder: str) -> CheckpointWeights:
    """One DeepSpeed tag folder (as `videohpm.engine.checkpoint` writes it). Every file is read by
    the one checkpoint reader (`videohpm.models.checkpoint.read_checkpoint_file`: weights_only,
    never a full unpickle; a refused file raises `CheckpointRefusedError`, a ValueError that says
    what it holds)."""
    full = os.path.join(folder, "mp_rank_00_model_states.pt")
    if os.path.isfile(full):
        sd = _tensors(read_checkpoint_file(full).get("module"))
        source = full
    elif glob.glob(os.path.join(folder, "zero_pp_rank_*_mp_rank_00_model_states.pt")):
        # lazy: DeepSpeed is slow to import; only ZeRO-3 shard folders need its zero_to_fp32
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        parent, tag = os.path.split(os.path.abspath(folder))
        with weights_only_loads(deepspeed_safe_globals()):  # zero_to_fp32 would unpickle the shards
            sd = dict(get_fp32_state_dict_from_zero_checkpoint(parent, tag=tag))
        source = f"{folder} (ZeRO-3 shards)"
    else:
        raise FileNotFoundError(f"checkpoint={folder}: no mp_rank_00_model_states.pt or ZeRO shards in this folder")
    if not sd:
        raise ValueError(f"checkpoint={source}: no module weights inside")
    teacher, meta = None, {}
    if os.path.isfile(os.path.join(folder, TRAINER_STATE)):
        state = read_trainer_state(folder)
        teacher = _tensors(state.get("teacher")) or None
        meta = {k: state.get(k) for k in ("epoch", "global_step") if k in state}
    return CheckpointWeights(sd, teacher, source, meta)


def read_checkpoint(path: str, prefer_full_recipe: bool = False) -> CheckpointWeights:
    """Read weights from any checkpoint layout of the module docstring.

    Args:
        prefer_full_recipe: in a run folder, read the newest DeepSpeed checkpoint (the whole
            recipe, e.g. a linear probe's BatchNorm and head) rather than `model_final.pth`
            (the model only).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint={path}: no such file or folder")
    if os.path.isdir(path):
        final = os.path.join(path, "model_final.pth")
        if os.path.isfile(final) and not prefer_full_recipe:
            return read_checkpoint(final)
        for root in (os.path.join(path, "checkpoints"), path):
            latest = os.path.join(root, "latest")
            if os.path.isfile(latest):
                with open(latest) as f:
                    return _deepspeed_folder(os.path.join(root, f.read().strip()))
        if os.path.isfile(final):
            return read_checkpoint(final)
        if os.path.isfile(os.path.join(path, "mp_rank_00_model_states.pt")) or glob.glob(
                os.path.join(path, "zero_pp_rank_*")):
            return _deepspeed_folder(path)
        # a Hugging Face save_pretrained() folder, or a DeepSpeed save root / tag folder of
        # another code base (VideoMAE's `checkpoint-N/`): the one reader resolves them
        source = resolve_checkpoint_path(path)
        obj = read_checkpoint_file(source)
        if source.endswith("mp_rank_00_model_states.pt") and isinstance(obj, Mapping) and isinstance(obj.get("module"), Mapping):
            obj = obj["module"]
        return CheckpointWeights(dict(obj), None, source)
    obj = read_checkpoint_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) and "config" in obj:
        return CheckpointWeights(_tensors(obj["model"]), _tensors(obj.get("teacher")) or None, path,
                                 {k: obj.get(k) for k in ("epoch", "global_step")})
    # VideoMAE / HF / HPM / plain state dict: unwrapped later; HPM's official files keep their EMA teacher
    return CheckpointWeights(dict(obj), teacher_state_dict(obj), path)


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


class _Logits(nn.Module):
    """`x -> logits` of a recipe with `logits()` (linear probing), for testing and FLOPs."""

    def __init__(self, recipe: nn.Module) -> None:
        super().__init__()
        self.recipe = recipe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.recipe.logits(x)


def load_classifier(cfg: DictConfig, checkpoint: str, ema: bool = False) -> nn.Module:
    """The classifier of a fine-tuning (`method.name: classification`) or linear-probing
    (`linear_probe`) config with the checkpoint's weights, in eval mode: `x -> logits`.

    Args:
        ema: evaluate the model EMA saved next to the weights (classification with `model_ema`).
    Raises:
        ValueError naming `checkpoint=` when weights are missing or do not fit the model.
    """
    method = str(cfg.method.name)
    weights = read_checkpoint(checkpoint, prefer_full_recipe=method == "linear_probe")
    model = build_model(cfg)
    if method == "linear_probe":
        recipe = build_recipe_from_config(cfg, model, None)
        missing, unexpected = recipe.load_state_dict(_strip(weights.model, "module."), strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint={weights.source}: does not fit the linear probe (missing {missing[:6]}, "
                             f"unexpected {unexpected[:6]}); pass a checkpoint folder of the linear-probing run")
        net: nn.Module = _Logits(recipe)
    elif method == "classification":
        sd = weights.teacher if ema else weights.model
        if sd is None:
            raise ValueError(f"checkpoint={weights.source}: no model EMA saved (train with method.kwargs.model_ema=true)")
        sd = _strip(sd, "model.")  # recipe-level keys of a DeepSpeed checkpoint
        report = load_pretrained(model, sd, strict=False)
        if not report.ok:
            raise ValueError(f"checkpoint={weights.source}: does not fit model {cfg.model.name}:\n{report}")
        net = model
    else:
        raise ValueError(f"method.name: tools/test.py evaluates classifiers (classification, linear_probe), "
                         f"got {method!r}")
    log.info("loaded %s (%s)", weights.source, ", ".join(f"{k} {v}" for k, v in weights.meta.items()) or "weights")
    return net.eval()


_warn_bf16_emulated = emulated_bf16_warning(log, "train.precision", "evaluation runs in fp32 instead")


def _amp_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The evaluation forward's autocast dtype for `train.precision` (None: fp32), by
    `videohpm.precision.autocast_dtype`: bf16 on a CPU only where native (before, never on a
    CPU; see that module for why the merged rule keeps bf16 where it is native)."""
    return autocast_dtype(precision, device, cpu_kernels.cpu_bf16_is_fast, _warn_bf16_emulated)


def _check_test_labels(net: nn.Module, dataset: Any, cfg: DictConfig) -> None:
    """The test list's labels against the classifier's outputs, before any video is decoded
    (a label the head cannot produce would otherwise just count as wrong)."""
    inner = net.recipe if isinstance(net, _Logits) else net
    classes = getattr(inner, "num_classes", None)
    labels = getattr(getattr(dataset, "videos", None), "labels", None)
    if not classes or labels is None:
        return
    key = "method.kwargs.num_classes" if cfg.method.name == "linear_probe" else "model.kwargs.num_classes"
    check_labels({"data.test": labels}, int(classes), key)


def run_test(
    cfg: DictConfig,
    checkpoint: str,
    output_dir: str,
    batch_size: Optional[int] = None,
    ema: bool = False,
    videomae_txt: bool = False,
    flops: bool = True,
    max_views_per_forward: Optional[int] = None,
    on_checks_passed: Optional[Callable[[], None]] = None,
) -> Dict[str, Any]:
    """Multi-view test of a config's classifier (all ranks); rank 0 writes `predictions.csv`,
    `metrics.json` and `summary.md` into `output_dir` (and every rank `videomae/{rank}.txt`),
    unless no video could be decoded: then no result file is written (`num_videos` 0).

    Args:
        on_checks_passed: called on every rank once the checkpoint is loaded and the list read
            and checked, before anything is evaluated or written (the tool starts its log file).
    Returns the metrics (identical on every rank), including the cost summary.
    """
    device = vdist.init_distributed(cfg.train.dist_backend or None)
    data_cfg = resolve(OmegaConf.to_object(cfg.data))
    net = load_classifier(cfg, checkpoint, ema=ema).to(device)
    dataset = build_dataset(cfg.data, "test")
    _check_test_labels(net, dataset, cfg)
    if on_checks_passed is not None:
        on_checks_passed()
    clips, crops = int(data_cfg.test_num_clips), int(data_cfg.test_num_crops)
    amp = _amp_dtype(str(cfg.train.precision), device)
    log.info("testing %d videos × %d clips × %d crops on %d rank(s), %s", len(dataset), clips, crops,
             vdist.get_world_size(), amp or "fp32")
    preds, metrics = evaluate_multiview(
        net, dataset, batch_size=int(batch_size or cfg.train.batch_size), num_workers=int(data_cfg.num_workers),
        device=device, num_crops=crops, amp_dtype=amp, max_views_per_forward=max_views_per_forward,
        videomae_dir=os.path.join(output_dir, "videomae") if videomae_txt else None, collate_fn=build_collate(cfg.data, "test"))
    t = int(data_cfg.num_frames) if data_cfg.kind == "video" else 1
    view_shape = (1, 3, t, int(data_cfg.input_size), int(data_cfg.input_size))
    gflops = count_flops(net, view_shape, device) / 1e9 if flops else float("nan")
    name = built_name(net.recipe if isinstance(net, _Logits) else net)  # what was built, not the registry name
    cost = CostSummary(name, t, gflops, clips, crops, count_parameters(net) / 1e6,
                       metrics["top1"], metrics["top5"])
    metrics.update(cost=cost.as_dict(), checkpoint=os.path.abspath(checkpoint), ema=ema, world_size=vdist.get_world_size())
    if not metrics["num_videos"]:
        log.error("no video could be decoded (%d broken): no result written", metrics["num_broken"])
    elif vdist.is_main_process():
        write_predictions_csv(preds, os.path.join(output_dir, "predictions.csv"))
        write_metrics_json(metrics, os.path.join(output_dir, "metrics.json"))
        table = format_table([cost])
        with open(os.path.join(output_dir, "summary.md"), "w") as f:
            f.write(table + f"\n\nmean per-class accuracy {metrics['mean_class_acc']:.2f}, "
                    f"{metrics['num_videos']} videos, {metrics['num_broken']} broken\n")
        log.info("\n%s", table)
    vdist.barrier()
    return metrics


def load_encoder(cfg: DictConfig, checkpoint: Optional[str], teacher: bool = False) -> nn.Module:
    """The model of `cfg` (pre-training or fine-tuning config) with a checkpoint's encoder, in
    eval mode, for frozen-feature evaluation; `checkpoint=None` keeps the random initialisation
    (seeded by `train.seed`: the baseline row of a k-NN table).

    Args:
        teacher: read the EMA teacher saved with the checkpoint (HPM's `θ_t`, Eq. 1) instead of
            the student.
    Raises:
        ValueError naming `checkpoint=` when an encoder weight is missing, unexpected or of
            another shape (decoders, loss predictor and classifier head may be absent).
    """
    torch.manual_seed(int(cfg.train.seed))
    model = build_model(cfg)
    if checkpoint is None:
        log.info("random initialisation (train.seed=%d): no checkpoint", int(cfg.train.seed))
        return model.eval()
    weights = read_checkpoint(checkpoint)
    sd = weights.teacher if teacher else weights.model
    if sd is None:
        raise ValueError(f"checkpoint={weights.source}: no EMA teacher saved (an HPM or ema_features run has one)")
    report = load_pretrained(model, _strip(sd, "model."), strict=False)
    bad = ([k for k in report.missing if k.startswith("encoder.")] + report.unexpected
           + [m[0] for m in report.mismatched])
    if bad:
        raise ValueError(f"checkpoint={weights.source}: its encoder does not fit model {cfg.model.name} "
                         f"(first problems: {bad[:6]}):\n{report}")
    log.info("loaded the %s encoder of %s (%s)", "teacher" if teacher else "student", weights.source,
             ", ".join(f"{k} {v}" for k, v in weights.meta.items()) or "weights")
    return model.eval()


def run_knn(cfg: DictConfig, checkpoint: Optional[str], output_dir: str, teacher: bool = False,
            batch_size: Optional[int] = None, on_checks_passed: Optional[Callable[[], None]] = None
            ) -> Dict[str, Any]:
    """Weighted k-NN top-1/top-5 of a checkpoint's frozen, mean-pooled encoder features (HPM journal
    Tables 1, 4, 5; DINO's protocol, `videohpm.evaluation.knn`): `data.train` is the memory bank,
    `data.val` the queries, both through the validation transform; k over `train.knn_k`, T =
    `train.knn_temperature`. All ranks extract their share; rank 0 writes `knn.json` (not when
    a list had no readable video). `on_checks_passed`: as in :func:`run_test`.

    Returns the metrics (identical on every rank).
    """
    device = vdist.init_distributed(cfg.train.dist_backend or None)
    model = load_encoder(cfg, checkpoint, teacher=teacher).to(device)
    train_loader, val_loader = build_knn_loaders(cfg.data, int(batch_size or cfg.train.batch_size),
                                                 vdist.get_world_size(), vdist.get_rank(), device.type == "cuda")
    if on_checks_passed is not None:
        on_checks_passed()
    amp = _amp_dtype(str(cfg.train.precision), device)
    num_classes = cfg.data.num_classes
    res = knn_eval(mean_pooled_features(model), train_loader, val_loader, ks=[int(k) for k in cfg.train.knn_k],
                   temperature=float(cfg.train.knn_temperature),
                   num_classes=int(num_classes) if num_classes is not None else None,
                   device=device, amp_dtype=amp, module=model)
    res.update(checkpoint=None if checkpoint is None else os.path.abspath(checkpoint), teacher=teacher,
               temperature=float(cfg.train.knn_temperature), world_size=vdist.get_world_size(),
               model=built_name(model))
    if vdist.is_main_process() and res["knn_val_samples"] and res["knn_train_samples"]:
        write_metrics_json(res, os.path.join(output_dir, "knn.json"))
    vdist.barrier()
    return res


def load_clip(path: str, data_cfg: Any, start: int = 0) -> torch.Tensor:
    """A normalized clip `[C, T, H, W]` from a video file (dense frames at the config's sampling
    rate from `start`) or an image (`T = 1`), resized and centre-cropped like validation."""
    cfg = resolve(data_cfg)
    tf = eval_transform(cfg.input_size, cfg.short_side_size, cfg.mean, cfg.std)
    if os.path.splitext(path)[1].lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"):
        frames = np.asarray(Image.open(path).convert("RGB"))[None]
        return tf(frames_to_video(frames))
    with VideoReader(path, backend=cfg.backend, fallback=cfg.fallback_backend) as vr:
        n = int(vr.num_frames) - int(start)
        idx = dense_indices(n, cfg.num_frames, cfg.sampling_rate, start=0) + int(start)
        frames = vr.get_batch(idx)
    return tf(frames_to_video(frames))


def _token_sampler(cfg: DictConfig, model: nn.Module, gen: Any, weights: CheckpointWeights) -> Callable:
    """AdaMAE's `x → p: [1, N]` with the sampler's trained weights (the recipe's `sampler.*` keys)."""
    sd = weights.model["model"] if isinstance(weights.model.get("model"), Mapping) else weights.model
    state = {k[len("sampler."):]: v for k, v in sd.items() if k.startswith("sampler.")}
    if not state:
        raise ValueError(f"checkpoint={weights.source}: no token sampler weights (sampler.*); they are in the "
                         "run's DeepSpeed checkpoints (checkpoint=<run folder> or <run>/checkpoints/<tag>), "
                         "not in model_final.pth")
    recipe = build_recipe_from_config(cfg, model, gen)
    recipe.sampler.load_state_dict(state)
    return recipe.eval().token_probs


def run_visualize(cfg: DictConfig, checkpoint: str, input_path: str, output_dir: str, progress: float = 1.0,
                  use_teacher: bool = True, num_loss_masks: int = 10, seed: int = 0, fmt: str = "gif",
                  start: int = 0) -> Dict[str, str]:
    """Fig. 2 maps of one video / image for a pre-training config + checkpoint; returns the files.

    The mask strategy is the config's (`mask.*`); HPM's teacher (saved with the checkpoint)
    predicts the loss that drives it unless `use_teacher=False` (then the student does). For
    `method.name=adamae` the token sampler (part of the recipe, so read from the run's DeepSpeed
    checkpoint, not `model_final.pth`) gives the probability row and the scores of the mask.
    """
    adamae = cfg.method.name == "adamae"
    weights = read_checkpoint(checkpoint, prefer_full_recipe=adamae)
    model = build_model(cfg)
    if not hasattr(model, "decode"):
        raise ValueError(f"model.name: {cfg.model.name} is not a pre-training model (no decoder to visualize)")
    own = weights.model["model"] if adamae and isinstance(weights.model.get("model"), Mapping) else weights.model
    own = {k: v for k, v in own.items() if not k.startswith("sampler.")}
    report = load_pretrained(model, _strip(own, "model."), strict=False)
    if not report.ok:
        raise ValueError(f"checkpoint={weights.source}: does not fit {cfg.model.name}:\n{report}")
    teacher = None
    if use_teacher and weights.teacher:
        teacher = copy.deepcopy(model)
        teacher.load_state_dict(weights.teacher)
    gen = build_mask_generator(cfg)
    if gen is None:
        raise ValueError("mask.name: set a mask strategy (e.g. hpm) to visualize")
    sampler = _token_sampler(cfg, model, gen, weights) if adamae else None
    x = load_clip(input_path, OmegaConf.to_object(cfg.data), start=start)
    vis = compute_visualization(model, x, gen, progress=progress, teacher=teacher, num_loss_masks=num_loss_masks,
                                seed=seed, sampler=sampler)
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(input_path))[0]
    png = os.path.join(output_dir, f"{stem}_p{progress:.2f}.png")
    anim = os.path.join(output_dir, f"{stem}_p{progress:.2f}.{fmt}")
    render_grid_png(vis, png)
    write_animation(vis, anim, scale=max(1, 160 // int(x.shape[-2])))  # small demo clips: enlarge (nearest)
    return {"png": png, "animation": anim}
