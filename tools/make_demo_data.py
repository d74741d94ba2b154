#!/usr/bin/env python
"""Write the motion-centric demo data set (webm/SSv2 + mp4/K400 layouts, digit ImageFolder).

    python tools/make_demo_data.py data/demo [--seed 0] [--train-per-class 24] [--val-per-class 8] [--test-per-class 8]

Prints the list files and the data_root of each set (see videohpm/data/demo.py).
"""
import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-per-class", type=int, default=24)
    p.add_argument("--val-per-class", type=int, default=8)
    p.add_argument("--test-per-class", type=int, default=8,
                   help="held-out test videos per class (0: test.csv = val.csv, VideoMAE's SSv2 convention)")
    p.add_argument("--num-frames", type=int, default=32)
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    p.add_argument("--formats", default="ssv2,k400", help="comma-separated: ssv2 (webm), k400 (mp4)")
    p.add_argument("--no-images", action="store_true", help="skip the digit ImageFolder")
    p.add_argument("--tiny", action="store_true", help="1 train + 1 val + 1 test video per class (tests)")
    args = p.parse_args(argv)
    from videohpm.data.demo import make_demo_data  # imports torch: after parsing, --help stays fast

    t0 = time.time()
    info = make_demo_data(args.out_dir, seed=args.seed, train_per_class=args.train_per_class,
                          val_per_class=args.val_per_class,
                          test_per_class=args.test_per_class, num_frames=args.num_frames, size=args.size,
                          formats=[f for f in args.formats.split(",") if f], images=not args.no_images,
                          tiny=args.tiny)
    for fmt, lists in info.lists.items():
        print(f"{fmt}: data_root={info.video_dirs[fmt]} " + " ".join(f"{k}={v}" for k, v in lists.items()))
    for split, d in info.image_dirs.items():
        print(f"images {split}: {d}")
    print(f"{len(info.classes)} classes; written in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
