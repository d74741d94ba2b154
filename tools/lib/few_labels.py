"""LP-FT on a few labelled videos: the linear probe first, then fine-tuning that starts from it.

One chain of :class:`~tools.lib.demo.StageRunner` stages (re-running skips finished ones):

1. frozen features per time slice (`tools/extract_features.py --pool time`) of the labelled,
   validation (and test) lists, with the fine-tuning config's own model and clip pipeline;
2. the time-keeping linear probe (:mod:`videohpm.evaluation.probe`: λ chosen on validation),
   written as a probe head file (`probe/probe_head.safetensors`);
3. fine-tuning (`tools/train.py`) of encoder and head with the head started from that file
   (`method.kwargs.probe_head`), a low lr with layer decay, no label smoothing or mixup, and
   `train.keep_best`: the probe-initialised model (step 0) and every epoch are validated and the
   best is kept — on validation the result is never below the probe;
4. with a test list, both scored once on it (one centre clip and crop, as the probe's features).

Used by `tools/few_labels.py` (one command on your own class folders) and by `make demo`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tools.lib.demo import DemoError, StageRunner, _resolved_digest
from tools.lib.ssl_benchmark import extract_time_features

__all__ = ["run_lpft", "read_selection"]


def read_selection(run_dir: Path) -> Dict[str, Any]:
    """What `train.keep_best` chose, from the run's `log.jsonl`: ``{"start_val_top1",
    "kept_val_top1", "kept_epoch", "kept_step", "val_top1_by_epoch"}``."""
    out: Dict[str, Any] = {"val_top1_by_epoch": {}}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "start_eval":
            out["val_top1_by_epoch"][0] = float(rec["val_acc1"])
        elif rec.get("type") == "final_weights":
            out.update(start_val_top1=rec.get("start_val_acc1"), kept_val_top1=float(rec["kept_val_acc1"]),
                       kept_epoch=int(rec["kept_epoch"]), kept_step=int(rec["kept_step"]))
        elif rec.get("type") == "epoch" and "val_acc1" in rec:
            out["val_top1_by_epoch"][int(rec["epoch"]) + 1] = float(rec["val_acc1"])
    if "kept_val_top1" not in out:
        raise DemoError(f"{run_dir}/log.jsonl: no final_weights record (was train.keep_best on?)")
    return out


def _features(runner: StageRunner, name: str, cfg: Path, ckpt: Optional[Path], seed: int,
              lists: Dict[str, str], out: Path, overrides: Sequence[str]) -> Dict[str, str]:
    # the model and data of the fine-tuning (the weights come from `ckpt`, the seed from `seed`)
    keep = [o for o in overrides if o.startswith(("data.", "model.")) and not o.startswith("model.pretrained")]
    return {split: extract_time_features(runner, f"{name} features {split}", cfg, ckpt, seed, path,
                                         out / "features" / split, keep)
            for split, path in lists.items()}


def _probe_stage(runner: StageRunner, name: str, folders: Dict[str, str], out: Path, num_classes: int) -> Dict[str, Any]:
    from videohpm.evaluation.probe import probe_feature_folders

    probe_dir = out / "probe"
    key = {"folders": folders, "num_classes": num_classes,
           "mtimes": {k: (Path(v) / "index.csv").stat().st_mtime for k, v in folders.items()}}

    def fit() -> None:
        r = probe_feature_folders(folders["train"], folders["val"], folders.get("test"), num_classes=num_classes,
                                  head_path=str(probe_dir / "probe_head.safetensors"))
        (probe_dir / "probe.json").write_text(json.dumps(r, indent=1))

    runner.stage(f"{name} probe", "linear probe on the frozen time features (λ on validation) → probe head",
                 probe_dir, key, fit)
    return json.loads((probe_dir / "probe.json").read_text())


def run_lpft(runner: StageRunner, name: str, cfg: Path, ckpt: Optional[Path], lists: Dict[str, str], out: Path,
             num_classes: int, overrides: Sequence[str] = (), seed: int = 0) -> Dict[str, Any]:
    """The chain of the module docstring into `out`; `lists`: ``{"train", "val"[, "test"]}``
    list files, `ckpt`: the pre-trained checkpoint (None: the seeded random initialisation of
    `cfg`'s model), `overrides`: more config overrides (``data.data_root=…``). Returns
    ``{"probe": probe result, "finetune": {selection (:func:`read_selection`), "test_top1",
    "n_test", "test_stderr"}}``."""
    from videohpm.evaluation.probe import binomial_stderr

    missing = [k for k in ("train", "val") if not lists.get(k)]
    if missing:
        raise DemoError(f"LP-FT needs a {' and a '.join(missing)} list")
    for split, path in lists.items():
        if not Path(path).is_file():
            raise DemoError(f"LP-FT: {split} list {path} not found")
    n = [f"data.num_classes={num_classes}", f"model.kwargs.num_classes={num_classes}"]
    folders = _features(runner, name, cfg, ckpt, seed, lists, out, [*overrides, *n])
    probe = _probe_stage(runner, name, folders, out, num_classes)
    run_dir = out / "finetune"
    args = ["--config", str(cfg), f"data.train={lists['train']}", f"data.val={lists['val']}", *overrides, *n,
            f"model.pretrained={ckpt if ckpt is not None else 'null'}", f"train.seed={seed}",
            f"method.kwargs.probe_head={probe['head_path']}", "train.keep_best=true", f"train.output_dir={run_dir}"]
    key = {"args": args, "config": _resolved_digest(cfg, args[2:]),
           "inputs": [Path(p).stat().st_mtime for p in (probe["head_path"], *([ckpt] if ckpt else []))]}
    runner.stage(f"{name} fine-tuning", "LP-FT: fine-tuning from the probe head, the best validation kept", run_dir,
                 key, lambda: runner.tool(f"{name} fine-tuning", "train", [*args, "train.resume=auto"]))
    ft: Dict[str, Any] = read_selection(run_dir)
    if lists.get("test"):
        ft.update(_test_stage(runner, name, cfg, run_dir / "model_final.pth", lists["test"], out, [*overrides, *n]))
        ft["test_stderr"] = binomial_stderr(ft["test_top1"], ft["n_test"])
    return {"probe": probe, "finetune": ft}


def _test_stage(runner: StageRunner, name: str, cfg: Path, final: Path, test_list: str, out: Path,
                overrides: Sequence[str]) -> Dict[str, Any]:
    """`tools/test.py` with one centre clip and crop (the probe's view) on the test list."""
    test_dir = out / "test"
    args: List[str] = ["--config", str(cfg), f"checkpoint={final}", "--output-dir", str(test_dir),
                       f"data.test={test_list}", *overrides, "data.test_num_clips=1", "data.test_num_crops=1"]
    key = {"args": args, "checkpoint": [final.stat().st_mtime, final.stat().st_size]}
    runner.stage(f"{name} test", "the kept model on the test list (1 clip × 1 crop)", test_dir, key,
                 lambda: runner.tool(f"{name} test", "test", args))
    m = json.loads((test_dir / "metrics.json").read_text())
    return {"test_top1": float(m["top1"]), "n_test": int(m["num_videos"])}
