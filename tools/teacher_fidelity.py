#!/usr/bin/env python
"""Mask fidelity of the cheap HPM teacher modes against the full teacher, on held-out clips.

    python tools/teacher_fidelity.py --config configs/demo/pretrain_video_hpm.yaml \\
        checkpoint=outputs/demo/video/pretrain --modes subset:0.25,lowres:2 [--alpha 0.5] \\
        [data.val=... data.data_root=...]

For every clip of `data.val` (one centre clip and crop per video) the checkpoint's EMA teacher
scores the tokens with `teacher_mode=full` and with each `--modes` entry; per time slice it
reports the overlap of the α·γ·n hard patches Eq. 8 would mask (α = `--alpha`, γ =
`mask.kwargs.mask_ratio`) and Spearman's rank correlation of the scores, plus a random ranking
for reference (videohpm/tasks/teacher_fidelity.py). Prints a markdown table and writes
`teacher_fidelity.json` into `--output-dir` (default `<train.output_dir>/teacher_fidelity`).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--config", required=True, help="the HPM pre-training YAML config of the checkpoint")
    p.add_argument("--modes", default="subset:0.25,lowres:2", help="comma list of method.kwargs.teacher_mode values")
    p.add_argument("--alpha", type=float, default=0.5, help="α of Eq. 8: the fraction of masked patches chosen by score")
    p.add_argument("--max-clips", type=int, default=None, help="at most this many clips (default: all of data.val)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per batch (default train.batch_size)")
    p.add_argument("--seed", type=int, default=0, help="seeds the subset modes' token draws and the random row")
    p.add_argument("--output-dir", default=None, help="default <train.output_dir>/teacher_fidelity")
    cli.add_options(p, "overrides")
    return p.parse_intermixed_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    from videohpm.config import load_tool_config  # imports torch: after parsing, --help stays fast

    with cli.config_errors():
        cfg, checkpoint = load_tool_config(args.config, args.overrides, require_checkpoint=True)
    from videohpm.tasks.teacher_fidelity import format_table, run_teacher_fidelity
    from videohpm.methods.hpm import parse_teacher_mode

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    with cli.exits(ValueError, prefix="error: --modes"):
        for m in modes:
            parse_teacher_mode(m)
    out = args.output_dir or os.path.join(str(cfg.train.output_dir), "teacher_fidelity")
    with cli.exits(ValueError, FileNotFoundError):  # ConfigError included
        res = run_teacher_fidelity(cfg, checkpoint, modes, output_dir=out, alpha=args.alpha,
                                   max_clips=args.max_clips, batch_size=args.batch_size, seed=args.seed)
    print(format_table(res))
    print(f"wrote {os.path.join(out, 'teacher_fidelity.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
