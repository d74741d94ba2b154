#!/usr/bin/env python
"""Multi-clip × multi-crop test of a fine-tuned (or linearly probed) model.

    # one process (CPU or one GPU)
    python tools/test.py checkpoint=outputs/ft         # a run folder: its config.yaml is the config
    python tools/test.py --config configs/finetune/ssv2_vit_b.yaml checkpoint=outputs/ft/model_final.pth
    # all GPUs of a node: ranks share the videos, results are gathered and de-duplicated
    deepspeed --num_gpus 8 tools/test.py checkpoint=outputs/ft
    torchrun --nproc_per_node 8 tools/test.py checkpoint=outputs/ft   # or srun python tools/test.py ... (SLURM)
    # other views, VideoMAE V1's per-rank files for its `merge`, the model EMA, replacing a former test
    python tools/test.py checkpoint=outputs/ft data.test_num_clips=2 data.test_num_crops=3 \\
        --videomae-txt --ema --overwrite

Views default per data set (SSv2 2 clips × 3 crops, K400 5 × 3; `data.test_num_clips/crops`).
`checkpoint=` takes `model_final.pth`, an engine checkpoint folder (`<run>/checkpoints/epoch-0009`),
a run folder, or a VideoMAE V1/V2 / Hugging Face fine-tuned state dict. `--config` defaults to the
`config.yaml` of the checkpoint's run folder, else the config stored in `model_final.pth`. Writes
`predictions.csv`, `metrics.json` and `summary.md` (the paper's "GFLOPs×clips×crops" line) into
`--output-dir` (default `<train.output_dir>/test`); a folder that holds them is refused unless
`--overwrite`. Exit 1 when no video could be evaluated (then nothing is written but test.log).
Other `section.key=value` override the YAML.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402

# What a test writes into its folder: the results, and what --overwrite also clears.
RESULTS = ("metrics.json", "predictions.csv", "summary.md")
CLEARED = RESULTS + ("videomae", "test.log*")


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--config", default=None,
                   help="the fine-tuning / linear-probing YAML (default: config.yaml of the checkpoint's run folder)")
    p.add_argument("--output-dir", default=None, help="where to write the results (default <train.output_dir>/test)")
    cli.add_options(p, "--batch-size", "--views-per-forward")
    p.add_argument("--ema", action="store_true", help="test the model EMA saved with the checkpoint")
    p.add_argument("--videomae-txt", action="store_true", help="also write VideoMAE V1's per-rank {rank}.txt files")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    cli.add_overwrite(p)
    cli.add_options(p, "--local_rank", "overrides")
    return p.parse_intermixed_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.launcher_env(args)
    from videohpm import distributed as vdist  # imports torch: after parsing, --help stays fast
    from videohpm.tasks.run_config import tool_config
    from videohpm.tasks.test import run_test

    with cli.config_errors():
        cfg, checkpoint = tool_config(args.config, args.overrides)
    out = args.output_dir or os.path.join(cfg.train.output_dir, "test")
    cli.refuse_overwrite(f"--output-dir {out}", cli.held_results(out, RESULTS), args.overwrite)
    vdist.setup_logging(None)

    checks_passed = cli.results_opener(out, CLEARED, args.overwrite, "test.log")  # the checkpoint fits and the list is readable: now write

    with cli.exits(ValueError, FileNotFoundError):  # ConfigError included
        m = run_test(cfg, checkpoint, out, batch_size=args.batch_size, ema=args.ema,
                     videomae_txt=args.videomae_txt, flops=not args.no_flops,
                     max_views_per_forward=args.views_per_forward, on_checks_passed=checks_passed)
    if not m["num_videos"]:  # every video broken: no result, and no result file blocks the rerun
        shown = "; ".join(f"{b['video_id']}: {b['error']}" for b in m["broken_videos"][:3])
        raise cli.ToolError(f"error: no video could be evaluated ({m['num_broken']} broken, e.g. {shown}); "
                            "check data.data_root and the list (nothing written but test.log)", code=1)
    if vdist.is_main_process():
        print(f"top-1 {m['top1']:.2f}  top-5 {m['top5']:.2f}  mean class {m['mean_class_acc']:.2f}  "
              f"({m['num_videos']} videos, {m['num_broken']} broken, {m['cost']['views']} GFLOPs×views)  → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
