#!/usr/bin/env python
"""Multi-clip × multi-crop test of a fine-tuned (or linearly probed) model.

    # one process (CPU or one GPU)
    python tools/test.py --config configs/finetune/ssv2_vit_b.yaml checkpoint=outputs/ft/model_final.pth
    # all GPUs of a node: ranks share the videos, results are gathered and de-duplicated
    deepspeed --num_gpus 8 tools/test.py --config configs/finetune/k400_vit_b.yaml checkpoint=outputs/ft
    torchrun --nproc_per_node 8 tools/test.py --config ...     # or srun python tools/test.py ... (SLURM)
    # other views, VideoMAE V1's per-rank files for its `merge`, the model EMA
    python tools/test.py --config ... checkpoint=... data.test_num_clips=2 data.test_num_crops=3 \
        --videomae-txt --ema

Views default per data set (SSv2 2 clips × 3 crops, K400 5 × 3; `data.test_num_clips/crops`).
`checkpoint=` takes `model_final.pth`, an engine checkpoint folder (`<run>/checkpoints/epoch-0009`),
a run folder, or a VideoMAE V1/V2 / Hugging Face fine-tuned state dict. Writes
`predictions.csv`, `metrics.json` and `summary.md` (the paper's "GFLOPs×clips×crops" line) into
`--output-dir` (default `<train.output_dir>/test`). Other `section.key=value` override the YAML.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402
from videohpm.config import load_tool_config  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--config", required=True, help="the fine-tuning / linear-probing YAML config of the model")
    p.add_argument("--output-dir", default=None, help="where to write the results (default <train.output_dir>/test)")
    cli.add_options(p, "--batch-size", "--views-per-forward")
    p.add_argument("--ema", action="store_true", help="test the model EMA saved with the checkpoint")
    p.add_argument("--videomae-txt", action="store_true", help="also write VideoMAE V1's per-rank {rank}.txt files")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    cli.add_options(p, "--local_rank", "overrides")
    return p.parse_intermixed_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.launcher_env(args)
    with cli.config_errors():
        cfg, checkpoint = load_tool_config(args.config, args.overrides)
    from videohpm import distributed as vdist
    from videohpm.evaluation.runner import run_test

    out = args.output_dir or os.path.join(cfg.train.output_dir, "test")
    vdist.setup_logging(os.path.join(out, "test.log") if vdist.is_main_process() else None)
    with cli.exits(ValueError, FileNotFoundError):  # ConfigError included
        m = run_test(cfg, checkpoint, out, batch_size=args.batch_size, ema=args.ema,
                     videomae_txt=args.videomae_txt, flops=not args.no_flops,
                     max_views_per_forward=args.views_per_forward)
    if not m["num_videos"]:  # every video broken: there is no result, whatever metrics.json says
        raise cli.ToolError(f"error: no video could be evaluated ({m['num_broken']} broken, listed in "
                            f"{out}/metrics.json); check data.data_root and the list", code=1)
    if vdist.is_main_process():
        print(f"top-1 {m['top1']:.2f}  top-5 {m['top5']:.2f}  mean class {m['mean_class_acc']:.2f}  "
              f"({m['num_videos']} videos, {m['num_broken']} broken, {m['cost']['views']} GFLOPs×views)  → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
