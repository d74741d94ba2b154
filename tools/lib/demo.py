"""`make demo`: the whole pipeline on the bundled demo data, end to end (`tools/demo.py`).

:func:`run_demo` runs, each stage printing what it does: the motion demo set
(:func:`~tools.lib.demo_stages.data_stage`); **video pre-training** — HPM (HPM journal §3:
L = L_rec + L_pred, Eq. 2; easy-to-hard masks, Eq. 8) of a small ViT through `tools/train.py`
(DeepSpeed; `--ranks 2` launches two CPU ranks with the `deepspeed` launcher); **video fine-tuning**
from the exported weights, then the **multi-view test** (`tools/test.py`, SSv2's 2 clips × 3
crops); the same three stages for **image mode** (single-frame clips, T = 1, tubelet 1); the
**label-scarce** probe and LP-FT (:func:`~tools.lib.label_scarce.demo_label_scarce_probe`);
**figures** — training curves from every run's `log.jsonl` and the Fig. 2-style maps (input / true
loss / predicted loss / HPM mask / reconstruction); a `tools/predict.py` call on two validation
videos; and the **report** (:func:`~tools.lib.report.format_report`: `<out>/REPORT.md`, and
`<out>/summary.json` with the same numbers for machines).

Re-running is safe (:class:`~tools.lib.stages.StageRunner`: finished stages are skipped, interrupted
ones resumed, changed ones redone); `overwrite=True` starts from an empty output folder.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from tools.lib.demo_stages import (CHANCE, IMAGE_CLASSES, VIDEO_CLASSES, DemoOptions, data_overrides, data_stage,
                                   epochs_override, prepare_out, test_stage, train_stage)
from tools.lib.label_scarce import demo_label_scarce_probe
from tools.lib.machine import format_machine, machine_summary
from tools.lib.report import format_report, format_results_table, label_scarce_gains
from tools.lib.stages import REPO, DemoError, StageRunner

__all__ = ["LABEL_SCARCE", "run_demo", "hpm_progress_summary"]

#: The demo's label-scarce probe: labelled videos per class, and more per class to choose λ on.
LABEL_SCARCE = (5, 8)


def _predict_stage(runner: StageRunner, out: Path, meta: Dict[str, Any], ft_ckpt: Path) -> Dict[str, Any]:
    """`tools/predict.py` of the fine-tuned video model on two validation videos of different
    classes, names from the SSv2 labels JSON (the run's own config.yaml is used); returns the
    command, the answer lines and the true classes for the report."""
    from videohpm.tasks.predict import format_answer, read_answers

    videos = _pick_vis_videos(meta, 2)
    labels = Path(meta["root"]) / "ssv2" / "annotations" / "something-something-v2-labels.json"
    pred_dir = out / "video" / "predict"
    args = [f"checkpoint={ft_ckpt}", *videos, "--classes", str(labels), "--topk", "3", "--output-dir", str(pred_dir)]
    key = {"args": args, "checkpoint": [ft_ckpt.stat().st_mtime, ft_ckpt.stat().st_size]}
    runner.stage("video predict", "top-3 answers for two demo videos (tools/predict.py)", pred_dir, key,
                 lambda: runner.tool("video predict", "predict", args))
    truth = {}
    for line in open(meta["lists"]["ssv2"]["val"]):
        parts = line.split()
        if len(parts) >= 2:
            truth[os.path.basename(parts[0])] = int(parts[1])
    names = json.loads(labels.read_text())
    names = {int(v): k for k, v in names.items()}
    rel = lambda text: text.replace(str(REPO) + os.sep, "")  # noqa: E731  (as the stage logs show commands)
    return {"command": rel(" ".join(["python tools/predict.py", *args])),
            "lines": [rel(format_answer(a)) for a in read_answers(str(pred_dir / "predictions.json"))],
            "truth": [names[truth[os.path.basename(v)]] for v in videos]}


def _read_log(run_dir: Path) -> Tuple[Dict[str, Dict[int, float]], Dict[str, Dict[int, float]]]:
    from videohpm.evaluation.visualize import read_log

    return read_log(str(run_dir / "log.jsonl"))


def hpm_progress_summary(run_dir: str | os.PathLike) -> Dict[str, Any]:
    """What HPM's pre-training did, from its `log.jsonl`: α_t (Eq. 8) and the loss parts at the
    first and last logged steps, and the steps logged.

    `loss_pred` of the relative objective (BCE over patch pairs, Eq. 5–7) starts at ln 2 ≈ 0.693
    (no ranking ability); falling below it means the loss predictor learnt which patches are hard.
    """
    steps, epochs = _read_log(Path(run_dir))
    out: Dict[str, Any] = {}
    for key in ("alpha", "loss", "loss_rec", "loss_pred"):
        series = steps.get(key) or {}
        if series:
            xs = sorted(series)
            out[key] = {"first": series[xs[0]], "last": series[xs[-1]], "first_step": xs[0], "last_step": xs[-1]}
    out["steps"] = max((max(s) for s in steps.values() if s), default=0)
    out["epochs"] = len(next(iter(epochs.values()), {}))
    return out


def _figures_stage(runner: StageRunner, out: Path, opts: DemoOptions, runs: Dict[str, Path],
                   vis_inputs: Dict[str, List[str]], pre_cfgs: Dict[str, Path], pre_overrides: Dict[str, List[str]],
                   progress: float) -> Dict[str, Any]:
    """Training curves of every run and the Fig. 2-style maps; returns `{"curves": {...}, "fig2": {...}}`."""
    fig_dir = out / "figures"
    key = {"runs": {k: str(v) for k, v in runs.items()}, "inputs": vis_inputs, "progress": progress,
           "mtimes": {k: (v / "model_final.pth").stat().st_mtime for k, v in runs.items()}}
    index_path = fig_dir / "figures.json"

    def draw() -> None:
        from videohpm.config import load_config
        from videohpm.tasks.visualize import run_visualize
        from videohpm.evaluation.visualize import plot_training_curves

        index: Dict[str, Any] = {"curves": {}, "fig2": {}}
        for run, run_dir in runs.items():
            png = fig_dir / f"curves_{run}.png"
            plot_training_curves(str(run_dir / "log.jsonl"), str(png))
            index["curves"][run] = png.name
            print(f"    curves: {png}", flush=True)
        for kind, inputs in vis_inputs.items():
            cfg = load_config(str(pre_cfgs[kind]), ["model.pretrained=null", *pre_overrides[kind]])
            for path in inputs:
                files = run_visualize(cfg, str(runs[f"{kind}_pretrain"]), path, str(fig_dir / "fig2"),
                                      progress=progress, seed=opts.seed, num_loss_masks=10)
                index["fig2"].setdefault(kind, []).append({k: os.path.relpath(v, fig_dir) for k, v in files.items()}
                                                          | {"input": os.path.basename(path)})
                print(f"    Fig. 2 maps: {files['png']}", flush=True)
        index_path.write_text(json.dumps(index, indent=1))

    runner.stage("figures", "training curves and Fig. 2-style maps (input / loss / predicted loss / mask)",
                 fig_dir, key, draw)
    return json.loads(index_path.read_text())


def _pick_vis_videos(meta: Dict[str, Any], n: int) -> List[str]:
    """`n` validation videos of different classes (first video of classes spread over the 8)."""
    root = Path(meta["video_dirs"]["ssv2"])
    first: Dict[int, str] = {}
    for line in open(meta["lists"]["ssv2"]["val"]):
        parts = line.split()
        if len(parts) >= 2:
            first.setdefault(int(parts[1]), parts[0])
    labels = sorted(first)
    if not labels:
        raise DemoError(f"{meta['lists']['ssv2']['val']}: no validation videos")
    chosen = [labels[round(i * (len(labels) - 1) / max(n - 1, 1))] for i in range(min(n, len(labels)))]
    return [str(root / first[c]) for c in dict.fromkeys(chosen)]


def _pick_vis_images(meta: Dict[str, Any], n: int) -> List[str]:
    root = Path(meta["image_dirs"]["val"])
    out = []
    for d in sorted(root.iterdir(), key=lambda p: p.name)[: max(n, 1)]:
        files = sorted(d.glob("*.png"))
        if files:
            out.append(str(files[0]))
    return out


def _run_config(run_dir: Path):
    """The resolved config a training run saved (`<run>/config.yaml`): what actually ran."""
    from omegaconf import OmegaConf

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise DemoError(f"{path} is missing: the training run did not start")
    return OmegaConf.load(path)


def _model_line(cfg) -> str:
    kwargs = cfg.model.kwargs
    frames = int(kwargs.get("num_frames", 16))
    size = int(kwargs.get("img_size", 224))
    tubelet = int(kwargs.get("tubelet_size", 2 if frames > 1 else 1))
    patch = int(kwargs.get("patch_size", 16))
    return (f"ViT {int(kwargs.get('depth'))}×{int(kwargs.get('embed_dim'))}-d, {frames}×{size}² input, "
            f"{tubelet}×{patch}×{patch} patches ({(frames // tubelet) * (size // patch) ** 2} tokens)")

def run_demo(opts: DemoOptions) -> Dict[str, Any]:
    """Run the demo end to end (see the module docstring); returns `summary.json`'s content."""
    t_start = time.time()
    out = Path(opts.out_dir).resolve()
    prepare_out(out, opts.overwrite)
    kinds = ["video"] + (["image"] if opts.images else [])
    runner = StageRunner(out, opts, total=1 + 3 * len(kinds) + 3 + 12)  # 12: the label-scarce chains
    machine = machine_summary()
    print(f"videohpm demo → {out}  ({'smoke' if opts.smoke else 'full'}; {opts.ranks} training rank(s); "
          f"{os.cpu_count()} CPU cores; {format_machine(machine)})", flush=True)
    meta = data_stage(runner, out, opts)

    results: Dict[str, Any] = {}
    runs: Dict[str, Path] = {}
    pre_cfgs: Dict[str, Path] = {}
    pre_over: Dict[str, List[str]] = {}
    for kind in kinds:
        data = data_overrides(meta, kind)
        pre_cfgs[kind], pre_over[kind] = opts.config(f"pretrain_{kind}_hpm"), data
        results[kind] = _run_kind(runner, out, opts, kind, pre_cfgs[kind], data)
        runs[f"{kind}_pretrain"], runs[f"{kind}_finetune"] = out / kind / "pretrain", out / kind / "finetune"
    label_scarce = _label_scarce_stage(runner, out, opts, meta, pre_cfgs["video"], runs["video_pretrain"])
    figures = _figures_stage(runner, out, opts, runs, _vis_inputs(meta, opts), pre_cfgs, pre_over, progress=1.0)
    predict = _predict_stage(runner, out, meta, runs["video_finetune"] / "model_final.pth")

    ablation_md = out / "ablation" / "ABLATION.md"  # written by tools/ablation.py, if it has run
    summary = {"results": results, "label_scarce": label_scarce, "figures": figures, "stages": runner.timings,
               "smoke": opts.smoke,
               "ablation": ablation_md.read_text() if ablation_md.is_file() else None, "predict": predict,
               "ranks": opts.ranks, "cpu_count": os.cpu_count(), "seed": opts.seed, "machine": machine,
               "total_seconds": round(time.time() - t_start, 1), "out_dir": str(out)}
    _write_demo_report(runner, out, summary)
    return summary


def _run_kind(runner: StageRunner, out: Path, opts: DemoOptions, kind: str, pre_cfg: Path,
              data: List[str]) -> Dict[str, Any]:
    """HPM pre-training, fine-tuning and the multi-view test of one mode (`video` / `image`) into
    `<out>/<kind>/{pretrain,finetune,test}`; returns its row of the report."""
    seed = [f"train.seed={opts.seed}"]
    ft_cfg = opts.config(f"finetune_{kind}")
    pre_dir, ft_dir, test_dir = out / kind / "pretrain", out / kind / "finetune", out / kind / "test"
    pre_ckpt = train_stage(runner, f"{kind} pre-training",
                            f"HPM pre-training of the {kind} model (tools/train.py)", pre_cfg, pre_dir,
                            [*data, *seed, *epochs_override(opts, f"{kind}_pretrain")], opts.ranks)
    ft_ckpt = train_stage(runner, f"{kind} fine-tuning", f"fine-tuning the pre-trained {kind} encoder",
                           ft_cfg, ft_dir, [*data, *seed, f"model.pretrained={pre_ckpt}",
                                            *epochs_override(opts, f"{kind}_finetune")], opts.ranks)
    metrics = test_stage(runner, f"{kind} test", ft_cfg, ft_ckpt, test_dir, data)
    return _kind_result(kind, metrics, pre_dir, ft_dir)


def _label_scarce_stage(runner: StageRunner, out: Path, opts: DemoOptions, meta: Dict[str, Any], pre_cfg: Path,
                        pre_dir: Path) -> Dict[str, Any]:
    """What pre-training gave when labels are scarce (docs/EVIDENCE.md's best protocol): the frozen
    time probe on 5 labelled videos per class (λ chosen on 8 more per class of the training list)
    and LP-FT from it (`configs/demo/few_labels_video.yaml`: the epoch chosen on the same 8, step 0
    = the probe included), both scored once on the test list, for the HPM-pre-trained video encoder
    and for no pre-training (the same encoder's random initialisation, same seed). The smoke
    variant has 1 training video per class: 1 labelled, λ and epoch chosen on the test list itself."""
    lists = meta["lists"]["ssv2"]
    per_class, val_per_class = (1, 0) if opts.smoke else LABEL_SCARCE
    # one rank and short stages: run in this process (no interpreter start for each of its 10 tool
    # runs), with the runner's thread count
    import torch

    here = copy.copy(runner)  # shares the timings
    here.opts = dataclasses.replace(runner.opts, in_process=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(runner.thread_count(1))
    try:
        return demo_label_scarce_probe(here, out / "video" / "label_scarce", pre_cfg, pre_dir / "model_final.pth",
                                       lists["train"], lists["test"], meta["video_dirs"]["ssv2"], VIDEO_CLASSES,
                                       seed=opts.seed, per_class=per_class, val_per_class=val_per_class,
                                       prefix="video label-scarce", lpft_cfg=opts.config("few_labels_video"))
    finally:
        torch.set_num_threads(threads)
        runner.count = here.count


def _kind_result(kind: str, metrics: Dict[str, Any], pre_dir: Path, ft_dir: Path) -> Dict[str, Any]:
    """One mode's row: the test's `metrics.json`, the best validation top-1 of the fine-tuning,
    what the runs' saved configs say (epochs, model, mask) and HPM's progress."""
    _, ft_epochs = _read_log(ft_dir)
    pre_config, ft_config = _run_config(pre_dir), _run_config(ft_dir)
    cost = metrics.get("cost", {})
    return {
        "top1": float(metrics["top1"]), "top5": float(metrics["top5"]),
        "mean_class_acc": float(metrics["mean_class_acc"]), "num_videos": int(metrics["num_videos"]),
        "num_broken": int(metrics.get("num_broken", 0)),
        "clips": int(cost.get("clips", 0)), "crops": int(cost.get("crops", 0)),
        "gflops": float(cost.get("gflops_per_view", float("nan"))),
        "params_m": float(cost.get("params_m", float("nan"))),
        "chance": CHANCE[kind], "num_classes": VIDEO_CLASSES if kind == "video" else IMAGE_CLASSES,
        "best_val_acc1": max((ft_epochs.get("val_acc1") or {0: float("nan")}).values()),
        "pretrain_epochs": int(pre_config.train.epochs), "finetune_epochs": int(ft_config.train.epochs),
        "model": _model_line(pre_config), "mask": f"{pre_config.mask.name} {dict(pre_config.mask.kwargs)}",
        "hpm": hpm_progress_summary(pre_dir),
    }


def _vis_inputs(meta: Dict[str, Any], opts: DemoOptions) -> Dict[str, List[str]]:
    """The validation videos (and images, half as many) drawn in the Fig. 2-style figure."""
    vis = {"video": _pick_vis_videos(meta, opts.num_vis)}
    if opts.images:
        vis["image"] = _pick_vis_images(meta, max(1, opts.num_vis // 2))
    return vis


def _write_demo_report(runner: StageRunner, out: Path, summary: Dict[str, Any]) -> None:
    """The last stage: `<out>/summary.json` and `<out>/REPORT.md`, and the accuracy table printed."""
    runner.announce("report", "REPORT.md and summary.json")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "REPORT.md").write_text(format_report(summary))
    probe = summary.get("label_scarce")
    if probe:
        for name, gain in label_scarce_gains(probe).items():
            print(f"\nlabel-scarce {name} ({probe['per_class']} labelled videos per class, chance "
                  f"{probe['chance']:.1f} %): HPM pre-training {gain['pretrained']:.1f} %, no pre-training "
                  f"{gain['scratch']:.1f} %, gain {gain['gain']:+.1f} ± {gain['stderr']:.1f} points", flush=True)
    print(f"\n{format_results_table(summary['results'])}\n\nreport: {out / 'REPORT.md'}  "
          f"(total {summary['total_seconds']:.0f} s)", flush=True)

