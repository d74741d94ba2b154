#!/usr/bin/env python
"""Look at what HPM sees (HPM journal Fig. 2), or plot a run's training curves.

    # input / true loss / predicted loss / HPM mask at progress t/T / reconstruction
    python tools/visualize.py checkpoint=outputs/pre --input video.webm --progress 0.5 --out outputs/vis \\
        [--mp4] [--student] [--config configs/test/pretrain_hpm_tiny.yaml]
    # images: an image pre-training config and a .png / .jpg input
    # training curves (loss parts, lr, α_t) from the engine's JSON-lines log
    python tools/visualize.py --log outputs/pre/log.jsonl --out outputs/vis/curves.png

Writes `<stem>_p<progress>.png` (a grid: rows = panels, columns = frames) and an animated
`.gif` (or `.mp4`) with the panels side by side; existing figures are refused unless
`--overwrite`. `--config` defaults to the `config.yaml` of the checkpoint's run folder (else the
config stored in `model_final.pth`). Other `section.key=value` override the YAML (e.g.
`mask.kwargs.alpha_T=1.0`).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--config", help="pre-training YAML config (default: config.yaml of the checkpoint's run folder)")
    p.add_argument("--input", help="a video file or an image")
    p.add_argument("--progress", type=float, default=1.0, help="training progress t/T that sets α_t (Eq. 8)")
    p.add_argument("--start", type=int, default=0, help="first frame of the clip")
    p.add_argument("--loss-masks", type=int, default=10, help="random masks averaged for the true loss map")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--student", action="store_true", help="predict losses with the student, not the EMA teacher")
    p.add_argument("--mp4", action="store_true", help="write an MP4 instead of a GIF")
    p.add_argument("--log", help="plot this log.jsonl instead (no model needed)")
    p.add_argument("--out", required=True, help="output folder (figures) or .png path (--log)")
    cli.add_overwrite(p)
    cli.add_options(p, "overrides")
    return p.parse_intermixed_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.log:
        from videohpm.evaluation.visualize import plot_training_curves

        out = args.out if args.out.endswith(".png") else os.path.join(args.out, "curves.png")
        cli.refuse_overwrite(f"--out {args.out}", [out] if os.path.exists(out) else [], args.overwrite)
        panels = plot_training_curves(args.log, out)
        print(f"wrote {out}: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in panels.items()))
        return 0
    if not args.input:
        raise cli.ToolError("error: give --input and one checkpoint=<path> (or --log)")
    stem = f"{os.path.splitext(os.path.basename(args.input))[0]}_p{args.progress:.2f}"
    figures = [stem + ".png", stem + (".mp4" if args.mp4 else ".gif")]
    cli.refuse_overwrite(f"--out {args.out}", cli.held_results(args.out, figures), args.overwrite)
    from videohpm.data.video import VideoDecodeError
    from videohpm.tasks.run_config import tool_config
    from videohpm.tasks.visualize import run_visualize

    # a ConfigError, too, is reported as "error: ..."; an undecodable --input is bad input (exit 2)
    with cli.exits(ValueError, FileNotFoundError, VideoDecodeError):
        cfg, checkpoint = tool_config(args.config, args.overrides)
        files = run_visualize(cfg, checkpoint, args.input, args.out, progress=args.progress,
                              use_teacher=not args.student, num_loss_masks=args.loss_masks, seed=args.seed,
                              fmt="mp4" if args.mp4 else "gif", start=args.start)
    print("wrote " + ", ".join(files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
