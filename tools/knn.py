#!/usr/bin/env python
"""Weighted k-NN classification on frozen encoder features (HPM journal Tables 1, 4, 5; DINO's protocol).

    # a pre-training run's encoder: data.train = memory bank, data.val = queries (labelled lists)
    python tools/knn.py checkpoint=outputs/pt/model_final.pth \\
        data.train=data_lists/ssv2/train.csv data.val=data_lists/ssv2/val.csv data.num_classes=174
    # HPM's EMA teacher instead of the student; a randomly initialised encoder as the baseline row
    python tools/knn.py checkpoint=outputs/pt --teacher --output-dir outputs/pt/knn-teacher
    python tools/knn.py --config configs/pretrain/ssv2_vit_b_hpm.yaml --random-init
    # all GPUs of a node: ranks share the videos, features are gathered and de-duplicated
    deepspeed --num_gpus 8 tools/knn.py checkpoint=outputs/pt

Features: the encoder's tokens over all patches, mean-pooled and ℓ2-normalized; each of the k
nearest training samples (cosine) votes with weight exp(sim / T); k over `train.knn_k`
(default 10, 20, 100, 200; the best top-1 is `knn_top1`), T = `train.knn_temperature` (0.07).
Both lists go through the validation transform (centre clip and crop). `--config` is the model's
pre-training (or fine-tuning) YAML, by default the `config.yaml` of the checkpoint's run folder
(else the config stored in `model_final.pth`); `checkpoint=` takes what `tools/test.py` takes.
Writes `knn.json` into `--output-dir` (default `<train.output_dir>/knn`); a folder that holds one
is refused unless `--overwrite`. Exit 1 when no video of a list could be read.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402

RESULTS = ("knn.json",)
CLEARED = RESULTS + ("knn.log*",)


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--config", default=None, help="the model's pre-training (or fine-tuning) YAML "
                                                   "(default: config.yaml of the checkpoint's run folder)")
    p.add_argument("--output-dir", default=None, help="where to write knn.json (default <train.output_dir>/knn)")
    cli.add_options(p, "--batch-size")
    cli.add_options(p, "--teacher", "--random-init")
    cli.add_overwrite(p)
    cli.add_options(p, "--local_rank", "overrides")
    return p.parse_intermixed_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.launcher_env(args, slurm=False)
    cli.require_config_for_random_init(args)
    from videohpm import distributed as vdist  # imports torch: after parsing, --help stays fast
    from videohpm.tasks.run_config import tool_config
    from videohpm.tasks.knn import run_knn

    with cli.config_errors(value_hint=", or --random-init"):
        cfg, checkpoint = tool_config(args.config, args.overrides, require_checkpoint=not args.random_init)
    cli.refuse_random_init_checkpoint(args, checkpoint)
    out = args.output_dir or os.path.join(cfg.train.output_dir, "knn")
    cli.refuse_overwrite(f"--output-dir {out}", cli.held_results(out, RESULTS), args.overwrite)
    vdist.setup_logging(None)

    checks_passed = cli.results_opener(out, CLEARED, args.overwrite, "knn.log")  # the checkpoint fits and both lists are readable: now write

    with cli.exits(ValueError, FileNotFoundError):  # ConfigError included
        m = run_knn(cfg, checkpoint, out, teacher=args.teacher, batch_size=args.batch_size,
                    on_checks_passed=checks_passed)
    if not (m["knn_val_samples"] and m["knn_train_samples"]):
        raise cli.ToolError(f"error: no k-NN: {m['knn_train_samples']} train / {m['knn_val_samples']} val videos "
                            "could be read; check data.data_root and the lists (nothing written but knn.log)",
                            code=1)
    if vdist.is_main_process():
        per_k = "  ".join(f"k={k}: {m[f'knn_top1@{k}']:.2f}" for k in cfg.train.knn_k)
        print(f"k-NN top-1 {m['knn_top1']:.2f} (best k={m['knn_best_k']}; {per_k}) on "
              f"{m['knn_val_samples']} val / {m['knn_train_samples']} train samples  → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
