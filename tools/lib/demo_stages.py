"""The demo's options, data and training / test / k-NN stages, shared by the demo and its ablation.

:class:`DemoOptions` says what to run and where; :func:`data_stage` makes the motion demo set
(:func:`videohpm.data.make_demo_data`: 8 motion classes of moving / rotating / zooming digits, 64×64
VP9 webm in the SSv2 layout, and scikit-learn's handwritten digits as an ImageFolder);
:func:`train_stage`, :func:`test_stage` and :func:`knn_stage` run `tools/train.py`, `tools/test.py`
and `tools/knn.py` as :class:`~tools.lib.stages.StageRunner` stages keyed by the resolved config,
so a changed setting (or a redone pre-training a fine-tuning reads) redoes the stage.

Configs live in `configs/demo/` (`smoke/` for the test-sized variant, `ablation/` for the
pre-training variants); the orchestration only adds paths, seeds and the per-rank batch.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tools.lib.stages import REPO, DemoError, RunOptions, StageRunner, resolved_digest

__all__ = ["CONFIG_DIR", "VIDEO_CLASSES", "IMAGE_CLASSES", "DEMO_DATA", "CHANCE", "DemoOptions", "prepare_out",
           "data_stage", "data_overrides", "batch_override", "input_stamps", "train_stage", "test_stage",
           "knn_stage", "epochs_override"]

CONFIG_DIR = REPO / "configs" / "demo"
MARKER = ".videohpm-demo"  # marks a folder as ours, so overwrite may delete it
VIDEO_CLASSES = 8
IMAGE_CLASSES = 10
# The demo set: SSv2-layout webm only (the K400 mp4 copy adds nothing here), digit images,
# more videos than the data maker's default (24 / 8 per class) so that accuracies are less noisy.
DEMO_DATA: Dict[str, Any] = dict(formats=("ssv2",), images=True, train_per_class=48, val_per_class=16,
                                 test_per_class=16)
CHANCE = {"video": 100.0 / VIDEO_CLASSES, "image": 100.0 / IMAGE_CLASSES}  # top-1 of a uniform guess, %


@dataclass
class DemoOptions(RunOptions):
    """What to run and where.

    Attributes:
        out_dir: output folder (`outputs/demo`; the ablation uses `<out_dir>/ablation`).
        smoke: test-sized run (`configs/demo/smoke/`, the tiny data variant, 1 epoch).
        ranks: DeepSpeed ranks of the training stages (2 = two CPU processes through the
            `deepspeed` launcher); the global batch stays the same (per-rank batch = batch / ranks).
        threads, in_process: as :class:`~tools.lib.stages.RunOptions`.
        overwrite: delete a previous output folder first (only one this code created).
        seed: data / training seed of the demo.
        images: also run image mode.
        num_vis: validation videos drawn in the Fig. 2-style figure (images: half as many).
        epochs: optional override of the training epochs, `{"video_pretrain": 10, ...}`.
    """

    out_dir: str = "outputs/demo"
    smoke: bool = False
    ranks: int = 1
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



def prepare_out(out: Path, overwrite: bool) -> None:
    """Create `out` (marked as ours); `overwrite` first deletes a previous one this code wrote."""
    if overwrite and out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise DemoError(f"--overwrite: {out} exists but was not written by the demo (no {MARKER}); "
                            "remove it yourself or pick another --out")
        print(f"overwrite: removing {out}", flush=True)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by tools/lib/demo_stages.py; `tools/demo.py --overwrite` may delete this folder\n")


def data_stage(runner: StageRunner, out: Path, opts: DemoOptions) -> Dict[str, Any]:
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


def data_overrides(meta: Dict[str, Any], kind: str) -> List[str]:
    """The `data.*` overrides of one mode (`video` / `image`) of the demo set `meta` (`demo.json`)."""
    if kind == "video":
        lists, root = meta["lists"]["ssv2"], meta["video_dirs"]["ssv2"]
        return [f"data.train={lists['train']}", f"data.val={lists['val']}", f"data.test={lists['test']}",
                f"data.data_root={root}"]
    dirs = meta["image_dirs"]
    return [f"data.train={dirs['train']}", f"data.val={dirs['val']}", f"data.test={dirs['val']}"]


def batch_override(cfg_path: Path, ranks: int, extra: Sequence[str] = ()) -> List[str]:
    """Keep the global batch of the config with `ranks` processes: per-rank batch = batch / ranks."""
    if ranks <= 1:
        return []
    from videohpm.config import load_config

    batch = int(load_config(str(cfg_path), [o for o in extra if not o.startswith("data.")]).train.batch_size)
    if batch % ranks:
        raise DemoError(f"{cfg_path}: train.batch_size={batch} is not divisible by --ranks {ranks}")
    return [f"train.batch_size={batch // ranks}"]


def input_stamps(overrides: Sequence[str]) -> Dict[str, Any]:
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


def train_stage(runner: StageRunner, name: str, what: str, cfg: Path, run_dir: Path, overrides: Sequence[str],
                 ranks: int) -> Path:
    """`tools/train.py --config CFG OVERRIDES` into `run_dir`; returns its `model_final.pth`."""
    args = ["--config", str(cfg), *overrides, f"train.output_dir={run_dir}"]
    args += batch_override(cfg, ranks, overrides)
    key = {"args": args, "ranks": ranks, "config": resolved_digest(cfg, args[2:]),
           "inputs": input_stamps(overrides)}
    # resume=auto is not part of the key: it only matters for an interrupted run of the same key
    runner.stage(name, what, run_dir, key, lambda: runner.tool(name, "train", [*args, "train.resume=auto"], ranks))
    final = run_dir / "model_final.pth"
    if not final.is_file():
        raise DemoError(f"stage {name!r}: {final} was not written")
    return final


def test_stage(runner: StageRunner, name: str, cfg: Path, ckpt: Path, test_dir: Path,
                overrides: Sequence[str]) -> Dict[str, Any]:
    """`tools/test.py` (multi-view) of a fine-tuned checkpoint; returns its `metrics.json`."""
    args = ["--config", str(cfg), f"checkpoint={ckpt}", "--output-dir", str(test_dir), *overrides]
    key = {"args": args, "config": resolved_digest(cfg, ["model.pretrained=null", *overrides]),
           "checkpoint": [ckpt.stat().st_mtime, ckpt.stat().st_size]}
    runner.stage(name, "multi-view test (tools/test.py)", test_dir, key, lambda: runner.tool(name, "test", args))
    return json.loads((test_dir / "metrics.json").read_text())


def knn_stage(runner: StageRunner, name: str, cfg: Path, ckpt: Optional[Path], knn_dir: Path,
               overrides: Sequence[str]) -> Dict[str, Any]:
    """`tools/knn.py`: weighted k-NN of the frozen encoder of a pre-training checkpoint (or of the
    random initialisation when `ckpt` is None); returns its `knn.json`."""
    weights = [f"checkpoint={ckpt}"] if ckpt is not None else ["--random-init"]
    args = ["--config", str(cfg), *weights, "--output-dir", str(knn_dir), *overrides]
    key = {"args": args, "config": resolved_digest(cfg, ["model.pretrained=null", *overrides]),
           "checkpoint": [ckpt.stat().st_mtime, ckpt.stat().st_size] if ckpt is not None else None}
    runner.stage(name, "k-NN of the frozen encoder (tools/knn.py)", knn_dir, key, lambda: runner.tool(name, "knn", args))
    return json.loads((knn_dir / "knn.json").read_text())

def epochs_override(opts: DemoOptions, name: str) -> List[str]:
    """`train.epochs=N` when `opts.epochs` overrides stage `name` (`video_pretrain`, ...)."""
    return [f"train.epochs={opts.epochs[name]}"] if name in opts.epochs else []

