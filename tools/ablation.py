#!/usr/bin/env python
"""`make demo-ablation`: HPM journal Table 12 on the demo data — fine-tuning top-1 (mean ± std over
seeds) after no pre-training, MAE with tube masks, MAE with per-frame random masks, HPM's L_pred
with random masks, and full HPM (learn-to-mask, easy-to-hard), all with the demo's video budget;
plus, per row, the k-NN top-1 of the frozen encoder (`tools/knn.py`) and the top-1 after
fine-tuning on a few labelled videos per class (`--labels-per-class`, half the steps).

    python tools/ablation.py                          # 5 variants × seeds 0 1 2 → outputs/demo/ablation
    python tools/ablation.py --seeds 0 --variants scratch hpm
    python tools/ablation.py --smoke --out /tmp/d     # test-sized

Shares the demo data (and its folder) with tools/demo.py; re-running skips finished runs and
resumes interrupted ones. Writes <out>/ablation/ABLATION.md and ablation.json. See docs/DEMO.md.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402
from tools.lib.ablation import ABLATION_VARIANTS, run_ablation  # noqa: E402
from tools.lib.demo_stages import DemoOptions  # noqa: E402
from tools.lib.stages import DemoError  # noqa: E402


@cli.main
def main(argv=None) -> int:
    names = [v.name for v in ABLATION_VARIANTS]
    p = cli.parser(__doc__)
    p.add_argument("--out", default="outputs/demo", help="demo output folder (results in <out>/ablation)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=names, default=None, help=f"subset of {names}")
    p.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch (tests)")
    p.add_argument("--ranks", type=int, default=1, help="DeepSpeed ranks per training stage")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (0 = cores / ranks)")
    p.add_argument("--in-process", action="store_true", help="run the tools in this process (1 rank)")
    p.add_argument("--overwrite", action="store_true", help="delete the previous output folder first")
    p.add_argument("--labels-per-class", type=int, default=6,
                   help="also fine-tune every row on this many training videos per class, half the steps (0 = skip)")
    args = p.parse_args(argv)
    # after parsing (it imports torch); loads PyAV before decord, see videohpm/data/video.py
    import videohpm.data  # noqa: F401

    opts = DemoOptions(out_dir=args.out, smoke=args.smoke, ranks=args.ranks, threads=args.threads,
                       in_process=args.in_process, overwrite=args.overwrite)
    with cli.exits(DemoError, prefix="\nablation FAILED", code=1):
        run_ablation(opts, seeds=args.seeds, variants=args.variants, labels_per_class=args.labels_per_class)
    return 0


if __name__ == "__main__":
    sys.exit(main())
