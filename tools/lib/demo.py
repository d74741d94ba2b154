"""`make demo` and `make demo-ablation`: the whole pipeline on the bundled demo data, end to end.

The demo (:func:`run_demo`, `tools/demo.py`) runs, each stage printing what it does:

1. **data** — the motion demo set (:func:`videohpm.data.make_demo_data`: 8 motion classes of
   moving / rotating / zooming digits, 64×64 VP9 webm in the SSv2 layout, and scikit-learn's
   handwritten digits as an ImageFolder);
2. **video pre-training** — HPM (HPM journal §3: L = L_rec + L_pred, Eq. 2; easy-to-hard masks,
   Eq. 8) of a small ViT through `tools/train.py` (DeepSpeed; `--ranks 2` launches two CPU
   ranks with the `deepspeed` launcher);
3. **video fine-tuning** from the exported weights (`tools/train.py`), then the
   **multi-view test** (`tools/test.py`, SSv2's 2 clips × 3 crops);
4. the same three stages for **image mode** (single-frame clips, T = 1, tubelet 1);
5. **figures** — training curves from every run's `log.jsonl` and the Fig. 2-style maps (input /
   true loss / predicted loss / HPM mask / reconstruction) of a few validation videos and images;
6. **report** — `<out>/REPORT.md` (accuracy table with the chance level, HPM's α_t and L_pred,
   curves, figures, stage timings, and at the end a `tools/predict.py` call on two validation
   videos with its answers) and `<out>/summary.json` (the same numbers for machines).

The ablation (:func:`run_ablation`, `tools/ablation.py`) runs five variants with the same budget
(epochs, batch, lr, model) over several seeds and writes `<out>/ABLATION.md`, a table of
fine-tuning top-1 (mean ± std) like HPM journal Table 12: no pre-training, MAE + tube masks, MAE +
per-frame random masks, HPM's L_pred with per-frame random masks (no learn-to-mask) and full HPM
(learn-to-mask, easy-to-hard).

Re-running is safe: every stage records the exact command it ran (`<stage dir>/.stage.json`). A
finished stage with the same command is skipped, an interrupted one is resumed (training stages
pass `train.resume=auto`, so the engine continues from its newest checkpoint), and a stage whose
command changed is cleared and run again. `overwrite=True` starts from an empty output folder.
Any failing stage raises :class:`DemoError` naming the stage, the command and its log.

Configs live in `configs/demo/` (`smoke/` for the test-sized variant, `ablation/` for the
pre-training variants); the orchestration only adds paths, seeds and the per-rank batch.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "DemoError",
    "DemoOptions",
    "StageRunner",
    "AblationVariant",
    "ABLATION_VARIANTS",
    "CHANCE",
    "run_demo",
    "run_ablation",
    "summarize_ablation",
    "format_ablation_table",
    "hpm_progress_summary",
    "label_scarce_gains",
]

REPO = Path(__file__).resolve().parents[2]  # the checkout: tools/lib/demo.py → ../..
CONFIG_DIR = REPO / "configs" / "demo"
MARKER = ".videohpm-demo"  # marks a folder as ours, so overwrite may delete it
STAGE_FILE = ".stage.json"
VIDEO_CLASSES = 8
IMAGE_CLASSES = 10
# The demo set: SSv2-layout webm only (the K400 mp4 copy adds nothing here), digit images,
# more videos than the data maker's default (24 / 8 per class) so that accuracies are less noisy.
DEMO_DATA: Dict[str, Any] = dict(formats=("ssv2",), images=True, train_per_class=48, val_per_class=16)
#: The demo's label-scarce probe: labelled videos per class, and more per class to choose λ on.
LABEL_SCARCE = (5, 8)
CHANCE = {"video": 100.0 / VIDEO_CLASSES, "image": 100.0 / IMAGE_CLASSES}  # top-1 of a uniform guess, %
#: Calibration figure of the slowest machine the default demo is sized for (≤ 20 min on 2 cores).
SIZED_FOR_GFLOPS = 45.0


class DemoError(RuntimeError):
    """A demo / ablation stage failed; the message names the stage, its command and its log."""


@dataclass
class DemoOptions:
    """What to run and where.

    Attributes:
        out_dir: output folder (`outputs/demo`; the ablation uses `<out_dir>/ablation`).
        smoke: test-sized run (`configs/demo/smoke/`, the tiny data variant, 1 epoch).
        ranks: DeepSpeed ranks of the training stages (2 = two CPU processes through the
            `deepspeed` launcher); the global batch stays the same (per-rank batch = batch / ranks).
        threads: torch threads per process (`OMP_NUM_THREADS`, default 1); 0 = CPU cores / ranks. One
            thread per process was ~10× faster than two on a shared 2-core machine (OpenMP threads
            spin on cores that other jobs hold) and leaves a core to the data-loading worker.
        in_process: run the tools in this process (one rank only) instead of subprocesses —
            saves the per-stage interpreter start (≈10 s on a busy 2-core machine); used by tests.
        overwrite: delete a previous output folder first (only one this code created).
        seed: data / training seed of the demo.
        images: also run image mode.
        num_vis: validation videos drawn in the Fig. 2-style figure (images: half as many).
        epochs: optional override of the training epochs, `{"video_pretrain": 10, ...}`.
    """

    out_dir: str = "outputs/demo"
    smoke: bool = False
    ranks: int = 1
    threads: int = 1
    in_process: bool = False
    overwrite: bool = False
    seed: int = 0
    images: bool = True
    num_vis: int = 4
    epochs: Dict[str, int] = field(default_factory=dict)

    def config(self, name: str) -> Path:
        """`configs/demo/[smoke/]<name>.yaml`."""
        path = CONFIG_DIR / ("smoke" if self.smoke else "") / f"{name}.yaml"
        if not path.is_file():
            raise DemoError(f"config not found: {path}")
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _resolved_digest(cfg: Path, overrides: Sequence[str]) -> str:
    """Digest of the resolved run config (file + `_base_` chain + overrides): what a stage runs.
    Comments and key order in the YAML do not matter; any changed value does."""
    from omegaconf import OmegaConf

    from videohpm.config import ConfigError, load_config

    try:
        resolved = load_config(str(cfg), list(overrides))
    except ConfigError as e:
        raise DemoError(f"{cfg}: {e}") from e
    text = OmegaConf.to_yaml(resolved, resolve=True, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class StageRunner:
    """Runs named stages with skip / resume / redo semantics, tees their output to a log and
    records their wall time (`<out>/stages.json`)."""

    def __init__(self, out_dir: Path, opts: DemoOptions, total: Optional[int] = None) -> None:
        self.out = Path(out_dir)
        self.opts = opts
        self.total = total
        self.count = 0
        self.timings: Dict[str, Dict[str, Any]] = {}
        self.log_dir = self.out / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _announce(self, name: str, what: str) -> None:
        self.count += 1
        n = f"{self.count}/{self.total}" if self.total else str(self.count)
        print(f"\n==> [{n}] {name}: {what}", flush=True)

    def _record(self, name: str, seconds: float, status: str) -> None:
        self.timings[name] = {"seconds": round(seconds, 1), "status": status}
        path = self.out / "stages.json"
        try:  # another process (an ablation worker on other seeds) may share the folder
            old = json.loads(path.read_text()) if path.is_file() else {}
        except (json.JSONDecodeError, OSError):
            old = {}
        old[name] = self.timings[name]
        _write_atomic(path, json.dumps(old, indent=1))

    @staticmethod
    def _state(stage_dir: Path) -> Dict[str, Any]:
        f = stage_dir / STAGE_FILE
        try:
            return json.loads(f.read_text()) if f.is_file() else {}
        except json.JSONDecodeError:
            return {}

    def stage(self, name: str, what: str, stage_dir: Path, key: Dict[str, Any], fn: Callable[[], None]) -> bool:
        """Run `fn` for stage `name` unless `stage_dir` already holds a finished run with the same
        `key`. Returns True if it ran, False if it was up to date.

        A previous run with another key is deleted first; an unfinished one with the same key is
        left in place for `fn` to resume.
        """
        self._announce(name, what)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        state = self._state(stage_dir)
        if state.get("key") == digest and state.get("status") == "done":
            print(f"    up to date (finished earlier in {state.get('seconds', 0):.0f} s): {stage_dir}", flush=True)
            self._record(name, float(state.get("seconds", 0.0)), "reused")
            return False
        if stage_dir.exists() and state.get("key") != digest:
            if any(stage_dir.iterdir()):
                print(f"    settings changed since the last run: clearing {stage_dir}", flush=True)
            shutil.rmtree(stage_dir)
        elif state.get("key") == digest:
            print(f"    resuming the interrupted run in {stage_dir}", flush=True)
        stage_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(stage_dir / STAGE_FILE, json.dumps({"key": digest, "status": "running", "what": what,
                                                          "settings": key}, indent=1, default=str))
        t0 = time.time()
        fn()
        seconds = time.time() - t0
        _write_atomic(stage_dir / STAGE_FILE, json.dumps({"key": digest, "status": "done", "seconds": seconds,
                                                          "what": what, "settings": key}, indent=1, default=str))
        self._record(name, seconds, "ran")
        print(f"    done in {seconds:.0f} s", flush=True)
        return True

    def tool(self, name: str, tool: str, args: Sequence[str], ranks: int = 1) -> None:
        """Run `tools/<tool>.py ARGS` (through the `deepspeed` launcher for `ranks > 1`), in this
        process when `opts.in_process`; raise :class:`DemoError` if it fails."""
        script = REPO / "tools" / f"{tool}.py"
        if self.opts.in_process:
            if ranks > 1:
                raise DemoError(f"{name}: in-process runs use one rank (got ranks={ranks})")
            print(f"    $ {script.relative_to(REPO)} {' '.join(args)}  (in process)", flush=True)
            module = importlib.import_module(f"tools.{tool}")  # tools/<tool>.py, a module of this package
            rc = module.main(list(args))
            if rc:
                raise DemoError(f"stage {name!r} failed: tools/{tool}.py exited with {rc} (in process); "
                                f"arguments: {' '.join(args)}")
            return
        if ranks > 1:
            launcher = str(Path(sys.executable).with_name("deepspeed"))
            cmd = [launcher, "--num_gpus", str(ranks), "--master_port", str(_free_port()), str(script), *args]
        else:
            cmd = [sys.executable, str(script), *args]
        self.command(name, cmd, threads=self._threads(ranks))

    def _threads(self, ranks: int) -> int:
        if self.opts.threads > 0:
            return self.opts.threads
        return max(1, (os.cpu_count() or 1) // max(ranks, 1))

    def command(self, name: str, cmd: Sequence[str], threads: int = 0) -> None:
        """Run `cmd` with its output shown live (tqdm bars included) and copied to
        `<out>/logs/<name>.log`; raise :class:`DemoError` with the log's tail if it fails."""
        log_path = self.log_dir / f"{name.replace(' ', '_')}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if sys.prefix != sys.base_prefix:  # a venv: DeepSpeed's JIT comm op is built in its own cache
            env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
        shown = " ".join(str(c) for c in cmd).replace(str(REPO) + os.sep, "")
        print(f"    $ {shown}", flush=True)
        tail = bytearray()
        with open(log_path, "ab") as log:
            log.write(f"\n$ {shown}\n".encode())
            proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            try:
                while True:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                    log.write(chunk)
                    tail = (tail + chunk)[-6000:]
            except BaseException:
                proc.kill()
                raise
            finally:
                rc = proc.wait()
        if rc != 0:
            text = tail.decode(errors="replace").replace("\r", "\n")
            lines = [ln for ln in text.splitlines() if ln.strip()][-25:]
            raise DemoError(f"stage {name!r} failed with exit status {rc}\n  command: {shown}\n  log: {log_path}\n"
                            + "\n".join("  | " + ln for ln in lines))


def _prepare_out(out: Path, overwrite: bool) -> None:
    if overwrite and out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise DemoError(f"--overwrite: {out} exists but was not written by the demo (no {MARKER}); "
                            "remove it yourself or pick another --out")
        print(f"overwrite: removing {out}", flush=True)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by tools/lib/demo.py; `tools/demo.py --overwrite` may delete this folder\n")


def _data_stage(runner: StageRunner, out: Path, opts: DemoOptions) -> Dict[str, Any]:
    """The demo set (SSv2-layout webm + digit ImageFolder); returns its `demo.json` content."""
    data_dir = out / "data"
    # Always with the digit images (a second or two): `images=False` runs then share the folder.
    params = dict(DEMO_DATA, seed=opts.seed, tiny=opts.smoke)

    def make() -> None:
        from videohpm.data import make_demo_data

        info = make_demo_data(data_dir, seed=opts.seed, tiny=opts.smoke, **DEMO_DATA)
        n = {s: sum(1 for _ in open(p)) for s, p in info.lists["ssv2"].items()}
        print(f"    {len(info.classes)} motion classes; videos: {n}; {info.num_frames} frames of "
              f"{info.size}×{info.size}; images: {info.image_dirs or 'skipped'}", flush=True)

    runner.stage("data", "generate the demo set (webm videos, digit images)", data_dir, params, make)
    return json.loads((data_dir / "demo.json").read_text())


def _data_overrides(meta: Dict[str, Any], kind: str) -> List[str]:
    if kind == "video":
        lists, root = meta["lists"]["ssv2"], meta["video_dirs"]["ssv2"]
        return [f"data.train={lists['train']}", f"data.val={lists['val']}", f"data.test={lists['test']}",
                f"data.data_root={root}"]
    dirs = meta["image_dirs"]
    return [f"data.train={dirs['train']}", f"data.val={dirs['val']}", f"data.test={dirs['val']}"]


def _batch_override(cfg_path: Path, ranks: int, extra: Sequence[str] = ()) -> List[str]:
    """Keep the global batch of the config with `ranks` processes: per-rank batch = batch / ranks."""
    if ranks <= 1:
        return []
    from videohpm.config import load_config

    batch = int(load_config(str(cfg_path), [o for o in extra if not o.startswith("data.")]).train.batch_size)
    if batch % ranks:
        raise DemoError(f"{cfg_path}: train.batch_size={batch} is not divisible by --ranks {ranks}")
    return [f"train.batch_size={batch // ranks}"]


def _input_stamps(overrides: Sequence[str]) -> Dict[str, Any]:
    """mtime and size of the checkpoint a run starts from, so that a redone pre-training also
    redoes the fine-tuning that reads it (the path alone does not change)."""
    out = {}
    for o in overrides:
        if o.startswith("model.pretrained="):
            path = Path(o.split("=", 1)[1])
            if path.is_file():
                st = path.stat()
                out[str(path)] = [st.st_mtime, st.st_size]
    return out


def _train_stage(runner: StageRunner, name: str, what: str, cfg: Path, run_dir: Path, overrides: Sequence[str],
                 ranks: int) -> Path:
    """`tools/train.py --config CFG OVERRIDES` into `run_dir`; returns its `model_final.pth`."""
    args = ["--config", str(cfg), *overrides, f"train.output_dir={run_dir}"]
    args += _batch_override(cfg, ranks, overrides)
    key = {"args": args, "ranks": ranks, "config": _resolved_digest(cfg, args[2:]),
           "inputs": _input_stamps(overrides)}
    # resume=auto is not part of the key: it only matters for an interrupted run of the same key
    runner.stage(name, what, run_dir, key, lambda: runner.tool(name, "train", [*args, "train.resume=auto"], ranks))
    final = run_dir / "model_final.pth"
    if not final.is_file():
        raise DemoError(f"stage {name!r}: {final} was not written")
    return final


def _test_stage(runner: StageRunner, name: str, cfg: Path, ckpt: Path, test_dir: Path,
                overrides: Sequence[str]) -> Dict[str, Any]:
    """`tools/test.py` (multi-view) of a fine-tuned checkpoint; returns its `metrics.json`."""
    args = ["--config", str(cfg), f"checkpoint={ckpt}", "--output-dir", str(test_dir), *overrides]
    key = {"args": args, "config": _resolved_digest(cfg, ["model.pretrained=null", *overrides]),
           "checkpoint": [ckpt.stat().st_mtime, ckpt.stat().st_size]}
    runner.stage(name, "multi-view test (tools/test.py)", test_dir, key, lambda: runner.tool(name, "test", args))
    return json.loads((test_dir / "metrics.json").read_text())


def _knn_stage(runner: StageRunner, name: str, cfg: Path, ckpt: Optional[Path], knn_dir: Path,
               overrides: Sequence[str]) -> Dict[str, Any]:
    """`tools/knn.py`: weighted k-NN of the frozen encoder of a pre-training checkpoint (or of the
    random initialisation when `ckpt` is None); returns its `knn.json`."""
    weights = [f"checkpoint={ckpt}"] if ckpt is not None else ["--random-init"]
    args = ["--config", str(cfg), *weights, "--output-dir", str(knn_dir), *overrides]
    key = {"args": args, "config": _resolved_digest(cfg, ["model.pretrained=null", *overrides]),
           "checkpoint": [ckpt.stat().st_mtime, ckpt.stat().st_size] if ckpt is not None else None}
    runner.stage(name, "k-NN of the frozen encoder (tools/knn.py)", knn_dir, key, lambda: runner.tool(name, "knn", args))
    return json.loads((knn_dir / "knn.json").read_text())


def _predict_stage(runner: StageRunner, out: Path, meta: Dict[str, Any], ft_ckpt: Path) -> Dict[str, Any]:
    """`tools/predict.py` of the fine-tuned video model on two validation videos of different
    classes, names from the SSv2 labels JSON (the run's own config.yaml is used); returns the
    command, the answer lines and the true classes for the report."""
    from videohpm.evaluation.predict import format_answer, read_answers

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
        from videohpm.evaluation.runner import run_visualize
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


def _epochs_override(opts: DemoOptions, name: str) -> List[str]:
    return [f"train.epochs={opts.epochs[name]}"] if name in opts.epochs else []


def run_demo(opts: DemoOptions) -> Dict[str, Any]:
    """Run the demo end to end (see the module docstring); returns `summary.json`'s content."""
    t_start = time.time()
    out = Path(opts.out_dir).resolve()
    _prepare_out(out, opts.overwrite)
    kinds = ["video"] + (["image"] if opts.images else [])
    runner = StageRunner(out, opts, total=1 + 3 * len(kinds) + 3 + 12)  # 12: the label-scarce chains
    machine = machine_summary()
    print(f"videohpm demo → {out}  ({'smoke' if opts.smoke else 'full'}; {opts.ranks} training rank(s); "
          f"{os.cpu_count()} CPU cores; {format_machine(machine)})", flush=True)
    meta = _data_stage(runner, out, opts)

    results: Dict[str, Any] = {}
    runs: Dict[str, Path] = {}
    pre_cfgs: Dict[str, Path] = {}
    pre_over: Dict[str, List[str]] = {}
    for kind in kinds:
        data = _data_overrides(meta, kind)
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
    pre_ckpt = _train_stage(runner, f"{kind} pre-training",
                            f"HPM pre-training of the {kind} model (tools/train.py)", pre_cfg, pre_dir,
                            [*data, *seed, *_epochs_override(opts, f"{kind}_pretrain")], opts.ranks)
    ft_ckpt = _train_stage(runner, f"{kind} fine-tuning", f"fine-tuning the pre-trained {kind} encoder",
                           ft_cfg, ft_dir, [*data, *seed, f"model.pretrained={pre_ckpt}",
                                            *_epochs_override(opts, f"{kind}_finetune")], opts.ranks)
    metrics = _test_stage(runner, f"{kind} test", ft_cfg, ft_ckpt, test_dir, data)
    return _kind_result(kind, metrics, pre_dir, ft_dir)


def _label_scarce_stage(runner: StageRunner, out: Path, opts: DemoOptions, meta: Dict[str, Any], pre_cfg: Path,
                        pre_dir: Path) -> Dict[str, Any]:
    """What pre-training gave when labels are scarce (docs/EVIDENCE.md's best protocol): the frozen
    time probe on 5 labelled videos per class (λ chosen on 8 more per class of the training list)
    and LP-FT from it (`configs/demo/few_labels_video.yaml`: the epoch chosen on the same 8, step 0
    = the probe included), both scored once on the test list, for the HPM-pre-trained video encoder
    and for no pre-training (the same encoder's random initialisation, same seed). The smoke
    variant has 1 training video per class: 1 labelled, λ and epoch chosen on the test list itself."""
    # tools.lib.ssl_benchmark imports this module (StageRunner): imported here, not at the top
    from tools.lib.ssl_benchmark import demo_label_scarce_probe

    lists = meta["lists"]["ssv2"]
    per_class, val_per_class = (1, 0) if opts.smoke else LABEL_SCARCE
    # one rank and short stages: run in this process (no interpreter start for each of its 10 tool
    # runs), with the runner's thread count
    import torch

    here = copy.copy(runner)  # shares the timings
    here.opts = dataclasses.replace(runner.opts, in_process=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(runner._threads(1))
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
    runner._announce("report", "REPORT.md and summary.json")
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


def machine_summary() -> Dict[str, Any]:
    """The calibration figure (GFLOP/s of a 1-thread fp32 1024³ GEMM), ATen's CPU capability, the
    ISA caps in the environment and the kernels chosen: what machine the timings are from."""
    from tools.lib.benchmarks.calibrate import gemm_gflops
    from videohpm.models import cpu_kernels

    kernels = cpu_kernels.chosen_kernels()
    cap = kernels["cpu"]
    return {"gemm_gflops_1thread": round(gemm_gflops(), 1), "aten": cap["aten"], "caps": cap["caps"],
            "bf16_fast": cap["bf16_fast"], "kernels": kernels["fp32"]}


def format_machine(m: Dict[str, Any]) -> str:
    if not m:
        return "not recorded"
    caps = ", ISA caps " + " ".join(f"{k}={v}" for k, v in m.get("caps", {}).items()) if m.get("caps") else ""
    return (f"calibration {m.get('gemm_gflops_1thread', float('nan')):.0f} GFLOP/s (1-thread fp32 1024³ GEMM), "
            f"ATen {m.get('aten')}{caps}, fp32 kernels {m.get('kernels')}")


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
        "Chance is the top-1 of a uniform guess over the classes (balanced validation sets). "
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


def few_label_list(train_list: Path, per_class: int, dest: Path) -> Tuple[Path, int, int]:
    """The first `per_class` lines of every class of a `path [num_frames] label` list (list
    order: deterministic, balanced), written verbatim to `dest`. Returns (dest, kept, total)."""
    lines = [ln for ln in train_list.read_text().splitlines() if ln.strip()]
    taken: Dict[str, int] = {}
    kept = []
    for ln in lines:
        label = ln.split()[-1]
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            kept.append(ln)
    short = sorted(k for k, n in taken.items() if n < per_class)
    if short:
        raise DemoError(f"{train_list}: class(es) {short} have fewer than {per_class} videos")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(dest, "\n".join(kept) + "\n")
    return dest, len(kept), len(lines)


def _few_label_overrides(ft_cfg: Path, opts: DemoOptions, factor: int) -> List[str]:
    """Fine-tuning on 1/`factor` of the labelled videos with half the optimizer steps (and
    warm-up steps and validations) of the full fine-tuning: epochs, warm-up and eval interval ×
    factor / 2 (at least × 1). Half, not all: with 3 steps an epoch the per-epoch overhead (a
    data-loading worker started per epoch) would double the run time."""
    from videohpm.config import load_config

    c = load_config(str(ft_cfg), _epochs_override(opts, "video_finetune"))
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
    meta = _data_stage(runner, out, opts)
    data = _data_overrides(meta, "video")
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
    _prepare_out(out, overwrite=False)
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
    few_list, kept, total = few_label_list(train_list, labels_per_class,
                                           out / "ablation" / f"train_{labels_per_class}_per_class.csv")
    return [f"data.train={few_list}", *_few_label_overrides(ft_cfg, opts, max(1, total // kept))]


def _run_ablation_row(runner: StageRunner, opts: DemoOptions, variant: AblationVariant, seed: int, base: Path,
                      data: Sequence[str], ft_cfg: Path, few: Sequence[str], labels_per_class: int) -> Dict[str, float]:
    """One variant, one seed, in `base`: pre-training (unless `scratch`), k-NN of the frozen
    encoder, fine-tuning and its test, and with `few` overrides the few-label fine-tuning and its
    test. Returns `{"top1", "top5", "knn_top1"[, "few_top1"]}`."""
    over = [*data, f"train.seed={seed}"]
    pretrained, ckpt = "null", None
    if variant.pretrain:
        ckpt = _train_stage(runner, f"seed {seed} {variant.name} pre-training", f"{variant.label}, seed {seed}",
                            opts.config(variant.pretrain), base / "pretrain",
                            [*over, *_epochs_override(opts, "video_pretrain")], opts.ranks)
        pretrained = str(ckpt)
    # frozen features before any fine-tuning; no pre-training = the random initialisation
    # of the same encoder (HPM's pre-training config, this seed)
    knn = _knn_stage(runner, f"seed {seed} {variant.name} k-NN", opts.config(variant.pretrain or "pretrain_video_hpm"),
                     ckpt, base / "knn", [*over, f"data.num_classes={VIDEO_CLASSES}"])
    ft = _train_stage(runner, f"seed {seed} {variant.name} fine-tuning", f"fine-tuning ({variant.label}), seed {seed}",
                      ft_cfg, base / "finetune",
                      [*over, f"model.pretrained={pretrained}", *_epochs_override(opts, "video_finetune")],
                      opts.ranks)
    metrics = _test_stage(runner, f"seed {seed} {variant.name} test", ft_cfg, ft, base / "test", data)
    row = {"top1": float(metrics["top1"]), "top5": float(metrics["top5"]), "knn_top1": float(knn["knn_top1"])}
    if few:
        ft = _train_stage(runner, f"seed {seed} {variant.name} few-label fine-tuning",
                          f"fine-tuning on {labels_per_class} videos per class ({variant.label}), seed {seed}",
                          ft_cfg, base / f"finetune_{labels_per_class}pc",
                          [*over, f"model.pretrained={pretrained}", *few], opts.ranks)
        metrics = _test_stage(runner, f"seed {seed} {variant.name} few-label test", ft_cfg, ft,
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
    _write_atomic(out / "summary.json", json.dumps(demo_summary, indent=1, default=str))
    _write_atomic(out / "REPORT.md", format_report(demo_summary))


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
