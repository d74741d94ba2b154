#!/usr/bin/env python
"""Find the broken videos of a VideoMAE list file.

    python tools/check_videos.py data_lists/demo/ssv2/train.csv --data-root data/demo/ssv2/videos \\
        --workers 8 --out broken.csv

Writes the broken entries to --out (same list format) and their reasons to <out>.why; exits 1
when any video is broken.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("list", help="list file (<path> <label> per line)")
    p.add_argument("--data-root", default="", help="prefix for relative paths in the list")
    p.add_argument("--workers", type=int, default=4, help="worker processes")
    p.add_argument("--out", default="broken.csv", help="where to write the broken entries")
    p.add_argument("--backend", default="decord", choices=["decord", "pyav"])
    p.add_argument("--no-fallback", action="store_true", help="do not retry failures with the other backend")
    p.add_argument("--full", action="store_true", help="decode every frame (default: first, middle, last)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (default: refuse, before any work)")
    args = p.parse_args(argv)
    if not args.overwrite and any(os.path.exists(f) for f in (args.out, args.out + ".why")):
        print(f"error: --out {args.out} holds results already; nothing was changed: pass --overwrite to replace "
              "them, or choose another --out", file=sys.stderr)
        return 2
    from videohpm.data.check import check_list  # imports torch: after parsing, --help stays fast

    fallback = None if args.no_fallback else ("pyav" if args.backend == "decord" else "decord")
    broken = check_list(args.list, args.data_root, args.workers, args.backend, fallback, args.full, args.out)
    for b in broken:
        print(f"BROKEN {b.name}: {b.reason}")
    print(f"{len(broken)} broken video(s); written to {args.out} (reasons: {args.out}.why)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
