#!/usr/bin/env python
"""Per-patch reconstruction loss of a pre-training checkpoint on the hidden moving and static patches,
next to motion-blind predictions (a copy from the nearest frame where the place is visible, the
clip's temporal median over all frames — an oracle —, the clip's mean target); printed as JSON.

    python tools/pretext_check.py --config configs/demo/ssl/pretrain_hpm.yaml \\
        checkpoint=outputs/ssl_benchmark/seed0/hpm/pretrain/model_final.pth \\
        --list outputs/ssl_benchmark/data/val.csv --data-root outputs/ssl_benchmark/data/videos

If the model's loss on moving patches is not clearly below the copy's, the decoder does not place
the moving object (see :mod:`tools.lib.pretext_check`).
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
    p.add_argument("--config", required=True, help="the checkpoint's pre-training YAML")
    p.add_argument("--list", required=True, help="list file of the videos to read")
    p.add_argument("--data-root", default="", help="prefix of the list's relative paths")
    p.add_argument("--videos", type=int, default=32, help="first N videos of the list")
    p.add_argument("--masks", type=int, default=4, help="random masks averaged per video")
    p.add_argument("--threshold", type=float, default=0.15, help="voxel difference from the median that moves")
    p.add_argument("args", nargs="*", metavar="checkpoint=PATH | key=value")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    ckpt = [x.split("=", 1)[1] for x in a.args if x.startswith("checkpoint=")]
    if len(ckpt) != 1:
        print("error: give checkpoint=PATH", file=sys.stderr)
        return 2
    # imports torch: after parsing, --help stays fast
    from tools.lib.pretext_check import pretext_breakdown
    from videohpm.config import load_config

    cfg = load_config(a.config, [x for x in a.args if not x.startswith("checkpoint=")])
    names = [ln.split()[0] for ln in open(a.list) if ln.strip()][: a.videos]
    videos = [os.path.join(a.data_root, n) for n in names]
    print(json.dumps(pretext_breakdown(cfg, ckpt[0], videos, a.masks, a.threshold), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
