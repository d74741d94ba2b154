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
    p.add_argument("--config", default=None,
                   help="the checkpoint's pre-training YAML (default: config.yaml of its run folder)")
    p.add_argument("--list", required=True, help="list file of the videos to read")
    p.add_argument("--data-root", default="", help="prefix of the list's relative paths")
    p.add_argument("--videos", type=int, default=32, help="first N videos of the list")
    p.add_argument("--masks", type=int, default=4, help="random masks per video")
    p.add_argument("--threshold", type=float, default=0.15, help="voxel difference from the median that moves")
    p.add_argument("args", nargs="*", metavar="checkpoint=PATH | key=value")
    return p.parse_args(argv)


@cli.main
def main(argv=None) -> int:
    a = parse_args(argv)
    problems = [f"--{k} must be at least 1, got {v}" for k, v in (("videos", a.videos), ("masks", a.masks)) if v < 1]
    if not 0.0 < a.threshold < 1.0:
        problems.append(f"--threshold is a difference of pixel values in [0, 1], got {a.threshold}")
    # imports torch: after parsing, --help stays fast
    from tools.lib.pretext_check import pretext_breakdown
    from videohpm.config import ConfigError
    from videohpm.data.lists import ListFormatError, read_list
    from videohpm.tasks.run_config import tool_config

    cfg = checkpoint = None
    try:
        cfg, checkpoint = tool_config(a.config, a.args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        problems.append(str(e))
    videos = []
    try:
        videos = list(read_list(a.list, a.data_root).paths[: max(a.videos, 0)])
    except (FileNotFoundError, ListFormatError) as e:
        problems.append(str(e))
    missing = [v for v in videos if not os.path.isfile(v)]
    if missing:
        problems.append(f"{len(missing)} of the {len(videos)} videos read are missing: "
                        + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    if problems:
        raise cli.ToolError("error: " + "\n       ".join(problems))
    with cli.exits(ValueError, RuntimeError):
        result = pretext_breakdown(cfg, checkpoint, videos, a.masks, a.threshold)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
