#!/usr/bin/env python
"""`make demo`: the bundled demo end to end on CPU (or GPU) — demo data, HPM pre-training of a small
ViT through tools/train.py (DeepSpeed), fine-tuning, the multi-view test, the same for image mode
(single-frame clips), training curves, Fig. 2-style maps, and outputs/demo/REPORT.md.

    python tools/demo.py                     # the full demo (≈15–20 min on 2 CPU cores)
    python tools/demo.py --ranks 2           # two DeepSpeed CPU ranks per training stage
    python tools/demo.py --smoke --out /tmp/d  # test-sized run (tiny data, 1 epoch), seconds
    python tools/demo.py --overwrite         # start again from an empty outputs/demo

Re-running continues: finished stages with unchanged settings are skipped, an interrupted training
stage resumes from its newest checkpoint, a stage whose settings changed is redone. Every stage
prints what it does; tools' output (progress bars included) is also kept in <out>/logs/.
See docs/DEMO.md and tools/lib/demo.py.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402
from tools.lib.demo import run_demo  # noqa: E402
from tools.lib.demo_stages import DemoOptions  # noqa: E402
from tools.lib.stages import DemoError  # noqa: E402


def parse_epochs(items) -> dict:
    """`--epochs video_pretrain=10 video_finetune=8` → dict (stage names of DemoOptions.epochs)."""
    known = {"video_pretrain", "video_finetune", "image_pretrain", "image_finetune"}
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if key not in known or not value.isdigit():
            raise SystemExit(f"--epochs: expected one of {sorted(known)}=N, got {item!r}")
        out[key] = int(value)
    return out


@cli.main
def main(argv=None) -> int:
    p = cli.parser(__doc__)
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch (tests); numbers mean nothing")
    p.add_argument("--ranks", type=int, default=1, help="DeepSpeed ranks per training stage (CPU: processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (0 = cores / ranks)")
    p.add_argument("--in-process", action="store_true", help="run the tools in this process (1 rank; faster start)")
    p.add_argument("--overwrite", action="store_true", help="delete the previous output folder first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-images", action="store_true", help="skip image mode")
    p.add_argument("--num-vis", type=int, default=4, help="validation videos in the Fig. 2-style figure")
    p.add_argument("--epochs", nargs="*", metavar="STAGE=N", help="e.g. video_pretrain=10 (shorter/longer runs)")
    args = p.parse_args(argv)
    if args.ranks < 1:
        p.error("--ranks must be >= 1")
    # after parsing (it imports torch); loads PyAV before decord, see videohpm/data/video.py
    import videohpm.data  # noqa: F401

    opts = DemoOptions(out_dir=args.out, smoke=args.smoke, ranks=args.ranks, threads=args.threads,
                       in_process=args.in_process, overwrite=args.overwrite, seed=args.seed,
                       images=not args.no_images, num_vis=args.num_vis, epochs=parse_epochs(args.epochs))
    with cli.exits(DemoError, prefix="\ndemo FAILED", code=1):
        run_demo(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
