#!/usr/bin/env python
"""Top-k classes of your own videos from a fine-tuned checkpoint (the multi-view test's protocol).

    # a fine-tuning run folder: its saved config.yaml is used; files, folders and lists mix
    python tools/predict.py checkpoint=outputs/ft my_video.mp4 clips/ more_videos.txt
    # another config, SSv2 class names from the official labels JSON, top-3
    python tools/predict.py --config configs/finetune/ssv2_vit_b.yaml checkpoint=outputs/ft/model_final.pth \\
        --classes something-something-v2-labels.json --topk 3 videos/
    # all GPUs of a node: ranks share the videos, answers are gathered and de-duplicated
    deepspeed --num_gpus 8 tools/predict.py checkpoint=outputs/ft /data/unlabelled/

Inputs: video files, folders (searched recursively) and list files (.txt/.csv/.lst, relative to
`--data-root`, default `data.data_root`). Each video is decoded once for all its test views and
the softmax averaged over them, as `tools/test.py` does; an undecodable one gets a `BROKEN` line.

Class names: `--classes` (classes.txt or the SSv2 labels JSON), else `data.class_names`, else the
`classes.txt` beside `data.train`, else ids. `--config` defaults to the run folder's `config.yaml`,
else the checkpoint's own config. Writes `predictions.csv` / `.json` into `--output-dir` (default
`<train.output_dir>/predict`; an existing one needs `--overwrite`); exit 1 when no video could be
decoded (no file written). Other `key=value` override the config.
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
                   help="the fine-tuning / linear-probing YAML (default: config.yaml of the checkpoint's run folder)")
    p.add_argument("--classes", default=None, help="classes.txt (one name per line) or the SSv2 labels JSON")
    p.add_argument("--topk", type=int, default=5, help="classes per video (default 5)")
    p.add_argument("--output-dir", default=None, help="where to write the answers (default <train.output_dir>/predict)")
    cli.add_options(p, "--data-root", "--batch-size", "--views-per-forward")
    p.add_argument("--ema", action="store_true", help="the model EMA saved with the checkpoint")
    cli.add_overwrite(p)
    cli.add_options(p, "--local_rank", "args")
    return p.parse_intermixed_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.launcher_env(args, slurm=False)
    cfg, checkpoint, inputs = cli.video_tool_config(args)
    cli.require_inputs(inputs)
    from videohpm import distributed as vdist
    from videohpm.tasks.predict import PREDICTION_FILES, run_predict

    out = args.output_dir or os.path.join(cfg.train.output_dir, "predict")
    cli.refuse_overwrite(f"--output-dir {out}", cli.held_results(out, PREDICTION_FILES), args.overwrite)
    vdist.setup_logging(None)
    with cli.exits(ValueError, FileNotFoundError):  # ConfigError included
        res = run_predict(cfg, checkpoint, inputs, out, topk=args.topk, classes_file=args.classes,
                          data_root=args.data_root, batch_size=args.batch_size, ema=args.ema,
                          max_views_per_forward=args.views_per_forward, overwrite=args.overwrite)
    if res["num_broken"] == res["num_videos"]:
        raise cli.ToolError(f"error: none of the {res['num_videos']} videos could be decoded (BROKEN lines above); "
                            "check the paths (list paths join --data-root, default data.data_root); "
                            "nothing written", code=1)
    if vdist.is_main_process():
        print(f"{res['num_videos']} videos ({res['num_broken']} broken), {res['clips']}×{res['crops']} views, "
              f"class names: {res['class_names_source']}  → {res['csv']}, {res['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
