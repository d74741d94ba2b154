#!/usr/bin/env python
"""Build VideoMAE list files (train.csv / val.csv / test.csv [, classes.txt]).

    python tools/make_lists.py folder ROOT OUT_DIR [--val-ratio 0.2] [--seed 0]
        ROOT/<class>/.../<video>: one class per sub-folder (ids in sorted order, empty folders
        kept as classes with a warning), a stratified seeded validation split; paths relative
        to ROOT (data.data_root=ROOT); non-video files are listed in OUT_DIR/skipped.txt.
    python tools/make_lists.py ucf101 ANNOTATION_DIR OUT_DIR --split K [--video-dir UCF-101]
        ANNOTATION_DIR (ucfTrainTestlist) holds classInd.txt, trainlist0K.txt, testlist0K.txt.
    python tools/make_lists.py hmdb51 ANNOTATION_DIR OUT_DIR --split K [--video-dir hmdb51]
        ANNOTATION_DIR (testTrainMulti_7030_splits) holds <class>_test_splitK.txt (0/1/2 per video).
    python tools/make_lists.py ssv2 ANNOTATION_DIR OUT_DIR [--video-dir VIDEOS]
        ANNOTATION_DIR holds something-something-v2-{labels,train,validation}.json;
        lines are "<id>.webm <label>".
    python tools/make_lists.py k400 ANNOTATION_DIR OUT_DIR [--video-dir VIDEOS]
        ANNOTATION_DIR holds train.csv, validate.csv [, test.csv] (label,youtube_id,time_start,
        time_end,split); lines "<youtube_id>_<start:06d>_<end:06d>.mp4 <label>", sorted class ids.

With --video-dir, videos listed but missing on disk are reported (and written to
OUT_DIR/missing_<split>.txt); --drop-missing leaves them out of the lists. Paths with spaces are
written double-quoted. See data_lists/README.md for the formats.
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402

# What the tool writes into OUT_DIR (the lists of every data set it knows, and its reports).
LIST_FILES = ("train.csv", "val.csv", "test.csv", "classes.txt", "skipped.txt", "missing_*")


def parse_args(argv=None):
    p = cli.parser(__doc__, summary=True)
    p.add_argument("dataset", choices=["folder", "ucf101", "hmdb51", "ssv2", "k400"])
    p.add_argument("annotation_dir", help="folder: the video root; otherwise the annotation folder")
    p.add_argument("out_dir")
    p.add_argument("--val-ratio", type=float, default=0.2, help="folder: fraction of each class for val.csv")
    p.add_argument("--seed", type=int, default=0, help="folder: seed of the train/val split")
    p.add_argument("--extensions", default=None,
                   help="folder: comma-separated video extensions, case-insensitive (default: mp4, webm, avi, "
                        "mkv, mov and the other common containers)")
    p.add_argument("--no-empty-classes", action="store_true",
                   help="folder: refuse class folders without videos (default: keep them, with a warning)")
    p.add_argument("--split", type=int, default=1, help="ucf101 / hmdb51: official split 1, 2 or 3")
    p.add_argument("--video-dir", default=None, help="folder with the videos, to report missing ones")
    p.add_argument("--ext", default=None, help="ssv2 / k400 video extension (default .webm for ssv2, .mp4 for k400)")
    p.add_argument("--drop-missing", action="store_true", help="leave videos missing on disk out of the lists")
    p.add_argument("--class-subdirs", action="store_true", help="k400: videos stored as <label>/<name>.mp4")
    cli.add_overwrite(p)
    return p.parse_args(argv)


def build(args, out_dir: str):
    """Run the data set's list builder (`videohpm.data.lists` / `folder_lists`) into `out_dir`."""
    from videohpm.data.lists import build_k400_lists, build_ssv2_lists  # imports torch: not for --help
    from videohpm.data.folder_lists import VIDEO_EXTENSIONS, build_folder_lists, build_hmdb51_lists, build_ucf101_lists

    with cli.exits(FileNotFoundError, ValueError):
        if args.dataset == "folder":
            exts = [e.strip() for e in (args.extensions or ",".join(VIDEO_EXTENSIONS)).split(",") if e.strip()]
            return build_folder_lists(args.annotation_dir, out_dir, args.val_ratio, args.seed, exts,
                                      allow_empty=not args.no_empty_classes)
        if args.dataset == "ucf101":
            return build_ucf101_lists(args.annotation_dir, out_dir, args.split, args.video_dir, args.drop_missing)
        if args.dataset == "hmdb51":
            return build_hmdb51_lists(args.annotation_dir, out_dir, args.split, args.video_dir, args.drop_missing)
        if args.dataset == "ssv2":
            return build_ssv2_lists(args.annotation_dir, out_dir, args.video_dir, args.ext or ".webm",
                                    args.drop_missing)
        return build_k400_lists(args.annotation_dir, out_dir, args.video_dir, args.ext or ".mp4",
                                args.class_subdirs, args.drop_missing)


def build_into(args) -> object:
    """Build the lists aside and move them into OUT_DIR only when the build succeeded; the lists
    OUT_DIR held (with --overwrite) are removed then, so a failed build leaves them as they were."""
    out = os.path.abspath(args.out_dir)
    held = cli.held_results(out, LIST_FILES)
    cli.refuse_overwrite(f"OUT_DIR {args.out_dir}", held, args.overwrite)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".make_lists-", dir=os.path.dirname(out))
    try:
        report = build(args, tmp)
        for split, names in report.missing.items():
            if names:
                with open(os.path.join(tmp, f"missing_{split}.txt"), "w", encoding="utf-8") as f:
                    f.writelines(n + "\n" for n in names)
        os.makedirs(out, exist_ok=True)
        cli.remove_results(out, held)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.lists = {k: os.path.join(args.out_dir, os.path.relpath(v, tmp)) for k, v in report.lists.items()}
    return report


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    report = build_into(args)
    print(report.summary())
    for split, names in report.missing.items():
        if names:
            print(f"{split}: {len(names)} listed video(s) missing on disk -> "
                  f"{os.path.join(args.out_dir, f'missing_{split}.txt')}")
    if args.dataset in ("folder", "ucf101", "hmdb51"):
        root = os.path.abspath(args.annotation_dir) if args.dataset == "folder" else (args.video_dir or "<video folder>")
        hint = [f"data.num_classes={len(report.classes)}", f"data.data_root={root}"]
        hint += [f"data.{s}={report.lists[s]}" for s in ("train", "val", "test") if s in report.lists]
        print("use: data.dataset=generic " + " ".join(hint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
