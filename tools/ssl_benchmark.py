#!/usr/bin/env python
"""`make benchmark-ssl`: the data-efficiency benchmark — does pre-training pay off when labels are
scarce? Every row of HPM journal Table 12 (no pre-training, MAE tube, MAE per-frame random, HPM L_pred
with random masks, HPM learn-to-mask; plus HPM's cheap lowres:2 teacher at the same steps and at the
full teacher's wall time, and AdaMAE's sampler) is pre-trained with the same step budget on an unlabelled
pool, then probed (frozen, time kept) and fine-tuned (LP-FT) on 5 / 25 labels per class, 3 seeds.

    python tools/ssl_benchmark.py                              # the full run → outputs/ssl_benchmark
    python tools/ssl_benchmark.py --eval-split val --out o/v   # choose settings: never reads the test split
    python tools/ssl_benchmark.py --seeds 0 --rows scratch hpm --labels-per-class 5
    python tools/ssl_benchmark.py --smoke --out /tmp/s         # test-sized, about a minute
    # more rows next to a finished run (same settings and seeds, checked; rows joined by name):
    python tools/ssl_benchmark.py --rows hpm_lowres2 hpm_lowres2_eqtime --merge docs/evidence/ssl_benchmark_lpft_results.json
    python tools/ssl_benchmark.py --rows adamae --jobs 3 --merge docs/evidence/ssl_benchmark_lpft_results.json
    # your own labelled list-file data set (the pool defaults to data.train):
    python tools/ssl_benchmark.py data.train=lists/train.csv data.val=lists/val.csv \\
        data.test=lists/test.csv data.num_classes=10 data.data_root=/videos --pool lists/unlabelled.csv

Re-running continues (finished stages skipped, an interrupted training resumed); a folder holding a run
with other settings is refused. Writes <out>/results.json and <out>/RESULTS.md; the model and recipes
are configs/demo/ssl/*.yaml (32×32, 8 frames). See docs/EVIDENCE.md and tools/lib/ssl_benchmark.py.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib.stages import DemoError  # noqa: E402
from tools.lib.ssl_benchmark import SSL_ROWS, SSLOptions, run_ssl_benchmark  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    d = SSLOptions()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=d.out_dir, help="output folder")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    p.add_argument("--rows", nargs="+", choices=[r.name for r in SSL_ROWS], default=None, help="rows to run (default: the five of HPM journal Table 12; the others by name)")
    p.add_argument("--labels-per-class", type=int, nargs="+", default=list(d.labels_per_class))
    p.add_argument("--eval-split", choices=("val", "test"), default=d.eval_split,
                   help="split the protocols are scored on (val while choosing settings)")
    p.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps)
    p.add_argument("--finetune-steps", type=int, default=d.finetune_steps)
    p.add_argument("--pool-per-class", type=int, default=d.pool_per_class, help="generated pool size per class")
    p.add_argument("--test-per-class", type=int, default=d.test_per_class, help="generated test size per class")
    p.add_argument("--jobs", type=int, default=d.jobs, help="chains at a time (one process, one thread each)")
    p.add_argument("--pool", default=None, help="unlabelled list for pre-training (default data.train)")
    p.add_argument("--subprocess", action="store_true", help="run every tool as a subprocess")
    p.add_argument("--smoke", action="store_true", help="tiny data and a few steps (tests)")
    p.add_argument("--overwrite", action="store_true", help="delete the previous benchmark folder first")
    p.add_argument("--merge", nargs="+", default=[], metavar="RESULTS_JSON",
                   help="results.json of other runs with the same settings: their other rows join the table")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="data.* keys name a list-file data set; train.* / optim.* keys go to every training")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    data = [o for o in args.overrides if o.startswith("data.")]
    extra = [o for o in args.overrides if not o.startswith("data.")]
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: expected key=value, got {bad}", file=sys.stderr)
        return 2
    # after parsing (it imports torch); loads PyAV before decord, see videohpm/data/video.py
    import videohpm.data  # noqa: F401

    opts = SSLOptions(out_dir=args.out, seeds=args.seeds, rows=args.rows, labels_per_class=args.labels_per_class,
                      eval_split=args.eval_split, pretrain_steps=args.pretrain_steps,
                      finetune_steps=args.finetune_steps, pool_per_class=args.pool_per_class,
                      test_per_class=args.test_per_class, jobs=args.jobs, data=data, pool=args.pool,
                      smoke=args.smoke, in_process=not args.subprocess, overwrite=args.overwrite, extra=extra,
                      merge=args.merge)
    if args.smoke:
        opts.pretrain_steps, opts.finetune_steps = min(opts.pretrain_steps, 4), min(opts.finetune_steps, 4)
    try:
        run_ssl_benchmark(opts)
    except DemoError as e:
        print(f"\nbenchmark FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
