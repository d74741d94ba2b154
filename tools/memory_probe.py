#!/usr/bin/env python
"""Measure the memory (and, loosely, the time) of real training steps: the numbers of
docs/MEMORY.md "Memory and speed".

    # one configuration: build the run's model / recipe / optimizer / DeepSpeed engine exactly as
    # tools/train.py does, feed synthetic clips, run --steps optimizer steps, print one JSON line
    python tools/memory_probe.py step --config configs/pretrain/ssv2_vit_b_hpm.yaml --batch 2
    torchrun --nproc_per_node 2 tools/memory_probe.py step --config ... --batch 2 deepspeed.zero_stage=3
    # the whole table of docs/MEMORY.md (every configuration in a fresh process)
    python tools/memory_probe.py table --out outputs/memory.json

Memory is the peak of `engine.diagnostics.peak_memory_mb`: CUDA `max_memory_allocated` on a GPU,
else the process's peak RSS (for several ranks, the largest rank). `ready_mb` is the same reading
after everything is built, before the first step; `peak_mb − ready_mb` is what the steps add
(activations, gradients, optimizer state). Synthetic clips are used so that no decoder or data
loader is in the numbers; everything else (the HPM teacher, the loss predictor, mixup, ZeRO) is
the real step. Any `section.key=value` after the options overrides the config as in tools/train.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, config, extra overrides) of the per-clip table: fp32, 16 × 224², batch 1 and 2.
_MODELS = {
    "ViT-S pre-train (HPM)": ("configs/pretrain/ssv2_vit_b_hpm.yaml", ["model.name=pretrain_videomae_small_patch16_224"]),
    "ViT-B pre-train (HPM)": ("configs/pretrain/ssv2_vit_b_hpm.yaml", []),
    "ViT-S fine-tune": ("configs/finetune/ssv2_vit_b.yaml", ["model.name=vit_small_patch16_224"]),
    "ViT-B fine-tune": ("configs/finetune/ssv2_vit_b.yaml", []),
}
# Fine-tuning without mixup / cutmix (label smoothing stays): they need an even micro-batch and a
# batch of 1 is measured; their memory is that of one extra clip-sized blend, negligible here.
_NO_MIX = ["method.kwargs.mixup=0.0", "method.kwargs.cutmix=0.0"]
# The OOM ladder on ViT-B fine-tuning (the largest activations); its first rung, batch 2 without
# anything, is the per-clip table's "ViT-B fine-tune" batch-2 row. The ZeRO rungs use 2 ranks × batch
# 1 (the same clips per step as batch 2 on one rank) and compare with ZeRO-1 on the same 2 ranks.
_LADDER = [
    ("use_checkpoint, batch 2, 1 rank", 1, ["train.batch_size=2", "model.kwargs.use_checkpoint=true"]),
    ("use_checkpoint, 2 ranks x batch 1, ZeRO-1", 2, ["train.batch_size=1", "model.kwargs.use_checkpoint=true"]),
    ("use_checkpoint, 2 ranks x batch 1, ZeRO-2", 2, ["train.batch_size=1", "model.kwargs.use_checkpoint=true",
                                                     "deepspeed.config=configs/deepspeed/zero2.json"]),
    ("use_checkpoint, 2 ranks x batch 1, ZeRO-3", 2, ["train.batch_size=1", "model.kwargs.use_checkpoint=true",
                                                     "deepspeed.config=configs/deepspeed/zero3.json"]),
    ("use_checkpoint, batch 1 x accum 2, 1 rank", 1, ["train.batch_size=1", "train.accum_steps=2",
                                                      "model.kwargs.use_checkpoint=true"]),
]


def _build_engine(args):
    """The run's config, device, recipe and DeepSpeed engine, built as tools/train.py builds them."""
    import torch
    from omegaconf import OmegaConf

    from videohpm import distributed as vdist
    from videohpm.config import load_config, repo_root
    from videohpm.engine.build import build_mask_generator, build_model, build_recipe_from_config
    from videohpm.engine.deepspeed_setup import build_deepspeed_config, resolve_deepspeed_dict
    from videohpm.engine.optim import build_optimizer, build_param_groups

    vdist.apply_slurm_env()
    overrides = ["model.pretrained=null", "train.precision=fp32", "train.accum_steps=1", f"train.batch_size={args.batch}",
                 *args.overrides]
    cfg = load_config(args.config, overrides)
    device = vdist.init_distributed(cfg.train.dist_backend or None)
    torch.manual_seed(0)
    model = build_model(cfg)
    recipe = build_recipe_from_config(cfg, model, build_mask_generator(cfg))
    o, t = cfg.optim, cfg.train
    groups = build_param_groups(recipe, float(o.weight_decay), layer_decay=float(o.layer_decay),
                                no_weight_decay=list(o.no_weight_decay))
    for g in groups:
        g.pop("param_names", None)
    optimizer = build_optimizer(str(o.name), groups, 1e-4, float(o.weight_decay), betas=list(o.betas), eps=float(o.eps),
                                momentum=float(o.momentum))
    ds = resolve_deepspeed_dict(cfg.deepspeed.config, OmegaConf.to_container(cfg.deepspeed.extra, resolve=True),
                                cfg.deepspeed.zero_stage, base_dir=repo_root())
    ds_cfg = build_deepspeed_config(ds, int(t.batch_size), int(t.accum_steps), vdist.get_world_size(), "fp32",
                                    o.clip_grad, optimizer=str(o.name))
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=recipe, optimizer=optimizer, config=ds_cfg)
    if recipe.ema is not None:
        recipe.ema.to(device)
    return cfg, device, recipe, engine


def _synthetic_batches(cfg, device, split: str, rank: int):
    """A function returning one random micro-batch of clips (and labels when fine-tuning)."""
    import torch

    b, d = int(cfg.train.batch_size), cfg.data
    g = torch.Generator().manual_seed(rank)

    def batch():
        video = torch.randn(b, 3, int(d.num_frames), int(d.input_size), int(d.input_size), generator=g)
        out = {"video": video.to(device), "index": torch.arange(b, device=device)}
        if split == "train":
            out["label"] = torch.randint(0, int(d.num_classes), (b,), generator=g).to(device)
        return out

    return batch


def _timed_steps(engine, recipe, batch, steps: int, accum: int) -> list:
    """Wall seconds of each of `steps` optimizer steps of `accum` micro-batches."""
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        for _ in range(accum):
            out = engine(batch(), s / max(steps, 1))
            engine.backward(out["loss"])
            engine.step()
        recipe.on_step_end()  # the EMA teacher gathers ZeRO-3 parameters itself (methods.base.EmaTeacher)
        float(out["loss"].detach())  # the step's end (a sync on CUDA)
        times.append(time.perf_counter() - t0)
    return times


def _step(args) -> int:
    import torch

    from videohpm import distributed as vdist
    from videohpm.engine.diagnostics import peak_memory_mb

    cfg, device, recipe, engine = _build_engine(args)
    world, rank = vdist.get_world_size(), vdist.get_rank()
    stage = int(engine.zero_optimization_stage())
    b, a, d = int(cfg.train.batch_size), int(cfg.train.accum_steps), cfg.data
    batch = _synthetic_batches(cfg, device, recipe.train_split, rank)
    params = sum(p.numel() for p in recipe.parameters())
    ready = peak_memory_mb(device)
    times = _timed_steps(engine, recipe, batch, args.steps, a)
    peak = peak_memory_mb(device)
    rows = vdist.all_gather_object({"rank": rank, "ready_mb": ready, "peak_mb": peak, "step_s": times})
    if rank == 0:
        rec = {"config": args.config, "overrides": args.overrides, "model": cfg.model.name, "world": world,
               "zero": stage, "batch": b, "accum": a, "frames": int(d.num_frames), "size": int(d.input_size),
               "use_checkpoint": bool(cfg.model.kwargs.get("use_checkpoint", False)), "params_m": params / 1e6,
               "mem_kind": "cuda_max_allocated" if device.type == "cuda" else "rss_peak",
               "ready_mb": max(r["ready_mb"] for r in rows), "peak_mb": max(r["peak_mb"] for r in rows),
               "per_rank_peak_mb": [r["peak_mb"] for r in rows], "step_s": [r["step_s"] for r in rows][0],
               "threads": torch.get_num_threads()}
        print("MEMORY_PROBE " + json.dumps(rec), flush=True)
    vdist.barrier()
    return 0


def _launch(config: str, batch: int, world: int, overrides, steps: int, timeout: float):
    script = os.path.join(REPO, "tools", "memory_probe.py")
    args = ["step", "--config", config, "--batch", str(batch), "--steps", str(steps), *overrides]
    if world == 1:
        cmd = [sys.executable, script, *args]
    else:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
        cmd = [torchrun, "--nproc_per_node", str(world), "--master_addr", "127.0.0.1", "--master_port", str(port),
               script, *args]
    env = dict(os.environ, PYTHONPATH=REPO)
    t0 = time.time()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    for line in res.stdout.splitlines():
        if line.startswith("MEMORY_PROBE "):
            rec = json.loads(line[len("MEMORY_PROBE "):])
            rec["command"] = " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd)
            rec["wall_s"] = time.time() - t0
            return rec
    raise RuntimeError(f"{' '.join(cmd)} exited with {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")


def _table(args) -> int:
    rows = []
    def emit(kind, label, rec):
        rec.update(kind=kind, label=label)
        rows.append(rec)
        print(f"{kind:7s} {label:52s} batch {rec['batch']} × accum {rec['accum']} × {rec['world']} rank(s) "
              f"ZeRO-{rec['zero']} ckpt={rec['use_checkpoint']}: ready {rec['ready_mb']:.0f} MiB, peak "
              f"{rec['peak_mb']:.0f} MiB, step {min(rec['step_s']):.1f} s", flush=True)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)

    if "clip" in args.parts:
        for label, (config, extra) in _MODELS.items():
            if args.only and args.only not in label:
                continue
            extra = extra + (_NO_MIX if "finetune" in config else [])
            for batch in (1, 2):
                emit("clip", label, _launch(config, batch, 1, extra, args.steps, args.timeout))
    if "ladder" in args.parts:
        for label, world, extra in _LADDER:
            batch = int(next(x for x in extra if x.startswith("train.batch_size=")).split("=")[1])
            model = [f"model.name={args.ladder_model}"] if args.ladder_model else []
            emit("ladder", label, _launch("configs/finetune/ssv2_vit_b.yaml", batch, world,
                                          model + [x for x in extra if not x.startswith("train.batch_size=")] + _NO_MIX,
                                          args.steps, args.timeout))
    return 0


def main(argv=None) -> int:
    p = cli.parser(__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("step", help="measure one configuration (this process / these ranks)")
    s.add_argument("--config", required=True)
    s.add_argument("--batch", type=int, default=2, help="clips per rank per micro-batch (train.batch_size)")
    s.add_argument("--steps", type=int, default=1, help="optimizer steps to run")
    cli.add_options(s, "--local_rank", local_rank=argparse.SUPPRESS)
    cli.add_options(s, "overrides", overrides="key=value config overrides")
    tb = sub.add_parser("table", help="the per-clip table and the OOM ladder of docs/MEMORY.md")
    tb.add_argument("--parts", default="clip,ladder", help="clip, ladder or both (comma-separated)")
    tb.add_argument("--steps", type=int, default=1)
    tb.add_argument("--ladder-model", default="", help="model.name of the ladder (default the config's ViT-B)")
    tb.add_argument("--only", default="", help="only the per-clip rows whose label contains this (e.g. fine-tune)")
    tb.add_argument("--timeout", type=float, default=1800)
    tb.add_argument("--out", default=None, help="write the records as JSON here")
    args = p.parse_args(argv)
    return _step(args) if args.cmd == "step" else _table(args)


if __name__ == "__main__":
    sys.exit(main())
