#!/usr/bin/env python
"""The time-keeping linear probe on frozen features, and its head for fine-tuning (LP-FT).

    python tools/extract_features.py --config CFG checkpoint=CKPT --pool time train.csv --output-dir f/train
    python tools/extract_features.py --config CFG checkpoint=CKPT --pool time val.csv --output-dir f/val
    python tools/probe.py --train f/train --val f/val [--test f/test] --output-dir probe/
    # fine-tuning that starts from the probe (a config with model.kwargs.time_pooling=true)
    python tools/train.py --config CFG model.pretrained=CKPT method.kwargs.probe_head=probe/probe_head.safetensors

Fits the L2 logistic regression of `videohpm.evaluation.probe` on the `--train` features, chooses
λ on `--val`, scores `--test` once. Writes `probe.json` (top-1 per split and per λ, the chosen λ)
and, for `--pool time` features, `probe_head.safetensors` (`videohpm.models.probe_head`: the
head of a time-pooling classifier that predicts exactly as the probe). `tools/few_labels.py` runs
the whole chain (features, probe, fine-tuning) in one command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--train", required=True, help="feature folder of the labelled training videos")
    p.add_argument("--val", required=True, help="feature folder of the validation videos (λ is chosen there)")
    p.add_argument("--test", default=None, help="feature folder scored once with the chosen λ")
    p.add_argument("--output-dir", required=True, help="folder for probe.json and probe_head.safetensors")
    p.add_argument("--num-classes", type=int, default=None, help="class count (default: the largest label + 1)")
    p.add_argument("--no-head", action="store_true", help="do not write probe_head.safetensors")
    return p.parse_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    for name in ("train", "val", "test"):
        folder = getattr(args, name)
        if folder is not None and not os.path.isfile(os.path.join(folder, "index.csv")):
            raise cli.ToolError(f"error: --{name} {folder}: not a feature folder (no index.csv; "
                                "write one with tools/extract_features.py)")
    from videohpm.evaluation.probe import probe_feature_folders

    head = None if args.no_head else os.path.join(args.output_dir, "probe_head.safetensors")
    with cli.exits(ValueError, FileNotFoundError):
        r = probe_feature_folders(args.train, args.val, args.test, num_classes=args.num_classes, head_path=head)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "probe.json"), "w", encoding="utf-8") as f:
        json.dump(r, f, indent=1)
    test = f", test {r['test_top1']:.1f} ± {r['test_stderr']:.1f} %" if r["test_top1"] is not None else ""
    print(f"linear probe: λ {r['weight_decay']:g} (chosen on val), val top-1 {r['val_top1']:.1f} %{test}; "
          f"{r['n_train']} training videos")
    if head:
        print(f"probe head: {head} (method.kwargs.probe_head=… with model.kwargs.time_pooling=true)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
