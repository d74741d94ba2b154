#!/usr/bin/env python
"""Re-encode the videos of a list to a smaller short side and write the new list.

    python tools/resize_videos.py data_lists/k400/train.csv data/k400_320p --data-root data/k400/videos \\
        --short-side 320 --workers 16 [--to mp4]

Writes OUT_DIR/<sub-folders>/<video> (PyAV: every frame and its timestamp kept, so fps, duration
and frame count are the source's; the short side becomes --short-side, the long side keeps the
aspect ratio, rounded to even), the new list OUT_DIR/<list name> (or --out-list; use
data.data_root=OUT_DIR) and OUT_DIR/<list stem>_broken.txt (<path>\t<reason> for each video that
could not be read; they are left out of the new list). Re-running the same command skips the
videos already done (outputs are renamed into place only when complete), so a killed run
resumes. Exit status 1 when any video is broken, 2 on bad arguments.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402


@cli.main
def main(argv=None) -> int:
    p = cli.parser(__doc__, summary=True)
    p.add_argument("list", help="list file (<path> <label> or <path> <start> <total> per line)")
    p.add_argument("out_dir", help="folder for the re-encoded videos and the new list")
    p.add_argument("--short-side", type=int, default=320, help="new short side in pixels (even; default 320)")
    p.add_argument("--workers", type=int, default=4, help="worker processes")
    p.add_argument("--to", default=None, metavar="{mp4,webm,mkv}",
                   help="container/codec of every output (mp4 = H.264, webm = VP9); default: keep each video's")
    p.add_argument("--data-root", default="", help="prefix for relative paths in the list")
    p.add_argument("--out-list", default=None, help="where to write the new list (default OUT_DIR/<list name>)")
    p.add_argument("--crf", type=int, default=23, help="x264 constant rate factor (VP9: crf + 9)")
    p.add_argument("--preset", default="medium", help="x264 preset (ultrafast ... veryslow)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from videohpm.data.resize import TARGETS, resize_list  # imports torch: after parsing, --help stays fast

    if args.to is not None and args.to not in TARGETS:
        p.error(f"argument --to: invalid choice: {args.to!r} (choose from {', '.join(TARGETS)})")
    with cli.exits(FileNotFoundError, ValueError):
        report = resize_list(args.list, args.out_dir, args.short_side, args.workers, args.to, args.data_root,
                             args.out_list, args.crf, args.preset, progress=not args.no_progress)
    for r in report.results:
        if r.status == "broken":
            print(f"BROKEN {r.src}: {r.reason}")
    print(report.summary())
    return 1 if report.count("broken") else 0


if __name__ == "__main__":
    sys.exit(main())
