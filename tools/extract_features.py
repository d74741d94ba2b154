#!/usr/bin/env python
"""Frozen encoder features of a checkpoint, saved as .npy shards plus an index CSV.

    # a pre-training run's encoder on a list (labels, if the list has them, go into index.csv)
    python tools/extract_features.py checkpoint=outputs/pt/model_final.pth data_lists/ssv2/val.csv \\
        --output-dir feats/val
    # HPM's EMA teacher, one feature per time slice (keeps the temporal order), a folder of videos
    python tools/extract_features.py checkpoint=outputs/pt --teacher --pool time my_videos/ --output-dir feats/mine
    # all tokens, all GPUs of a node: each rank writes its own shards, rank 0 the shared index
    deepspeed --num_gpus 8 tools/extract_features.py checkpoint=outputs/pt --pool tokens list.txt --output-dir f

`--pool mean`: `[D]` per video, the mean over all tokens (exactly what tools/knn.py uses, before
its ℓ2 normalization); `time`: `[T', D]`, the mean per time slice in temporal order; `tokens`:
`[N, D]`, all tokens (time-major). One centre clip and crop per video (the validation transform,
as tools/knn.py). Inputs: video files, folders (recursive) and list files, as tools/predict.py.
`--config` defaults to the `config.yaml` of the checkpoint's run folder (else the config stored
in the checkpoint). Writes
`features-r<rank>-<k>.npy`, `index.csv` (video, path, status, error, label, shard, row) and
`features.json` into `--output-dir` (a folder that holds features is refused unless
`--overwrite`); broken videos get `status=broken` and no row. Exit 1 when no video could be
decoded (then nothing is written). Read them back with `videohpm.evaluation.features.load_features`.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--config", default=None,
                   help="the model's pre-training or fine-tuning YAML (default: config.yaml of the checkpoint's run)")
    p.add_argument("--output-dir", required=True, help="folder for the shards and index.csv")
    p.add_argument("--pool", default="mean", choices=("mean", "time", "tokens"), help="what to keep per video")
    cli.add_options(p, "--teacher", "--random-init", "--data-root", "--batch-size")
    p.add_argument("--shard-rows", type=int, default=0, help="videos per .npy shard (default: up to 256 MiB each)")
    cli.add_overwrite(p)
    cli.add_options(p, "--local_rank", "args")
    return p.parse_intermixed_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.launcher_env(args, slurm=False)
    cli.require_config_for_random_init(args)
    cfg, checkpoint, inputs = cli.video_tool_config(args, require_checkpoint=not args.random_init)
    cli.refuse_random_init_checkpoint(args, checkpoint)
    cli.require_inputs(inputs)
    from videohpm import distributed as vdist
    from videohpm.tasks.extract_features import held_features, run_extract

    cli.refuse_overwrite(f"--output-dir {args.output_dir}", held_features(args.output_dir), args.overwrite)
    vdist.setup_logging(None)
    with cli.exits(ValueError, FileNotFoundError, FileExistsError):  # ConfigError included
        meta = run_extract(cfg, checkpoint, inputs, args.output_dir, pool=args.pool, teacher=args.teacher,
                           data_root=args.data_root, batch_size=args.batch_size, shard_rows=args.shard_rows,
                           overwrite=args.overwrite)
    if meta["num_broken"] == meta["num_videos"]:
        raise cli.ToolError(f"error: none of the {meta['num_videos']} videos could be decoded; check the paths "
                            "(list paths join --data-root, default data.data_root); nothing written", code=1)
    if vdist.is_main_process():
        print(f"{meta['num_videos']} videos ({meta['num_broken']} broken) → {len(meta['shards'])} shard(s) of "
              f"{args.pool} features {meta['shape']} in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
