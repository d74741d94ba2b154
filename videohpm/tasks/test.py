"""The work behind `tools/test.py`: the multi-view test of a config's classifier (HPM journal
Tables 13–14 protocol) with its cost line, written as `predictions.csv`, `metrics.json` and
`summary.md`. Checkpoints: anything `videohpm.engine.checkpoint.read_checkpoint` reads.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Optional

from omegaconf import DictConfig, OmegaConf
from torch import nn

from videohpm import distributed as vdist
from videohpm.config import check_labels
from videohpm.data import build_collate, build_dataset, data_format, resolve
from videohpm.evaluation.flops import CostSummary, count_flops, count_parameters, format_table
from videohpm.evaluation.multiview import evaluate_multiview, write_metrics_json, write_predictions_csv
from videohpm.methods import recipe_class
from videohpm.models.formats import built_name
from videohpm.tasks.weights import RecipeLogits, eval_amp_dtype, load_classifier

__all__ = ["run_test"]

log = logging.getLogger(__name__)


def _check_test_labels(net: nn.Module, dataset: Any, cfg: DictConfig) -> None:
    """The test list's labels against the classifier's outputs, before any video is decoded
    (a label the head cannot produce would otherwise just count as wrong)."""
    inner = net.recipe if isinstance(net, RecipeLogits) else net
    classes = getattr(inner, "num_classes", None)
    labels = getattr(getattr(dataset, "videos", None), "labels", None)
    if not classes or labels is None:
        return
    outside = recipe_class(str(cfg.method.name)).head_outside_model
    key = "method.kwargs.num_classes" if outside else "model.kwargs.num_classes"
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
    amp = eval_amp_dtype(str(cfg.train.precision), device)
    log.info("testing %d videos × %d clips × %d crops on %d rank(s), %s", len(dataset), clips, crops,
             vdist.get_world_size(), amp or "fp32")
    preds, metrics = evaluate_multiview(
        net, dataset, batch_size=int(batch_size or cfg.train.batch_size), num_workers=int(data_cfg.num_workers),
        device=device, num_crops=crops, amp_dtype=amp, max_views_per_forward=max_views_per_forward,
        videomae_dir=os.path.join(output_dir, "videomae") if videomae_txt else None, collate_fn=build_collate(cfg.data, "test"))
    t = data_format(data_cfg.kind).frames(data_cfg)
    view_shape = (1, 3, t, int(data_cfg.input_size), int(data_cfg.input_size))
    gflops = count_flops(net, view_shape, device) / 1e9 if flops else float("nan")
    name = built_name(net.recipe if isinstance(net, RecipeLogits) else net)  # what was built, not the registry name
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
