"""`make demo-ablation`: HPM journal Table 12's rows on the demo data, same budget, several seeds.

:func:`run_ablation` (`tools/ablation.py`) pre-trains (or not), probes with k-NN, fine-tunes and
tests five variants with the same budget (epochs, batch, lr, model: the demo's video configs) over
several seeds and writes `<out>/ablation/ABLATION.md`, a table of fine-tuning top-1 (mean ± std)
like HPM journal Table 12: no pre-training, MAE + tube masks, MAE + per-frame random masks, HPM's
L_pred with per-frame random masks (no learn-to-mask) and full HPM (learn-to-mask, easy-to-hard);
optionally a few-label fine-tuning of every row. The demo's folder and data are shared; when the
demo has run, its report gets the ablation's table.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tools.lib.demo_stages import (CHANCE, VIDEO_CLASSES, DemoOptions, data_overrides, data_stage, epochs_override,
                                   knn_stage, prepare_out, test_stage, train_stage)
from tools.lib.label_scarce import few_label_list, read_lines
from tools.lib.report import format_report
from tools.lib.stages import DemoError, StageRunner, write_atomic

__all__ = ["AblationVariant", "ABLATION_VARIANTS", "run_ablation", "summarize_ablation", "format_ablation_table"]


@dataclass(frozen=True)
class AblationVariant:
    """One row: `pretrain` = config name under `configs/demo/[smoke/]` (None = no pre-training)."""

    name: str
    label: str
    pretrain: Optional[str]
    l_pred: str
    mask: str


ABLATION_VARIANTS: Tuple[AblationVariant, ...] = (
    AblationVariant("scratch", "no pre-training", None, "–", "–"),
    AblationVariant("mae_tube", "MAE, tube masking", "ablation/pretrain_mae_tube", "none", "tube (random)"),
    AblationVariant("mae_frame", "MAE, per-frame random masking", "ablation/pretrain_mae_frame", "none",
                    "per-frame random"),
    AblationVariant("hpm_pred_random", "HPM: L_pred with random masks", "ablation/pretrain_hpm_pred_random",
                    "relative BCE", "per-frame random"),
    AblationVariant("hpm", "HPM: learn to mask (easy-to-hard)", "pretrain_video_hpm", "relative BCE",
                    "learn to mask"),
)



def _few_label_overrides(ft_cfg: Path, opts: DemoOptions, factor: int) -> List[str]:
    """Fine-tuning on 1/`factor` of the labelled videos with half the optimizer steps (and
    warm-up steps and validations) of the full fine-tuning: epochs, warm-up and eval interval ×
    factor / 2 (at least × 1). Half, not all: with 3 steps an epoch the per-epoch overhead (a
    data-loading worker started per epoch) would double the run time."""
    from videohpm.config import load_config

    c = load_config(str(ft_cfg), epochs_override(opts, "video_finetune"))
    scale = max(1, factor // 2)
    return [f"train.epochs={int(c.train.epochs) * scale}",
            f"optim.warmup_epochs={float(c.optim.warmup_epochs) * scale}",
            f"train.eval_every={max(1, int(c.train.eval_every)) * scale}"]


def run_ablation(opts: DemoOptions, seeds: Sequence[int] = (0, 1, 2),
                 variants: Optional[Sequence[str]] = None, labels_per_class: int = 6) -> Dict[str, Any]:
    """Pre-train (or not), fine-tune and test every variant for every seed with the same budget
    (the demo's video configs); write `<out>/ablation/ABLATION.md` and `ablation.json`.

    `labels_per_class > 0` adds a few-label fine-tuning of every row: `labels_per_class` training
    videos per class (the first of each class in the train list), half the steps of the full
    fine-tuning, tested on the same videos (0 = skip)."""
    t_start = time.time()
    out = Path(opts.out_dir).resolve()
    _prepare_ablation_out(out, opts.overwrite)
    chosen = _chosen_variants(variants)
    per_run = 2 * (labels_per_class > 0)
    runner = StageRunner(out / "ablation", opts,
                         total=1 + len(seeds) * sum((4 if variant.pretrain else 3) + per_run for variant in chosen))
    print(f"videohpm ablation → {out / 'ablation'}  ({len(chosen)} variants × seeds {list(seeds)})", flush=True)
    meta = data_stage(runner, out, opts)
    data = data_overrides(meta, "video")
    ft_cfg = opts.config("finetune_video")
    few = _few_label_setup(out, opts, data, ft_cfg, labels_per_class) if labels_per_class > 0 else []
    results: Dict[str, Dict[int, Dict[str, float]]] = {}
    for seed in seeds:
        for variant in chosen:
            results.setdefault(variant.name, {})[seed] = _run_ablation_row(
                runner, opts, variant, seed, out / "ablation" / f"seed{seed}" / variant.name, data, ft_cfg,
                few, labels_per_class)
    summary = summarize_ablation(results)
    stage_seconds = {name: timing["seconds"] for name, timing in runner.timings.items()}
    doc = {"variants": [dataclasses.asdict(variant) for variant in chosen], "seeds": list(seeds), "results": results,
           "summary": summary, "stages": runner.timings, "smoke": opts.smoke, "ranks": opts.ranks,
           "stage_seconds_total": round(sum(stage_seconds.values()), 1),
           "total_seconds": round(time.time() - t_start, 1)}
    (out / "ablation" / "ablation.json").write_text(json.dumps(doc, indent=1))
    table = format_ablation_table(chosen, summary, results, CHANCE["video"])
    (out / "ablation" / "ABLATION.md").write_text(
        _ablation_markdown(opts, doc, table, chosen, stage_seconds, labels_per_class if few else 0))
    _add_ablation_to_demo_report(out)
    print(f"\n{table}\n\nablation: {out / 'ablation' / 'ABLATION.md'} (total {doc['total_seconds'] / 60:.1f} min)",
          flush=True)
    return doc


def _prepare_ablation_out(out: Path, overwrite: bool) -> None:
    """The demo's folder (and data) are shared: `overwrite` clears only `<out>/ablation`."""
    prepare_out(out, overwrite=False)
    if overwrite and (out / "ablation").exists():
        print(f"overwrite: removing {out / 'ablation'}", flush=True)
        shutil.rmtree(out / "ablation")


def _chosen_variants(names: Optional[Sequence[str]]) -> List[AblationVariant]:
    """The rows of :data:`ABLATION_VARIANTS` named in `names` (all for None), in table order."""
    known = [variant.name for variant in ABLATION_VARIANTS]
    chosen = [variant for variant in ABLATION_VARIANTS if names is None or variant.name in names]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise DemoError(f"unknown ablation variant(s) {unknown}; choose from {known}")
    return chosen


def _few_label_setup(out: Path, opts: DemoOptions, data: Sequence[str], ft_cfg: Path,
                     labels_per_class: int) -> List[str]:
    """Overrides of the few-label fine-tuning: a train list of `labels_per_class` videos per class
    (`<out>/ablation/train_<n>_per_class.csv`) and the budget of :func:`_few_label_overrides`."""
    train_list = Path(next(item for item in data if item.startswith("data.train=")).split("=", 1)[1])
    few = few_label_list(train_list, labels_per_class, out / "ablation" / f"train_{labels_per_class}_per_class.csv")
    factor = max(1, len(read_lines(train_list)) // few["videos"])
    return [f"data.train={few['path']}", *_few_label_overrides(ft_cfg, opts, factor)]


def _run_ablation_row(runner: StageRunner, opts: DemoOptions, variant: AblationVariant, seed: int, base: Path,
                      data: Sequence[str], ft_cfg: Path, few: Sequence[str], labels_per_class: int) -> Dict[str, float]:
    """One variant, one seed, in `base`: pre-training (unless `scratch`), k-NN of the frozen
    encoder, fine-tuning and its test, and with `few` overrides the few-label fine-tuning and its
    test. Returns `{"top1", "top5", "knn_top1"[, "few_top1"]}`."""
    over = [*data, f"train.seed={seed}"]
    pretrained, ckpt = "null", None
    if variant.pretrain:
        ckpt = train_stage(runner, f"seed {seed} {variant.name} pre-training", f"{variant.label}, seed {seed}",
                            opts.config(variant.pretrain), base / "pretrain",
                            [*over, *epochs_override(opts, "video_pretrain")], opts.ranks)
        pretrained = str(ckpt)
    # frozen features before any fine-tuning; no pre-training = the random initialisation
    # of the same encoder (HPM's pre-training config, this seed)
    knn = knn_stage(runner, f"seed {seed} {variant.name} k-NN", opts.config(variant.pretrain or "pretrain_video_hpm"),
                     ckpt, base / "knn", [*over, f"data.num_classes={VIDEO_CLASSES}"])
    ft = train_stage(runner, f"seed {seed} {variant.name} fine-tuning", f"fine-tuning ({variant.label}), seed {seed}",
                      ft_cfg, base / "finetune",
                      [*over, f"model.pretrained={pretrained}", *epochs_override(opts, "video_finetune")],
                      opts.ranks)
    metrics = test_stage(runner, f"seed {seed} {variant.name} test", ft_cfg, ft, base / "test", data)
    row = {"top1": float(metrics["top1"]), "top5": float(metrics["top5"]), "knn_top1": float(knn["knn_top1"])}
    if few:
        ft = train_stage(runner, f"seed {seed} {variant.name} few-label fine-tuning",
                          f"fine-tuning on {labels_per_class} videos per class ({variant.label}), seed {seed}",
                          ft_cfg, base / f"finetune_{labels_per_class}pc",
                          [*over, f"model.pretrained={pretrained}", *few], opts.ranks)
        metrics = test_stage(runner, f"seed {seed} {variant.name} few-label test", ft_cfg, ft,
                              base / f"test_{labels_per_class}pc", data)
        row["few_top1"] = float(metrics["top1"])
    return row


def _ablation_markdown(opts: DemoOptions, doc: Dict[str, Any], table: str, chosen: Sequence[AblationVariant],
                       stage_seconds: Dict[str, float], few_labels_per_class: int) -> str:
    """`ABLATION.md`: what was measured and how, the table, and the wall time per variant
    (`few_labels_per_class` = 0: no few-label column)."""
    seeds = doc["seeds"]
    text = ["# Ablation on the demo data (HPM journal Table 12 protocol, small scale)", "",
            f"Fine-tuning top-1 / top-5 (%) of the multi-view test (mean ± sample std over seeds "
            f"{list(seeds)}); chance = {CHANCE['video']:.1f}%. Same budget for every row: the configs of "
            f"`configs/demo/{'smoke/' if opts.smoke else ''}` (pre-training and fine-tuning epochs, batch, "
            f"lr, model). Stage time summed over all runs: {doc['stage_seconds_total'] / 60:.1f} min "
            f"(stages reused from an earlier or parallel invocation count with the time they took then; "
            f"this invocation: {doc['total_seconds'] / 60:.1f} min wall); {os.cpu_count()} CPU cores, "
            f"{opts.ranks} rank(s) per run, a shared machine — timings are noisy.", "",
            "k-NN column: weighted k-NN top-1 (`tools/knn.py`: k ∈ {10, 20, 100, 200}, best k, T = 0.07) of "
            "the frozen encoder's mean-pooled features before fine-tuning — train list as memory bank, "
            "val list as queries; for \"no pre-training\" the random initialisation of the same encoder."
            + (f" Few-label column: fine-tuning on {few_labels_per_class} videos per class (the first of each "
               f"class in the train list) with half the optimizer steps of the full fine-tuning, same test."
               if few_labels_per_class else ""), "",
            table, "", "Wall time per variant (s, summed over seeds; pre-training + k-NN + fine-tunings + tests):", ""]
    for variant in chosen:  # stage names are "seed <s> <variant> <what>"
        seconds = sum(spent for stage, spent in stage_seconds.items() if stage.split(" ")[2:3] == [variant.name])
        text.append(f"- {variant.label}: {seconds:.0f} s")
    return "\n".join(text) + "\n"


def _add_ablation_to_demo_report(out: Path) -> None:
    """If the demo has run in `out`, put the new `ABLATION.md` into its summary.json and REPORT.md."""
    if not (out / "summary.json").is_file():
        return
    demo_summary = json.loads((out / "summary.json").read_text())
    demo_summary["ablation"] = (out / "ablation" / "ABLATION.md").read_text()
    write_atomic(out / "summary.json", json.dumps(demo_summary, indent=1, default=str))
    write_atomic(out / "REPORT.md", format_report(demo_summary))


def summarize_ablation(results: Dict[str, Dict[int, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """Mean and sample standard deviation (n − 1; 0 for one seed) per variant of the fine-tuned
    top-1 / top-5 and, where every seed has them, the frozen encoder's k-NN top-1 (`knn_top1`) and
    the few-label fine-tuning top-1 (`few_top1`)."""
    out: Dict[str, Dict[str, float]] = {}
    for name, per_seed in results.items():
        row: Dict[str, float] = {"n": float(len(per_seed))}
        for metric in ("top1", "top5", "knn_top1", "few_top1"):
            if not all(metric in r for r in per_seed.values()):
                continue
            vals = [r[metric] for r in per_seed.values()]
            mean = sum(vals) / len(vals)
            var = sum((x - mean) ** 2 for x in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, math.sqrt(var)
        out[name] = row
    return out


def format_ablation_table(variants: Sequence[AblationVariant], summary: Dict[str, Dict[str, float]],
                          results: Dict[str, Dict[int, Dict[str, float]]], chance: float) -> str:
    """Markdown table in the shape of HPM journal Table 12 (+ per-seed top-1, Δ to the MAE row and,
    when measured, the k-NN top-1 of the frozen encoder before fine-tuning and the top-1 after
    few-label fine-tuning)."""
    ref = summary.get("mae_frame", {}).get("top1_mean")
    extra = [(metric, head) for metric, head in (("knn_top1", "k-NN top-1, frozen encoder"),
                                                 ("few_top1", "top-1, few-label fine-tuning"))
             if any(f"{metric}_mean" in row for row in summary.values())]
    rows = ["| pre-training | L_pred | mask | top-1 (mean ± std) | Δ vs MAE per-frame | top-5 (mean ± std) "
            "| top-1 per seed |" + "".join(f" {head} (mean ± std) |" for _, head in extra),
            "|---|---|---|---|---|---|---|" + "---|" * len(extra)]
    for variant in variants:
        row = summary.get(variant.name)
        if not row:
            continue
        delta = f"{row['top1_mean'] - ref:+.1f}" if ref is not None and variant.name != "mae_frame" else "–"
        per_seed = results[variant.name]
        seeds = ", ".join(f"{per_seed[seed]['top1']:.1f}" for seed in sorted(per_seed))
        cells = "".join(f" {row[f'{metric}_mean']:.1f} ± {row[f'{metric}_std']:.1f} |"
                        if f"{metric}_mean" in row else " – |" for metric, _ in extra)
        rows.append(f"| {variant.label} | {variant.l_pred} | {variant.mask} | "
                    f"{row['top1_mean']:.1f} ± {row['top1_std']:.1f} | {delta} | "
                    f"{row['top5_mean']:.1f} ± {row['top5_std']:.1f} | {seeds} |{cells}")
    rows.append(f"| *chance* | | | {chance:.1f} | | | |" + f" {chance:.1f} |" * len(extra))
    return "\n".join(rows)
