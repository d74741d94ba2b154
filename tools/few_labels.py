#!/usr/bin/env python
"""Fine-tune on a handful of labelled videos per class with LP-FT: the linear probe first, then
fine-tuning that starts from it and keeps its best validation epoch (never below the probe there).

    python tools/make_lists.py folder my_videos/ data_lists/my_videos
    python tools/few_labels.py --config configs/finetune/few_labels.yaml --lists data_lists/my_videos \\
        --data-root my_videos model.pretrained=outputs/pretrain/model_final.pth --output-dir outputs/few_labels

`--lists DIR`: `train.csv`, `val.csv` and `classes.txt` as `tools/make_lists.py` writes them;
λ of the probe and the fine-tuning's epoch are chosen on `val.csv`. `--test LIST`: a separate
labelled list scored once at the end (make_lists' `test.csv` of a folder is `val.csv`, so it is
not a test). `model.pretrained` (override or config) is the pre-trained checkpoint; without one
the encoder's seeded random initialisation is used (the "no pre-training" baseline). Stages
(features, probe, fine-tuning, test) run in this process; a re-run skips finished ones and
resumes an interrupted fine-tuning. Writes `<output-dir>/few_labels.json`, the probe head
(`probe/probe_head.safetensors`) and the fine-tuning run (`finetune/model_final.pth`: the kept
weights, for tools/test.py and tools/predict.py). Other `key=value` override the YAML.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--config", required=True, help="an LP-FT config (configs/finetune/few_labels.yaml)")
    p.add_argument("--lists", required=True, help="folder with train.csv, val.csv, classes.txt (tools/make_lists.py)")
    p.add_argument("--output-dir", required=True, help="folder of the chain's stages and few_labels.json")
    p.add_argument("--test", default=None, help="a labelled test list, scored once at the end")
    p.add_argument("--seed", type=int, default=0, help="training seed (and the random initialisation's)")
    cli.add_options(p, "--data-root", "overrides")
    return p.parse_args(argv)


def _num_classes(lists: Path) -> int:
    classes = lists / "classes.txt"
    if classes.is_file():
        return sum(1 for ln in classes.read_text(encoding="utf-8").splitlines() if ln.strip())
    labels = [int(ln.split()[-1]) for f in ("train.csv", "val.csv")
              for ln in (lists / f).read_text(encoding="utf-8").splitlines() if ln.strip()]
    return max(labels) + 1


def _check(args: argparse.Namespace):
    """Lists, config and checkpoint, checked before any work; returns (config path, checkpoint)."""
    from videohpm.config import find_config, load_config

    lists = Path(args.lists)
    missing = [f for f in ("train.csv", "val.csv") if not (lists / f).is_file()]
    if missing:
        raise cli.ToolError(f"error: --lists {lists}: no {', '.join(missing)} (write them with tools/make_lists.py)")
    if args.test and not Path(args.test).is_file():
        raise cli.ToolError(f"error: --test {args.test}: no such list file")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise cli.ToolError(f"error: {bad[0]!r} is not a key=value override")
    with cli.config_errors():
        cfg_path = Path(find_config(args.config))
        cfg = load_config(str(cfg_path), list(args.overrides))
    if not cfg.train.keep_best or not cfg.model.kwargs.get("time_pooling"):
        raise cli.ToolError(f"error: {cfg_path} is not an LP-FT config (it needs model.kwargs.time_pooling=true "
                            "and train.keep_best=true)")
    ckpt = cfg.model.pretrained
    if ckpt and not Path(ckpt).exists():
        raise cli.ToolError(f"error: model.pretrained: no such file {ckpt}")
    return cfg_path, Path(ckpt) if ckpt else None


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg_path, ckpt = _check(args)
    from tools.lib.label_scarce import run_lpft
    from tools.lib.stages import DemoError, RunOptions, StageRunner

    lists, out = Path(args.lists), Path(args.output_dir).resolve()
    n = _num_classes(lists)
    split = {"train": str(lists / "train.csv"), "val": str(lists / "val.csv")}
    if args.test:
        split["test"] = args.test
    overrides = [o for o in args.overrides if not o.startswith(("model.pretrained=", "train.output_dir="))]
    if args.data_root is not None:
        overrides.append(f"data.data_root={args.data_root}")
    out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(out, RunOptions(in_process=True))
    if ckpt is None:
        print("no model.pretrained: the encoder's random initialisation (the no-pre-training baseline)", flush=True)
    with cli.exits(DemoError, code=1):
        r = run_lpft(runner, "few-labels", cfg_path, ckpt, split, out, n, overrides, seed=args.seed)
    (out / "few_labels.json").write_text(json.dumps(r, indent=1, default=str))
    p, f = r["probe"], r["finetune"]
    print(f"\nlinear probe: val top-1 {p['val_top1']:.1f} % (λ {p['weight_decay']:g}, {p['n_train']} labelled videos)"
          f"\nLP-FT: val top-1 {f['kept_val_top1']:.1f} % after {f['kept_epoch']} epoch(s) (epoch 0 = the probe-"
          f"initialised model, {f['start_val_top1']:.1f} %); the best validation epoch is kept, never below "
          "the probe on validation")
    if "test_top1" in f:
        print(f"test ({f['n_test']} videos, scored once): probe {p['test_top1']:.1f} ± {p['test_stderr']:.1f} %, "
              f"LP-FT {f['test_top1']:.1f} ± {f['test_stderr']:.1f} % (binomial s.e.)")
    print(f"model: {out / 'finetune' / 'model_final.pth'}\nresults: {out / 'few_labels.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
