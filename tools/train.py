#!/usr/bin/env python
"""Pre-train, fine-tune or linearly probe from a YAML config.

    # one process (CPU or one GPU)
    python tools/train.py --config configs/pretrain/ssv2_vit_b_hpm.yaml train.output_dir=outputs/x
    # all GPUs of a node (NCCL), or CPU processes (gloo) with --num_gpus N on a CPU machine
    deepspeed --num_gpus 8 tools/train.py --config configs/pretrain/ssv2_vit_b_hpm.yaml
    # several nodes
    deepspeed --hostfile hosts.txt tools/train.py --config configs/pretrain/k400_vit_b_hpm.yaml
    # torchrun, or SLURM (one task per GPU; ranks from SLURM_PROCID / NTASKS / LOCALID / NODELIST)
    torchrun --nproc_per_node 8 tools/train.py --config configs/pretrain/ssv2_vit_b_hpm.yaml
    srun python tools/train.py --config ...        # or: sbatch tools/slurm/train.sbatch CONFIG ...
    # continue a killed run from its newest complete checkpoint
    python tools/train.py --config ... train.resume=auto
    # linear probing (SGD, supplement Table S3); model_final.pth keeps BN + head for tools/test.py
    python tools/train.py --config configs/finetune/in1k_vit_b_linprobe.yaml model.pretrained=<run>/model_final.pth
    # pre-training with the k-NN health metric every 10 epochs (needs labelled data.train/val)
    python tools/train.py --config ... train.knn_every=10 data.val=... data.num_classes=174

Any `section.key=value` after the options overrides the YAML (unknown keys are errors). The
resolved config is saved as `<train.output_dir>/config.yaml`.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--config", required=True, help="YAML run config (may use _base_: other.yaml)")
    cli.add_options(p, "--local_rank", local_rank="set by the deepspeed launcher (the engine reads $LOCAL_RANK)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    cli.add_options(p, "overrides", overrides="key=value overrides, e.g. train.epochs=10")
    return p.parse_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.launcher_env(args)
    from videohpm.config import ConfigError, load_config  # imports torch: after parsing, --help stays fast

    with cli.exits(ConfigError, prefix="config error"):
        # the values are checked by the trainer, in one report with the weights and the data
        cfg = load_config(args.config, args.overrides, check=args.print_config)
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        return 0
    from videohpm.engine import NonFiniteLossError
    from videohpm.tasks.train import train  # the engine's train with the config's k-NN hook

    # a non-finite loss: the run failed (exit 1), its checkpoints stay
    with cli.exits(NonFiniteLossError, code=1), cli.exits(ConfigError, prefix="config error"):
        train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
