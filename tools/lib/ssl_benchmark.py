"""`make benchmark-ssl`: what pre-training buys when labels are scarce (the data-efficiency benchmark).

Every row of HPM journal Table 12 (no pre-training; MAE with tube masks; MAE with per-frame random
masks; HPM's L_pred with random masks; HPM learn-to-mask, easy-to-hard — plus, beyond the paper,
HPM with the cheap `lowres:2` teacher at the same steps and at the full teacher's wall time, and
AdaMAE's learned token sampler) is pre-trained with the **same budget in optimizer steps** (the
equal-wall-time row excepted) on an **unlabelled pool** much larger than the labelled set, then
evaluated for several seeds with two label-scarce protocols on 5 / 25 labelled videos per
class: the **probe** (:mod:`videohpm.evaluation.probe` on the frozen encoder's time-sliced
features, :func:`~tools.lib.label_scarce.extract_time_features`) and **LP-FT fine-tuning**
(:func:`~tools.lib.label_scarce.run_lpft`, `configs/demo/ssl/lpft.yaml`: the head from the probe,
the best validated epoch kept; the same optimizer steps for every row and label count),
then `tools/test.py` (one centre clip and crop). Settings are chosen with ``eval_split="val"``, the
result reported once with ``eval_split="test"``. Data: the bundled motion set or any list-file set.

Runs are independent chains (one per seed and row), `jobs` at a time, each in its own process with
one thread, every stage a :class:`~tools.lib.stages.StageRunner` stage. Writes `<out>/results.json`
and `<out>/RESULTS.md` (mean ± sample std over seeds, per-seed values, the chance level, the gap of
the best pre-trained row over no pre-training, and the wall time of each part).
"""
from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tools.lib.label_scarce import extract_time_features, few_label_list, read_lines, run_lpft
from tools.lib.machine import machine_summary
from tools.lib.stages import REPO, DemoError, RunOptions, StageRunner, exit_with_parent, resolved_digest, write_atomic

__all__ = ["SSLRow", "SSL_ROWS", "SSLOptions", "run_ssl_benchmark", "summarize", "format_results",
           "gap_report", "target_points", "fidelity_report", "pretrain_seconds_per_step", "pretrain_step_seconds"]


CONFIG_DIR = REPO / "configs" / "demo" / "ssl"
MARKER = ".videohpm-ssl-benchmark"
PROTOCOLS = ("probe", "finetune")


@dataclass(frozen=True)
class SSLRow:
    """One row: `pretrain` = config name under `configs/demo/ssl/` (None = no pre-training),
    `overrides` added to it."""

    name: str
    label: str
    pretrain: Optional[str]
    overrides: Tuple[str, ...] = ()
    paper: bool = True  # a row of HPM journal Table 12 (False: beyond the paper)
    #: pre-training steps relative to the benchmark's budget, rounded to the nearest whole epoch of
    #: the pool (1.0: the same budget in steps as every other row)
    step_scale: float = 1.0


#: Wall time of one pre-training step of `configs/demo/ssl/pretrain_hpm.yaml` with the full teacher
#: over the same with ``teacher_mode=lowres:2`` (1 thread; measured, see docs/EVIDENCE.md "Cheap
#: teachers"): the equal-wall-time row gets this many times the steps.
LOWRES2_STEP_SPEEDUP = 1.21

SSL_ROWS: Tuple[SSLRow, ...] = (
    SSLRow("scratch", "no pre-training", None),
    SSLRow("mae_tube", "MAE, tube masking", "pretrain_mae_tube"),
    SSLRow("mae_frame", "MAE, per-frame random masking", "pretrain_mae_frame"),
    SSLRow("hpm_pred_random", "HPM: L_pred with random masks", "pretrain_hpm_pred_random"),
    SSLRow("hpm", "HPM: learn to mask (easy-to-hard)", "pretrain_hpm"),
    SSLRow("hpm_lowres2", "HPM, teacher_mode lowres:2", "pretrain_hpm",
           ("method.kwargs.teacher_mode=lowres:2",), paper=False),
    # the same at the full teacher's wall time: LOWRES2_STEP_SPEEDUP × the steps
    SSLRow("hpm_lowres2_eqtime", "HPM, teacher_mode lowres:2, at the full teacher's wall time",
           "pretrain_hpm", ("method.kwargs.teacher_mode=lowres:2",), paper=False, step_scale=LOWRES2_STEP_SPEEDUP),
    # HPM's closest peer: the mask learned from the reconstruction error by a token sampler
    SSLRow("adamae", "AdaMAE: learned token sampler", "pretrain_adamae", paper=False),
)


@dataclass
class SSLOptions:
    """What to run and where.

    Attributes:
        out_dir: output folder (one run of the benchmark; protected by a marker file).
        seeds: training seeds (every row runs every seed).
        rows: names of :data:`SSL_ROWS` to run (None: the five rows of HPM journal Table 12).
        labels_per_class: labelled videos per class of each label-scarce protocol.
        eval_split: ``"val"`` while choosing settings, ``"test"`` for the one report.
        pool_per_class, train_per_class, val_per_class, test_per_class: sizes of the generated set.
        pretrain_steps: optimizer steps of every pre-training (rounded up to whole epochs of the pool).
        finetune_steps: optimizer steps of every fine-tuning (every row and label count).
        jobs: chains run at a time (one process and one thread each).
        data: config overrides naming a list-file data set (``data.train=…`` etc.; empty: the
            generated motion set); ``pool``: the unlabelled list (default ``data.train``).
        smoke: test-sized (tiny set, a few steps).
        in_process: run each chain's tools in the chain's process (default) — no interpreter start
            per stage; False runs every tool as a subprocess.
        overwrite: delete a previous benchmark folder first (only one this code wrote).
        extra: overrides added to every pre-training and fine-tuning (e.g. ``train.batch_size=8``).
        merge: `results.json` files of other runs with the same settings; their rows that this run
            does not have join the summary and the table (e.g. a new row next to a finished run).
    """

    out_dir: str = "outputs/ssl_benchmark"
    seeds: Sequence[int] = (0, 1, 2)
    rows: Optional[Sequence[str]] = None
    labels_per_class: Sequence[int] = (5, 25)
    eval_split: str = "test"
    pool_per_class: int = 384
    train_per_class: int = 25
    val_per_class: int = 24
    test_per_class: int = 64
    pretrain_steps: int = 3072
    finetune_steps: int = 192
    jobs: int = 2
    data: Sequence[str] = ()
    pool: Optional[str] = None
    smoke: bool = False
    in_process: bool = True
    overwrite: bool = False
    extra: Sequence[str] = ()
    data_seed: int = 0
    merge: Sequence[str] = ()

    def chosen_rows(self) -> List[SSLRow]:
        names = [r.name for r in SSL_ROWS]
        unknown = sorted(set(self.rows or ()) - set(names))
        if unknown:
            raise DemoError(f"unknown row(s) {unknown}; choose from {names}")
        return [r for r in SSL_ROWS if (r.paper if self.rows is None else r.name in self.rows)]


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _label_counts(path: str) -> Dict[int, int]:
    counts: Dict[int, int] = {}
    for ln in read_lines(path):
        label = ln.split()[-1]
        if not label.lstrip("-").isdigit():
            raise DemoError(f"{path}: line {ln!r} has no integer label")
        counts[int(label)] = counts.get(int(label), 0) + 1
    return counts


def _generated_data(opts: SSLOptions, out: Path) -> Dict[str, str]:
    from videohpm.data.demo import make_motion_splits

    if opts.smoke:
        sizes = {"pool": 4, "train": max(opts.labels_per_class), "val": 2, "test": 2}
    else:
        sizes = {"pool": opts.pool_per_class, "train": opts.train_per_class, "val": opts.val_per_class,
                 "test": opts.test_per_class}
    t0 = time.time()
    info = make_motion_splits(out / "data", sizes, seed=opts.data_seed)
    print(f"    motion set: {info.counts} videos in {time.time() - t0:.0f} s → {info.root}", flush=True)
    return {"train": info.lists["train"], "val": info.lists["val"], "test": info.lists["test"],
            "pool": info.lists["pool"], "data_root": info.data_root, "num_classes": str(len(info.classes))}


def _user_data(opts: SSLOptions) -> Dict[str, str]:
    keys = {}
    for o in opts.data:
        k, sep, v = o.partition("=")
        if not sep or not k.startswith("data."):
            raise DemoError(f"data override {o!r}: expected data.<key>=<value>")
        keys[k[len("data."):]] = v
    missing = [k for k in ("train", "val", "test", "num_classes") if not keys.get(k)]
    if missing:
        raise DemoError(f"a list-file data set needs data.{', data.'.join(missing)}")
    keys.setdefault("data_root", "")
    keys["pool"] = opts.pool or keys["train"]
    return keys


def _check_data(data: Dict[str, str], opts: SSLOptions) -> Dict[str, Any]:
    """Every list exists, every label is in [0, num_classes), every class has the labelled videos
    the protocols need — checked before anything runs."""
    n = int(data["num_classes"])
    report: Dict[str, Any] = {"num_classes": n}
    for split in ("pool", "train", "val", "test"):
        path = data[split]
        if not Path(path).is_file():
            raise DemoError(f"data.{split}: list file {path} not found")
        counts = _label_counts(path) if split != "pool" else {0: len(read_lines(path))}
        if split != "pool":
            bad = sorted(k for k in counts if not 0 <= k < n)
            if bad:
                raise DemoError(f"data.{split} ({path}): label(s) {bad[:5]} outside [0, {n}) "
                                f"(data.num_classes={n})")
        report[split] = sum(counts.values())
    need = max(opts.labels_per_class)
    counts = _label_counts(data["train"])
    short = sorted(c for c in range(n) if counts.get(c, 0) < need)
    if short:
        raise DemoError(f"data.train ({data['train']}): class(es) {short[:10]} have fewer than {need} labelled "
                        f"videos (labels_per_class={list(opts.labels_per_class)})")
    return report


# ---------------------------------------------------------------------------------------------
# one chain: a (seed, row) pair
# ---------------------------------------------------------------------------------------------
def _steps_to_epochs(steps: float, videos: int, batch: int, nearest: bool = False) -> Tuple[int, int]:
    """Whole epochs for at least `steps` optimizer steps (drop_last batches; ``nearest``: the
    nearest whole number of epochs instead) → (epochs, steps)."""
    per_epoch = videos // batch
    if per_epoch < 1:
        raise DemoError(f"{videos} videos do not fill one batch of {batch}")
    epochs = max(1, round(steps / per_epoch) if nearest else math.ceil(steps / per_epoch))
    return epochs, epochs * per_epoch


def _batch(cfg: Path, extra: Sequence[str]) -> int:
    from videohpm.config import load_config

    return int(load_config(str(cfg), [o for o in extra if o.startswith("train.")]).train.batch_size)


def _smoke_overrides(opts: SSLOptions) -> List[str]:
    # smoke: no loader worker processes (their start dominates a test-sized run)
    return ["train.batch_size=2", "train.log_every=1", "data.num_workers=0"] if opts.smoke else []


@dataclass
class _Chain:
    seed: int
    row: SSLRow
    out: str
    data: Dict[str, str]
    opts: SSLOptions
    few: Dict[int, Dict[str, Any]] = field(default_factory=dict)


def _pretrain_stage(runner: StageRunner, ch: _Chain, base: Path) -> Tuple[Optional[Path], Dict[str, Any]]:
    row, opts = ch.row, ch.opts
    if row.pretrain is None:
        return None, {}
    cfg = CONFIG_DIR / f"{row.pretrain}.yaml"
    extra = [*_smoke_overrides(opts), *opts.extra]
    batch = _batch(cfg, extra)
    epochs, steps = _steps_to_epochs(opts.pretrain_steps * row.step_scale, len(read_lines(ch.data["pool"])), batch,
                                     nearest=row.step_scale != 1.0)
    run_dir = base / "pretrain"
    args = ["--config", str(cfg), f"data.train={ch.data['pool']}", f"data.data_root={ch.data['data_root']}",
            f"data.num_classes={ch.data['num_classes']}", f"train.seed={ch.seed}", f"train.epochs={epochs}",
            f"optim.warmup_epochs={max(epochs * 0.1, 0.0):g}", *row.overrides, *extra,
            f"train.output_dir={run_dir}"]
    key = {"args": args, "config": resolved_digest(cfg, args[2:])}
    name = f"seed {ch.seed} {row.name} pre-training"
    runner.stage(name, f"{row.label}: {steps} steps on {len(read_lines(ch.data['pool']))} unlabelled videos",
                 run_dir, key, lambda: runner.tool(name, "train", [*args, "train.resume=auto"]))
    final = run_dir / "model_final.pth"
    if not final.is_file():
        raise DemoError(f"stage {name!r}: {final} was not written")
    return final, {"steps": steps, "epochs": epochs, "s_per_step": pretrain_step_seconds(run_dir)}

def _feature_stage(runner: StageRunner, ch: _Chain, base: Path, ckpt: Optional[Path]) -> Dict[str, str]:
    cfg = CONFIG_DIR / f"{ch.row.pretrain or 'pretrain_hpm'}.yaml"
    data = [f"data.data_root={ch.data['data_root']}", f"data.num_classes={ch.data['num_classes']}", *ch.row.overrides,
            *(o for o in _smoke_overrides(ch.opts) if o.startswith("data."))]
    return {split: extract_time_features(runner, f"seed {ch.seed} {ch.row.name} features {split}", cfg, ckpt, ch.seed,
                                         ch.data[split], base / "features" / split, data)
            for split in dict.fromkeys(("train", "val", ch.opts.eval_split))}  # unique, in order


def _probe(ch: _Chain, folders: Dict[str, str]) -> Dict[str, Dict[str, Any]]:
    import numpy as np

    from videohpm.evaluation.features import load_features
    from videohpm.evaluation.probe import linear_probe

    def read(split):
        feats, rows = load_features(folders[split])
        return feats, np.asarray([int(r["label"]) for r in rows]), [r["path"] for r in rows]

    xtr, ytr, ptr = read("train")
    xva, yva, _ = read("val")
    xev, yev, _ = read(ch.opts.eval_split)
    index = {os.path.basename(p): i for i, p in enumerate(ptr)}
    out = {}
    for k, few in ch.few.items():
        names = []
        for ln in read_lines(few["path"]):
            name = os.path.basename(ln.split()[0].strip('"'))
            if name not in names:
                names.append(name)
        rows = [index[n] for n in names if n in index]
        if len(rows) != few["videos"]:
            raise DemoError(f"probe: {few['videos'] - len(rows)} labelled video(s) have no features (broken?)")
        r = linear_probe(xtr[rows], ytr[rows], xva, yva, xev, yev, num_classes=int(ch.data["num_classes"]))
        out[str(k)] = r
    return out


def _finetune_stages(runner: StageRunner, ch: _Chain, base: Path, ckpt: Optional[Path]) -> Dict[str, Dict[str, Any]]:
    """LP-FT (:func:`~tools.lib.label_scarce.run_lpft`, `configs/demo/ssl/lpft.yaml`) on every
    label count: the time probe fitted on the labelled videos' frozen features (λ on the val split)
    starts the head, then the whole model is fine-tuned and the best validated epoch (step 0, the
    probe itself, included) is kept and tested once on the evaluation split (1 clip × 1 crop)."""
    opts = ch.opts
    cfg = CONFIG_DIR / "lpft.yaml"
    extra = [*_smoke_overrides(opts), *opts.extra]
    batch = _batch(cfg, extra)
    results = {}
    for k, few in ch.few.items():
        epochs, steps = _steps_to_epochs(opts.finetune_steps, few["lines"], batch)
        lists = {"train": few["path"], "probe_train": few["once"], "val": ch.data["val"],
                 "test": ch.data[opts.eval_split]}
        over = [f"data.data_root={ch.data['data_root']}", f"train.epochs={epochs}", *extra]
        r = run_lpft(runner, f"seed {ch.seed} {ch.row.name} {k}/class", cfg, ckpt, lists, base / f"lpft_{k}pc",
                     int(ch.data["num_classes"]), over, seed=ch.seed, shared_features=base / "lpft_features")
        ft = r["finetune"]
        results[str(k)] = {"top1": ft["test_top1"], "n_test": ft["n_test"], "steps": steps,
                           "probe_top1": r["probe"]["test_top1"], "start_val_top1": ft.get("start_val_top1"),
                           "kept_val_top1": ft["kept_val_top1"], "kept_epoch": ft["kept_epoch"],
                           "val_top1_by_epoch": ft["val_top1_by_epoch"]}
    return results


def _run_chain(ch: _Chain) -> Dict[str, Any]:
    """Pre-training, features + probe, fine-tunings and tests of one (seed, row); in a fresh process
    that ends with the tool's (:func:`exit_with_parent`)."""
    import torch

    exit_with_parent()
    torch.set_num_threads(1)
    base = Path(ch.out) / f"seed{ch.seed}" / ch.row.name
    base.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(base, RunOptions(in_process=ch.opts.in_process, threads=1))
    log = base / "chain.log"
    t0 = time.time()
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        import logging

        for h in logging.getLogger().handlers:  # the tools log to stderr: into this chain's log
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setStream(f)
        ckpt, pre = _pretrain_stage(runner, ch, base)
        folders = _feature_stage(runner, ch, base, ckpt)
        t_probe = time.time()
        probe = _probe(ch, folders)
        probe_s = time.time() - t_probe
        finetune = _finetune_stages(runner, ch, base, ckpt)
    seconds: Dict[str, float] = {"pretrain": 0.0, "features": 0.0, "finetune": 0.0, "test": 0.0}
    for name, t in runner.timings.items():
        part = ("pretrain" if "pre-training" in name else "features" if "features" in name
                else "finetune" if "fine-tuning" in name else "test")
        seconds[part] += float(t["seconds"]) if t["status"] == "ran" else 0.0
    seconds["probe"] = round(probe_s, 1)
    result = {"seed": ch.seed, "row": ch.row.name, "pretrain": pre, "probe": probe, "finetune": finetune,
              "seconds": seconds, "stages": runner.timings, "wall_s": round(time.time() - t0, 1)}
    write_atomic(base / "result.json", json.dumps(result, indent=1))
    return result


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def summarize(results: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{row: {"probe_<k>" | "finetune_<k>": {"mean", "std", "seeds": {seed: top1}}}}``."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for r in results:
        for proto in PROTOCOLS:
            for k, v in r[proto].items():
                top1 = v["test_top1"] if proto == "probe" else v["top1"]
                cell = out.setdefault(r["row"], {}).setdefault(f"{proto}_{k}", {"seeds": {}})
                cell["seeds"][str(r["seed"])] = float(top1)
    for row in out.values():
        for cell in row.values():
            cell["mean"], cell["std"] = _mean_std(list(cell["seeds"].values()))
    return out


def target_points(proto: str) -> float:
    """The gap over no pre-training the benchmark asks of a protocol cell (``"finetune_25"`` …):
    10 points for fine-tuning with 25 or more labelled videos per class, 5 points otherwise."""
    kind, _, k = proto.partition("_")
    return 10.0 if kind == "finetune" and k.isdigit() and int(k) >= 25 else 5.0


def gap_report(summary: Dict[str, Dict[str, Dict[str, Any]]], rows: Sequence[SSLRow]) -> Dict[str, Dict[str, Any]]:
    """Per protocol: the best pre-trained row of the paper's table, its gap over no pre-training,
    the pooled seed std (root mean square of the two rows' stds) and whether the gap meets the
    benchmark's target: at least :func:`target_points` and above twice that std."""
    if "scratch" not in summary:
        return {}
    out = {}
    for proto, base in summary["scratch"].items():
        cands = [(summary[r.name][proto]["mean"], r.name) for r in rows
                 if r.pretrain is not None and r.paper and proto in summary.get(r.name, {})]
        if not cands:
            continue
        best_mean, best = max(cands)
        pooled = math.sqrt((base["std"] ** 2 + summary[best][proto]["std"] ** 2) / 2)
        gap = best_mean - base["mean"]
        need = target_points(proto)
        out[proto] = {"best": best, "gap": gap, "pooled_std": pooled, "target": need,
                      "met": bool(gap >= need and gap > 2 * pooled)}
    return out


def fidelity_report(summary: Dict[str, Dict[str, Dict[str, Any]]], full: str = "hpm",
                    cheap: Sequence[str] = ("hpm_lowres2", "hpm_lowres2_eqtime")) -> Dict[str, Dict[str, Any]]:
    """The cheap teachers' result fidelity: per cheap-teacher row and protocol, its mean minus the full
    teacher's, the pooled seed std of the two rows, and whether it is within the seed noise
    (|difference| ≤ 2 × pooled std, the same threshold the gap report asks a gain to exceed)."""
    if full not in summary:
        return {}
    out: Dict[str, Dict[str, Any]] = {}
    for row in cheap:
        for proto, ref in summary[full].items():
            cell = summary.get(row, {}).get(proto)
            if cell is None:
                continue
            pooled = math.sqrt((ref["std"] ** 2 + cell["std"] ** 2) / 2)
            diff = cell["mean"] - ref["mean"]
            out.setdefault(row, {})[proto] = {"diff": diff, "pooled_std": pooled,
                                              "within_noise": bool(abs(diff) <= 2 * pooled)}
    return out


def _machine_note(doc: Dict[str, Any]) -> str:
    """A sentence when a merged run's machine chose other kernels (same seeds, other float
    rounding: its rows are comparable in distribution, not bit for bit)."""
    here = doc.get("machine") or {}
    key = lambda m: (m.get("aten"), m.get("kernels"))  # noqa: E731
    other = sorted({f"ATen {m.get('aten')}, kernels {m.get('kernels')}" for m in doc.get("merged_machines", {}).values()
                    if m and key(m) != key(here)})
    if not other:
        return ""
    return (f" The ‡ rows ran on another machine ({'; '.join(other)}; this run: ATen {here.get('aten')}, kernels "
            f"{here.get('kernels')}): same seeds and data, other float rounding — comparable in distribution, "
            "not bit for bit.")


def pretrain_seconds_per_step(doc: Dict[str, Any], row: str) -> Optional[float]:
    """Wall seconds of one pre-training optimizer step of `row`: the mean over its seeds of
    ``pretrain.s_per_step`` (:func:`pretrain_step_seconds`), or None where no seed recorded it (no
    pre-training, or a result written before the field existed)."""
    values = [r["pretrain"]["s_per_step"] for r in doc.get("results", [])
              if r["row"] == row and (r["pretrain"] or {}).get("s_per_step")]
    return sum(values) / len(values) if values else None


def pretrain_step_seconds(run_dir: Path) -> Optional[float]:
    """Wall seconds per optimizer step of a finished training run, from its ``log.jsonl``: the sum
    of the epochs' ``epoch_time_s`` (the last record of each epoch, so a resumed run counts every
    epoch once) over the final global step; None without epoch records."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return None
    epochs: Dict[int, Dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") == "epoch" and "epoch_time_s" in rec:
            epochs[int(rec["epoch"])] = rec
    if not epochs:
        return None
    steps = max(int(r["step"]) for r in epochs.values())
    return sum(float(r["epoch_time_s"]) for r in epochs.values()) / steps if steps else None


def format_results(doc: Dict[str, Any]) -> str:
    rows = [r for r in SSL_ROWS if r.name in doc["summary"]]
    protos = [f"{p}_{k}" for p in PROTOCOLS for k in doc["labels_per_class"]]
    n_eval, chance = doc["n_eval"], 100.0 / doc["num_classes"]
    head = "| row | " + " | ".join(f"{p.split('_')[0]} {p.split('_')[1]}/class" for p in protos) + " |"
    lines = [head, "|" + "---|" * (len(protos) + 1)]
    for r in rows:
        cells = []
        for p in protos:
            c = doc["summary"][r.name].get(p)
            if c is None:
                cells.append("–")
                continue
            per_seed = " / ".join(f"{v:.1f}" for _, v in sorted(c["seeds"].items(), key=lambda kv: int(kv[0])))
            cells.append(f"**{c['mean']:.1f}** ± {c['std']:.1f} <sub>({per_seed})</sub>")
        steps = doc.get("row_steps", {}).get(r.name)
        more = f", {steps} pre-training steps" if r.step_scale != 1.0 and steps else ""
        merged = " ‡" if r.name in doc.get("merged_rows", {}) else ""
        lines.append(f"| {r.label}{'' if r.paper else ' †'}{more}{merged} | " + " | ".join(cells) + " |")
    se = 100.0 * math.sqrt(0.25 / max(n_eval, 1))
    text = [
        f"Top-1 (%) on the **{doc['eval_split']}** split ({n_eval} videos, {doc['num_classes']} classes; "
        f"chance = {chance:.1f} %; one test set's sampling error ≤ {se:.1f} points, 100·√(p(1−p)/n) at p = ½). "
        f"Mean ± sample std over seeds {doc['seeds']} (per-seed values in brackets). Same budget for every "
        f"row: {doc['pretrain_steps']} pre-training steps on {doc['n_pool']} unlabelled videos, "
        f"{doc['finetune_steps']} fine-tuning steps per label count. † beyond the paper."
        + (" ‡ from another run with the same settings (" + ", ".join(sorted(set(doc["merged_rows"].values())))
           + ")." if doc.get("merged_rows") else "") + _machine_note(doc), "",
        *lines, "", "Best pre-trained row (paper rows) against no pre-training:", ""]
    for proto, g in doc["gaps"].items():
        text.append(f"- {proto.replace('_', ' ')}/class: {g['best']} {g['gap']:+.1f} points (pooled seed std "
                    f"{g['pooled_std']:.1f}) — {'meets' if g['met'] else 'does not meet'} the ≥ {g.get('target', 5.0):g} points, > 2 std target")
    fidelity = doc.get("fidelity") or {}
    if fidelity:
        text += ["", "Cheap HPM teachers against the full teacher (within the seed noise = |difference| "
                 "≤ 2 × pooled seed std):", ""]
        for row, protos in fidelity.items():
            label = next((r.label for r in SSL_ROWS if r.name == row), row)
            text.append(f"- {label}: " + "; ".join(
                f"{p.replace('_', ' ')}/class {f['diff']:+.1f} (pooled std {f['pooled_std']:.1f}, "
                f"{'within' if f['within_noise'] else 'outside'} the noise)" for p, f in protos.items()))
    versus = doc.get("adamae_vs_hpm") or {}
    if versus:
        text += ["", "AdaMAE against HPM learn-to-mask (AdaMAE − HPM; within the seed noise = |difference| ≤ 2 × "
                 "pooled seed std):", "",
                 "- " + "; ".join(f"{p.replace('_', ' ')}/class {f['diff']:+.1f} (pooled std {f['pooled_std']:.1f}, "
                                  f"{'within' if f['within_noise'] else 'outside'} the noise)" for p, f in versus.items())]
    text += ["", "Wall time, summed over the chains (s; chains ran "
             f"{doc['jobs']} at a time, total wall {doc['wall_s']:.0f} s = {doc['wall_s'] / 60:.1f} min; "
             "s/step: pre-training wall per optimizer step from the runs' logs, one thread):", ""]
    for r in rows:
        parts = doc["seconds"].get(r.name, {})
        per_step = pretrain_seconds_per_step(doc, r.name)
        step = "" if per_step is None else f" ({per_step:.3f} s/step)"
        text.append(f"- {r.label}: " + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()) + step)
    return "\n".join(text) + "\n"


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------
def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and overwrite:
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise DemoError(f"--overwrite: {out} exists but was not written by this benchmark (no {MARKER})")
        print(f"overwrite: removing {out}", flush=True)
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DemoError(f"{out} holds other files (no {MARKER}); pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by tools/ssl_benchmark.py; --overwrite may delete this folder\n")


def _settings(opts: SSLOptions) -> Dict[str, Any]:
    keys = ("labels_per_class", "eval_split", "pool_per_class", "train_per_class", "val_per_class", "test_per_class",
            "pretrain_steps", "finetune_steps", "data", "pool", "smoke", "extra", "data_seed")
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(opts).items() if k in keys}


def _read_merged(opts: SSLOptions, settings: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """The `results.json` files of ``opts.merge``, checked before any work: they exist, hold the
    same settings and the same seeds (rows of other settings never join a table)."""
    docs = []
    for path in opts.merge:
        p = Path(path)
        if not p.is_file():
            raise DemoError(f"merge: {p} not found")
        doc = json.loads(p.read_text())
        old = doc.get("settings", {})
        if old != settings:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise DemoError(f"merge: {p} was run with other settings ({', '.join(changed)})")
        if list(doc.get("seeds", [])) != list(opts.seeds):
            raise DemoError(f"merge: {p} has seeds {doc.get('seeds')}, this run {list(opts.seeds)}")
        docs.append((str(p), doc))
    return docs


def _check_options(opts: SSLOptions) -> None:
    if opts.eval_split not in ("val", "test"):
        raise DemoError(f"eval_split must be 'val' or 'test', got {opts.eval_split!r}")
    if not opts.labels_per_class or min(opts.labels_per_class) < 1:
        raise DemoError(f"labels_per_class must be positive, got {list(opts.labels_per_class)}")
    if opts.jobs < 1:
        raise DemoError(f"jobs must be ≥ 1, got {opts.jobs}")


def _check_same_settings(out: Path, settings: Dict[str, Any]) -> None:
    """A folder holding a run with other settings is refused (results of different settings never mix)."""
    settings_path = out / "settings.json"
    if settings_path.is_file():
        old = json.loads(settings_path.read_text())
        if old != settings:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise DemoError(f"{out} holds a benchmark run with other settings ({', '.join(changed)}); "
                            "use --overwrite or another --out (results of different settings never mix)")


def _labelled_lists(opts: SSLOptions, data: Dict[str, str], out: Path) -> Dict[int, Dict[str, Any]]:
    """The labelled list of every label count (:func:`few_label_list`), each repeated to fill ≥ 1/4
    of the fine-tuning steps per epoch: about 4 epochs whatever the label count (an epoch ends with
    a checkpoint and a loader restart)."""
    fill = max(max(opts.labels_per_class) * int(data["num_classes"]),
               _batch(CONFIG_DIR / "lpft.yaml", [*_smoke_overrides(opts), *opts.extra]) * math.ceil(opts.finetune_steps / 4))
    few = {}
    for k in opts.labels_per_class:
        few[k] = few_label_list(data["train"], k, out / "labelled" / f"train_{k}_per_class.csv", fill_to=fill)
        few[k]["once"] = few_label_list(data["train"], k, out / "labelled" / f"train_{k}_per_class_once.csv")["path"]
    return few


#: relative cost of a row's chain: the longest (the full teacher's pre-training) start first, so the
#: last ones to finish are short
_CHAIN_COST = {"hpm": 4, "hpm_lowres2_eqtime": 4, "hpm_lowres2": 3, "hpm_pred_random": 3, "adamae": 3, "mae_tube": 2,
               "mae_frame": 2, "scratch": 1}


def _run_chains(chains: List[_Chain], jobs: int, out: Path) -> List[Dict[str, Any]]:
    """Every chain in a fresh process, `jobs` at a time; each result printed as it lands; every
    failing chain reported (with its log), then :class:`DemoError`."""
    chains = sorted(chains, key=lambda c: (-_CHAIN_COST.get(c.row.name, 2), c.seed))
    results: List[Dict[str, Any]] = []
    failures: List[str] = []
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {pool.submit(_run_chain, ch): ch for ch in chains}
        for i, fut in enumerate(as_completed(futures), 1):
            ch = futures[fut]
            log = out / f"seed{ch.seed}" / ch.row.name / "chain.log"
            try:
                r = fut.result()
            except Exception as e:  # noqa: BLE001  (report every failing chain, then stop)
                failures.append(f"seed {ch.seed} {ch.row.name}: {e} (log: {log})")
                print(f"  [{i}/{len(chains)}] seed {ch.seed} {ch.row.name} FAILED: {e}\n      log: {log}", flush=True)
                continue
            results.append(r)
            probe = ", ".join(f"{k}/class {v['test_top1']:.1f}" for k, v in r["probe"].items())
            ft = ", ".join(f"{k}/class {v['top1']:.1f}" for k, v in r["finetune"].items())
            print(f"  [{i}/{len(chains)}] seed {ch.seed} {ch.row.label}: probe {probe}; fine-tuning {ft} "
                  f"({r['wall_s']:.0f} s)", flush=True)
    if failures:
        raise DemoError(f"{len(failures)} chain(s) failed:\n  " + "\n  ".join(failures))
    return results


def _earlier_results(out: Path, seeds: Sequence[int], rows: Sequence[SSLRow]) -> List[Dict[str, Any]]:
    """Finished chains of other rows in this folder (an earlier invocation, same settings by
    `settings.json`), for rows finished in every seed of this run: they stay in the table, so a run
    of a few rows never drops the others from `results.json`."""
    run_rows = {r.name for r in rows}
    found = []
    for row in SSL_ROWS:
        paths = [out / f"seed{seed}" / row.name / "result.json" for seed in seeds]
        if row.name not in run_rows and all(p.is_file() for p in paths):
            found += [json.loads(p.read_text()) for p in paths]
    return found


def _merge_results(results: List[Dict[str, Any]], rows: Sequence[SSLRow],
                   merged_docs: Sequence[Tuple[str, Dict[str, Any]]]) -> Dict[str, str]:
    """Add to `results` the rows of the merged runs that this run does not have (the first file
    holding a row wins); returns ``{row: file}`` of the added rows."""
    run_rows = {r.name for r in rows}
    merged_rows: Dict[str, str] = {}
    for path, other in merged_docs:
        for r in other["results"]:
            if r["row"] not in run_rows and merged_rows.setdefault(r["row"], path) == path:
                results.append(r)
    return merged_rows


def _results_doc(opts: SSLOptions, results: List[Dict[str, Any]], rows: Sequence[SSLRow], merged_rows: Dict[str, str],
                 merged_docs: Sequence[Tuple[str, Dict[str, Any]]], check: Dict[str, Any], settings: Dict[str, Any],
                 wall_s: float) -> Dict[str, Any]:
    """`results.json`'s content: the summary, the target's gap report, the cheap teachers' fidelity report,
    the wall time per row and part, the raw per-chain results, the settings and the machine."""
    run_rows = {r.name for r in rows}
    table_rows = [r for r in SSL_ROWS if r.name in run_rows or r.name in merged_rows]
    by_name = {r.name: r for r in SSL_ROWS}
    summary = summarize(results)
    seconds: Dict[str, Dict[str, float]] = {}
    for r in results:
        for part, s in r["seconds"].items():
            seconds.setdefault(r["row"], {}).setdefault(part, 0.0)
            seconds[r["row"]][part] += s
    return {"eval_split": opts.eval_split, "seeds": list(opts.seeds), "rows": [asdict(r) for r in table_rows],
            "merged_rows": merged_rows, "merged_machines": {path: other.get("machine", {}) for path, other in merged_docs},
            "row_steps": {r["row"]: r["pretrain"].get("steps", 0) for r in results},
            "labels_per_class": list(opts.labels_per_class), "num_classes": check["num_classes"],
            "n_eval": check[opts.eval_split], "n_pool": check["pool"], "n_train": check["train"], "n_val": check["val"],
            "pretrain_steps": next((r["pretrain"]["steps"] for r in results
                                    if r["pretrain"] and by_name[r["row"]].step_scale == 1.0), 0),
            "finetune_steps": next((v["steps"] for r in results for v in r["finetune"].values()), 0),
            "chance": 100.0 / check["num_classes"], "summary": summary, "gaps": gap_report(summary, table_rows),
            "fidelity": fidelity_report(summary),
            "adamae_vs_hpm": fidelity_report(summary, "hpm", ("adamae",)).get("adamae", {}),
            "seconds": seconds, "results": sorted(results, key=lambda r: (r["row"], r["seed"])),
            "settings": settings, "jobs": opts.jobs, "wall_s": wall_s, "machine": _machine()}


def run_ssl_benchmark(opts: SSLOptions) -> Dict[str, Any]:
    """Run (or continue) the benchmark; returns and writes `results.json` / `RESULTS.md`. Options,
    folder, settings, merged runs and data are all checked before any chain runs."""
    t_start = time.time()
    _check_options(opts)
    rows = opts.chosen_rows()
    out = Path(opts.out_dir).resolve()
    _prepare_out(out, opts.overwrite)
    settings = _settings(opts)
    _check_same_settings(out, settings)
    merged_docs = _read_merged(opts, settings)
    print(f"videohpm data-efficiency benchmark → {out}  ({len(rows)} rows × seeds {list(opts.seeds)}, "
          f"{opts.jobs} at a time; evaluated on the {opts.eval_split} split)", flush=True)
    data = _user_data(opts) if opts.data else _generated_data(opts, out)
    check = _check_data(data, opts)
    write_atomic(out / "settings.json", json.dumps(settings, indent=1))
    few = _labelled_lists(opts, data, out)
    results = _run_chains([_Chain(seed, row, str(out), data, opts, few) for seed in opts.seeds for row in rows],
                          opts.jobs, out)
    earlier = _earlier_results(out, opts.seeds, rows)
    if earlier:
        merged_docs = [(f"{out} (earlier runs)", {"results": earlier}), *merged_docs]
    merged_rows = _merge_results(results, rows, merged_docs)
    doc = _results_doc(opts, results, rows, merged_rows, merged_docs, check, settings, round(time.time() - t_start, 1))
    write_atomic(out / "results.json", json.dumps(doc, indent=1))
    text = format_results(doc)
    write_atomic(out / "RESULTS.md", "# Data-efficiency benchmark\n\n" + text)
    print("\n" + text + f"\nresults: {out / 'results.json'}", flush=True)
    return doc


def _machine() -> Dict[str, Any]:
    """:func:`~tools.lib.machine.machine_summary`, or what is known when it fails (informative only)."""
    try:
        return machine_summary()
    except Exception as e:  # noqa: BLE001  (the summary is informative only)
        return {"error": str(e), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
