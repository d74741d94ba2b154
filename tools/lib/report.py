"""The demo's report: `REPORT.md` from `summary.json`'s content, and the tables it shows.

:func:`format_report` writes the accuracy table with the chance level, the label-scarce section
(frozen probe and LP-FT against no pre-training, with the gain's binomial s.e.), HPM's α_t and
L_pred, the training curves and Fig. 2-style maps, the ablation's table when it has run, the stage
timings and a `tools/predict.py` call on two validation videos with its answers.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional

from tools.lib.machine import format_machine

__all__ = ["SIZED_FOR_GFLOPS", "format_report", "format_results_table", "label_scarce_gains"]

#: Calibration figure of the slowest machine the default demo is sized for (≤ 20 min on 2 cores).
SIZED_FOR_GFLOPS = 45.0


def format_results_table(results: Dict[str, Any]) -> str:
    """Markdown accuracy table of the demo, chance level next to each result."""
    rows = ["| set | classes | pre-training → fine-tuning | test views (clips × crops) | top-1 (%) | chance (%) "
            "| top-5 (%) | mean class acc (%) | test samples | GFLOPs / view | param. (M) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"video": "video — motion demo (webm, SSv2 layout)", "image": "image — handwritten digits (T = 1)"}
    for kind, row in results.items():
        rows.append(f"| {names.get(kind, kind)} | {row['num_classes']} | HPM {row['pretrain_epochs']} ep → "
                    f"{row['finetune_epochs']} ep | {row['clips']} × {row['crops']} | **{row['top1']:.1f}** | "
                    f"{row['chance']:.1f} | {row['top5']:.1f} | {row['mean_class_acc']:.1f} | {row['num_videos']} | "
                    f"{_fmt(row['gflops'], 3)} | {_fmt(row['params_m'], 2)} |")
    return "\n".join(rows)


def _fmt(v: Any, nd: int = 3) -> str:
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def format_report(summary: Dict[str, Any]) -> str:
    """`REPORT.md` from `summary.json`'s content (paths relative to the report's folder)."""
    return "\n".join([*_report_intro(summary), *_report_label_scarce(summary.get("label_scarce")),
                      *_report_hpm_runs(summary["results"]),
                      *_report_figures(summary["figures"]), *_report_ablation(summary.get("ablation")),
                      *_report_timings(summary["stages"]), *_report_predict(summary.get("predict"))])


def _report_intro(summary: Dict[str, Any]) -> List[str]:
    """Title, how and where the demo ran, and the accuracy table."""
    results = summary["results"]
    return [
        "# videohpm demo report",
        "",
        f"Written by `tools/demo.py` "
        f"({'smoke test, tiny data — numbers mean nothing' if summary['smoke'] else 'make demo'})"
        f" on {time.strftime('%Y-%m-%d %H:%M')}: {summary['cpu_count']} CPU core(s), "
        f"{summary['ranks']} training rank(s), seed {summary['seed']}, total {summary['total_seconds']:.0f} s.",
        "",
        f"Machine: {format_machine(summary.get('machine') or {})}. The demo is sized to take under 20 minutes "
        f"on a 2-core machine whose 1-thread fp32 1024³ GEMM runs at ~{SIZED_FOR_GFLOPS:.0f} GFLOP/s "
        "(docs/DEMO.md).",
        "",
        "## Accuracy (multi-view test of the fine-tuned models)",
        "",
        format_results_table(results),
        "",
        "Chance is the top-1 of a uniform guess over the classes (balanced test sets). "
        "Best single-view validation top-1 during fine-tuning: "
        + ", ".join(f"{kind} {_fmt(row['best_val_acc1'], 1)}%" for kind, row in results.items()) + ".",
        "",
    ]


def label_scarce_gains(probe: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Per protocol (``"probe"``, and ``"LP-FT"`` when it ran): test top-1 of both rows, the gain of
    pre-training and its binomial s.e. (the two rows' test errors are independent estimates:
    ``√(se_pre² + se_scratch²)``, each ``100·√(p(1−p)/n)``)."""
    from videohpm.evaluation.probe import binomial_stderr

    tops = {"probe": {r: probe["rows"][r]["test_top1"] for r in ("pretrained", "scratch")}}
    if probe.get("lpft"):
        tops["LP-FT"] = {r: probe["lpft"][r]["test_top1"] for r in ("pretrained", "scratch")}
    n = int(probe["n_eval"])
    return {name: {**t, "gain": t["pretrained"] - t["scratch"],
                   "stderr": (binomial_stderr(t["pretrained"], n) ** 2 + binomial_stderr(t["scratch"], n) ** 2) ** 0.5}
            for name, t in tops.items()}


def _report_label_scarce(probe: Optional[Dict[str, Any]]) -> List[str]:
    """The label-scarce probe and LP-FT: pre-trained encoder vs no pre-training, chance next to them."""
    if not probe:
        return []
    k, held = probe["per_class"], probe["val_per_class"]
    names = {"pretrained": "HPM pre-training (the video pre-training above)",
             "scratch": "no pre-training (random initialisation, same seed)"}
    lpft = probe.get("lpft") or {}
    lines = [f"## What pre-training gave: {k} labelled video(s) per class", "",
             "| video encoder | protocol | test top-1 (%) | ± (binomial s.e.) | val top-1 (%) | chosen | chance (%) |",
             "|---|---|---|---|---|---|---|"]
    for row in ("pretrained", "scratch"):
        r = probe["rows"][row]
        lines.append(f"| {names[row]} | frozen probe | **{r['test_top1']:.1f}** | {r['test_stderr']:.1f} | "
                     f"{r['val_top1']:.1f} | λ = {r['weight_decay']:g} | {probe['chance']:.1f} |")
        if row in lpft:
            f = lpft[row]
            lines.append(f"| {names[row]} | LP-FT | **{f['test_top1']:.1f}** | {f['test_stderr']:.1f} | "
                         f"{f['kept_val_top1']:.1f} | epoch {f['kept_epoch']} | {probe['chance']:.1f} |")
    how = (f"λ and the LP-FT epoch chosen on {held} more training videos per class" if held else
           "λ and the LP-FT epoch chosen on the test list itself (smoke variant only: 1 training video per class)")
    gains = "; ".join(f"{name} {g['gain']:+.1f} ± {g['stderr']:.1f} points" for name, g in label_scarce_gains(probe).items())
    return lines + [
        "",
        f"Gain of pre-training (± binomial s.e. of the difference, {probe['n_eval']} test videos): {gains}. "
        "Frozen probe: per video the mean token of each time slice, concatenated (`tools/extract_features.py "
        "--pool time`), and an L2 logistic regression fitted on the same labelled videos for both rows — only the "
        "encoder differs. LP-FT (`tools/few_labels.py`, `configs/demo/few_labels_video.yaml`): the classifier's "
        "head starts as that probe, then encoder and head are fine-tuned (lr 1e-4, layer decay 0.75, no label "
        "smoothing); the probe-initialised model (epoch 0) and every epoch are validated and the best is kept, so "
        f"on validation LP-FT never ends below the probe ({how}). One seed on this small test set is noisy "
        "(the ± column); docs/EVIDENCE.md has the 3-seed benchmark.", ""]


def _report_hpm_runs(results: Dict[str, Any]) -> List[str]:
    """Model, mask and HPM's α_t / L_rec / L_pred at the first and last logged step, per mode."""
    lines = [
        "## Models and HPM pre-training",
        "",
        "| set | model | mask | steps | α_t first → last (Eq. 8) | L_rec first → last | "
        "L_pred first → last (relative BCE, ln 2 = 0.693 ≙ no ranking) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, row in results.items():
        hpm = row["hpm"]

        def first_to_last(key: str) -> str:
            return f"{_fmt(hpm.get(key, {}).get('first'))} → {_fmt(hpm.get(key, {}).get('last'))}"

        lines.append(f"| {kind} | {row['model']} | {row['mask']} | {hpm.get('steps', 0)} | {first_to_last('alpha')} | "
                     f"{first_to_last('loss_rec')} | {first_to_last('loss_pred')} |")
    return lines


def _report_figures(figures: Dict[str, Any]) -> List[str]:
    """The training curves of every run and the Fig. 2-style maps."""
    lines = ["", "## Training curves", ""]
    for run, png in figures.get("curves", {}).items():
        lines += [f"**{run.replace('_', ' ')}**", "", f"![{run}](figures/{png})", ""]
    lines += ["## What HPM sees (HPM journal Fig. 2)", "",
              "Rows: input, true per-patch reconstruction loss (mean over 10 random masks), loss predicted "
              "by the EMA teacher's d_ψ, the easy-to-hard HPM mask at the end of training (α_T), and the "
              "reconstruction under that mask. Columns are frames (a token spans 2 frames).", ""]
    for kind, items in figures.get("fig2", {}).items():
        for item in items:
            lines += [f"**{kind}: {item['input']}**", "", f"![{item['input']}](figures/{item['png']})",
                      f"([animation](figures/{item['animation']}))", ""]
    return lines


def _report_ablation(ablation: Optional[str]) -> List[str]:
    """The ablation's table (`ABLATION.md` without its title), if `tools/ablation.py` has run."""
    if not ablation:
        return []
    body = ablation.split("\n", 1)[1] if ablation.startswith("#") else ablation
    return ["## Ablation on the same data (`make demo-ablation`; [ablation/ABLATION.md](ablation/ABLATION.md))",
            "", body.strip(), ""]


def _report_timings(stages: Dict[str, Dict[str, Any]]) -> List[str]:
    """Wall seconds of every stage, reused ones marked."""
    lines = ["## Stage timings", "", "| stage | seconds | |", "|---|---|---|"]
    for name, timing in stages.items():
        note = "reused from an earlier run" if timing["status"] == "reused" else ""
        lines.append(f"| {name} | {timing['seconds']:.0f} | {note} |")
    return lines + ["", "Timings are wall-clock seconds on a shared machine; they vary with its load.", ""]


def _report_predict(predict: Optional[Dict[str, Any]]) -> List[str]:
    """The `tools/predict.py` call on two validation videos and its answers."""
    if not predict:
        return []
    return ["## Answers for two demo videos (`tools/predict.py`)", "",
            "The fine-tuned video model, the test's 2 × 3 views, top-3 classes with their probabilities; "
            f"true classes: {', '.join(predict['truth'])}.", "", "```", f"$ {predict['command']}",
            *predict["lines"], "```", ""]

