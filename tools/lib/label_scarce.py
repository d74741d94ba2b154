"""Label-scarce protocols: a few labelled videos per class, the frozen time probe, and LP-FT.

- :func:`few_label_list`: the first videos of every class of a list file (deterministic, balanced);
- :func:`extract_time_features`: a stage of `tools/extract_features.py --pool time` (`[T', D]`
  per video, temporal order kept);
- :func:`run_lpft`: LP-FT as one chain of :class:`~tools.lib.stages.StageRunner` stages — the
  frozen features of the labelled, validation (and test) lists with the fine-tuning config's own
  model and clip pipeline; the time-keeping linear probe (:mod:`videohpm.evaluation.probe`: λ chosen
  on validation) written as a probe head; fine-tuning (`tools/train.py`) of encoder and head with
  the head started from that file (`method.kwargs.probe_head`), a low lr with layer decay and
  `train.keep_best` (the probe-initialised model, step 0, and every epoch are validated and the
  best is kept: on validation the result is never below the probe); with a test list, both scored
  once on it (one centre clip and crop, as the probe's features);
- :func:`demo_label_scarce_probe`: the data-efficiency benchmark's probe (and LP-FT) inside
  `make demo`, for a pre-trained encoder and for no pre-training.

Used by `tools/few_labels.py`, `make demo` and the data-efficiency benchmark.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tools.lib.stages import DemoError, StageRunner, resolved_digest, write_atomic

__all__ = ["read_lines", "few_label_list", "extract_time_features", "read_selection", "run_lpft",
           "demo_label_scarce_probe"]


def read_lines(path: str | Path) -> List[str]:
    """The non-empty lines of a list file."""
    return [ln for ln in Path(path).read_text().splitlines() if ln.strip()]


def few_label_list(train_list: str | Path, per_class: int, dest: Path, fill_to: int = 0,
                   skip_per_class: int = 0) -> Dict[str, Any]:
    """The first `per_class` lines of every class of a `path [num_frames] label` list (after the
    first `skip_per_class` of that class), written to `dest` in list order, each repeated
    ``max(1, ceil(fill_to / kept))`` times (so that an epoch of a tiny labelled set is not shorter
    than a batch). Returns ``{"path", "videos", "lines", "repeat", "classes"}``. Raises
    :class:`DemoError` if a class has fewer lines than that."""
    lines = read_lines(train_list)
    seen: Dict[str, int] = {}
    taken: Dict[str, int] = {}
    kept = []
    for ln in lines:
        label = ln.split()[-1]
        seen[label] = seen.get(label, 0) + 1
        taken.setdefault(label, 0)
        if seen[label] > skip_per_class and taken[label] < per_class:
            taken[label] += 1
            kept.append(ln)
    short = sorted((k for k, n in taken.items() if n < per_class), key=lambda s: int(s) if s.isdigit() else s)
    if short:
        raise DemoError(f"{train_list}: class(es) {short} have fewer than {skip_per_class + per_class} labelled videos")
    repeat = max(1, math.ceil(fill_to / len(kept))) if fill_to else 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, "\n".join(ln for ln in kept for _ in range(repeat)) + "\n")
    return {"path": str(dest), "videos": len(kept), "lines": len(kept) * repeat, "repeat": repeat,
            "classes": len(taken)}



def extract_time_features(runner: StageRunner, name: str, cfg: Path, ckpt: Optional[Path], seed: int,
                          list_path: str, folder: Path, data: Sequence[str]) -> str:
    """Stage `name`: `tools/extract_features.py --pool time` of `list_path` into `folder` with the
    encoder of `ckpt` (None: the random initialisation of `cfg`'s encoder for `train.seed=seed`);
    `data`: more overrides (``data.data_root=…`` etc.). Returns the folder."""
    weights = [f"checkpoint={ckpt}"] if ckpt is not None else ["--random-init", f"train.seed={seed}"]
    args = ["--config", str(cfg), *weights, "--pool", "time", list_path, "--output-dir", str(folder), *data]
    stamp = [ckpt.stat().st_mtime, ckpt.stat().st_size] if ckpt is not None else None
    key = {"args": args, "checkpoint": stamp,
           "config": resolved_digest(cfg, [a for a in args if "=" in a and not a.startswith("checkpoint=")])}

    def run() -> None:
        if any(p.name != ".stage.json" for p in folder.iterdir()):  # an interrupted extraction: again
            state = (folder / ".stage.json").read_text()
            shutil.rmtree(folder)
            folder.mkdir(parents=True)
            (folder / ".stage.json").write_text(state)
        runner.tool(name, "extract_features", args)

    runner.stage(name, f"frozen features per time slice of {Path(list_path).name}", folder, key, run)
    return str(folder)




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
              lists: Dict[str, str], out: Path, overrides: Sequence[str],
              shared: Optional[Path] = None) -> Dict[str, str]:
    # the model and data of the fine-tuning (the weights come from `ckpt`, the seed from `seed`);
    # `shared`: the folder of the val / test features, the same for every labelled set of one encoder
    keep = [o for o in overrides if o.startswith(("data.", "model.")) and not o.startswith("model.pretrained")]
    return {split: extract_time_features(runner, f"{name} features {split}", cfg, ckpt, seed, path,
                                         (shared if shared is not None and split != "train" else out / "features")
                                         / split, keep)
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
             num_classes: int, overrides: Sequence[str] = (), seed: int = 0,
             shared_features: Optional[Path] = None) -> Dict[str, Any]:
    """The chain of the module docstring into `out`; `lists`: ``{"train", "val"[, "test"]}``
    list files (and optionally ``"probe_train"``: the labelled videos once each, for the probe's
    features, when ``"train"`` repeats them to fill an epoch), `ckpt`: the pre-trained checkpoint
    (None: the seeded random initialisation of `cfg`'s model), `overrides`: more config overrides
    (``data.data_root=…``), `shared_features`: where the val / test features go when several
    labelled sets of one encoder share them (default: under `out`). Returns
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
    probe_lists = {"train": lists.get("probe_train") or lists["train"],
                   **{k: v for k, v in lists.items() if k in ("val", "test")}}
    folders = _features(runner, name, cfg, ckpt, seed, probe_lists, out, [*overrides, *n], shared_features)
    probe = _probe_stage(runner, name, folders, out, num_classes)
    run_dir = out / "finetune"
    args = ["--config", str(cfg), f"data.train={lists['train']}", f"data.val={lists['val']}", *overrides, *n,
            f"model.pretrained={ckpt if ckpt is not None else 'null'}", f"train.seed={seed}",
            f"method.kwargs.probe_head={probe['head_path']}", "train.keep_best=true", f"train.output_dir={run_dir}"]
    key = {"args": args, "config": resolved_digest(cfg, args[2:]),
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


def demo_label_scarce_probe(runner: StageRunner, out: Path, pretrain_cfg: Path, ckpt: Path, train_list: str,
                            eval_list: str, data_root: str, num_classes: int, seed: int = 0, per_class: int = 5,
                            val_per_class: int = 8, prefix: str = "label-scarce",
                            lpft_cfg: Optional[Path] = None) -> Dict[str, Any]:
    """The benchmark's label-scarce probe inside `make demo`: the frozen time probe on
    `per_class` labelled videos per class (the first of each class in `train_list`), its λ chosen
    on the next `val_per_class` of each class (``0``: on `eval_list` itself — only for the smoke
    variant, whose data has one training video per class), scored once on `eval_list` — for the
    pre-trained encoder (`ckpt`) and for no pre-training (the random initialisation of the same
    encoder for `train.seed=seed`). The probe is the same for both rows: only the encoder differs.
    Stages are named ``"<prefix> <row> features <split>"``. Returns ``{"per_class",
    "val_per_class", "n_eval", "chance", "rows": {"pretrained" | "scratch": probe}}``
    (probe: :func:`videohpm.evaluation.probe.probe_feature_folders`). With `lpft_cfg` (an LP-FT
    config, :func:`run_lpft`) the features are that classifier's, each row is also
    fine-tuned from its own probe (the epoch chosen on the same held-out videos as λ) and scored
    on `eval_list`: ``"lpft": {row: fine-tuning result}`` is added."""
    from videohpm.evaluation.probe import probe_feature_folders

    few = few_label_list(train_list, per_class, out / "labelled.csv")
    splits = [("labelled", few["path"])]
    if val_per_class > 0:
        held = few_label_list(train_list, val_per_class, out / "probe_val.csv", skip_per_class=per_class)
        splits.append(("probe_val", held["path"]))
    splits.append(("eval", eval_list))
    data = [f"data.data_root={data_root}", f"data.num_classes={num_classes}"]
    if lpft_cfg is not None:
        lists = {"train": few["path"], "val": dict(splits).get("probe_val", eval_list), "test": eval_list}
        done = {row: run_lpft(runner, f"{prefix} {row}", lpft_cfg, weights, lists, out / row, num_classes, data[:1],
                              seed=seed)
                for row, weights in (("pretrained", ckpt), ("scratch", None))}
        return {"per_class": per_class, "val_per_class": val_per_class, "n_eval": done["scratch"]["probe"]["n_test"],
                "chance": 100.0 / num_classes, "rows": {r: d["probe"] for r, d in done.items()},
                "lpft": {r: d["finetune"] for r, d in done.items()}}
    rows = {}
    for row, weights in (("pretrained", ckpt), ("scratch", None)):
        folder = {split: extract_time_features(runner, f"{prefix} {row} features {split}", pretrain_cfg, weights,
                                               seed, path, out / row / split, data)
                  for split, path in splits}
        rows[row] = probe_feature_folders(folder["labelled"], folder.get("probe_val", folder["eval"]),
                                          folder["eval"], num_classes=num_classes)
    return {"per_class": per_class, "val_per_class": val_per_class, "n_eval": rows["scratch"]["n_test"],
            "chance": 100.0 / num_classes, "rows": rows}
