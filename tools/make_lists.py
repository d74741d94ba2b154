#!/usr/bin/env python
"""Build VideoMAE list files (train.csv / val.csv / test.csv) from official annotations.

    python tools/make_lists.py ssv2 ANNOTATION_DIR OUT_DIR [--video-dir VIDEOS]
        ANNOTATION_DIR holds something-something-v2-{labels,train,validation}.json;
        lines are "<id>.webm <label>".
    python tools/make_lists.py k400 ANNOTATION_DIR OUT_DIR [--video-dir VIDEOS]
        ANNOTATION_DIR holds train.csv, validate.csv [, test.csv] with the header
        label,youtube_id,time_start,time_end,split; lines are
        "<youtube_id>_<start:06d>_<end:06d>.mp4 <label>", ids from the sorted class names.

With --video-dir, videos listed but missing on disk are reported (and written to
OUT_DIR/missing_<split>.txt); --drop-missing leaves them out of the lists.
See data_lists/README.md for the formats.
"""
import argparse
import os
import sys

from videohpm.data.lists import build_k400_lists, build_ssv2_lists


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["ssv2", "k400"])
    p.add_argument("annotation_dir")
    p.add_argument("out_dir")
    p.add_argument("--video-dir", default=None, help="folder with the videos, to report missing ones")
    p.add_argument("--ext", default=None, help="video extension (default .webm for ssv2, .mp4 for k400)")
    p.add_argument("--drop-missing", action="store_true", help="leave videos missing on disk out of the lists")
    p.add_argument("--class-subdirs", action="store_true", help="k400: videos stored as <label>/<name>.mp4")
    args = p.parse_args(argv)
    if args.dataset == "ssv2":
        report = build_ssv2_lists(args.annotation_dir, args.out_dir, args.video_dir, args.ext or ".webm",
                                  args.drop_missing)
    else:
        report = build_k400_lists(args.annotation_dir, args.out_dir, args.video_dir, args.ext or ".mp4",
                                  args.class_subdirs, args.drop_missing)
    print(report.summary())
    for split, names in report.missing.items():
        if names:
            path = os.path.join(args.out_dir, f"missing_{split}.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(n + "\n" for n in names)
            print(f"{split}: {len(names)} listed video(s) missing on disk -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
