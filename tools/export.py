#!/usr/bin/env python
"""Export a checkpoint for other libraries: Hugging Face transformers, VideoMAE V1, timm.

    # Hugging Face folder for VideoMAEFor*.from_pretrained(DIR); class names fill id2label
    python tools/export.py --format hf checkpoint=outputs/ft/model_final.pth --out exports/ft-hf --classes classes.txt
    # VideoMAE V1 layout ({"model": state_dict}), strict-loadable by the official models
    python tools/export.py --format videomae checkpoint=outputs/pre --out exports/pre-v1.pth
    # an image-mode encoder as a timm ViT backbone (ViTDet / UperNet pipelines):
    # timm.create_model("local-dir:exports/img-timm", pretrained=True); pytorch_model.bin is the state dict
    python tools/export.py --format timm checkpoint=outputs/demo/image/pretrain --out exports/img-timm
    # HPM's EMA teacher instead of the student
    python tools/export.py --format hf checkpoint=outputs/pre --teacher --out exports/pre-teacher-hf
    # the official HPM image layout, loss predictor included (--format mae: MAE's, without it)
    python tools/export.py --format hpm checkpoint=outputs/pretrain/in1k_vit_b_hpm_200e --out exports/hpm.pth

`checkpoint=` takes what `tools/test.py` takes; every key is checked before anything is written.
`--config` defaults to the run folder's `config.yaml`, else the checkpoint's own; `key=value`
words override it. An existing `--out` needs `--overwrite`; the export is renamed into place.
Class names: `--classes`, else the run's class list. The hf processor config preprocesses as the
run's test view (one clip, one crop). Parts a format cannot hold are refused with their names
(layer scale or [CLS] to HF, a video model to timm; d_ψ only in `--format hpm`).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import cli  # noqa: E402

FORMATS = ("hf", "videomae", "timm", "hpm", "mae")


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--format", required=True, choices=FORMATS, help="hf | videomae | timm | hpm | mae")
    p.add_argument("--out", required=True, help="output folder (hf, timm) or file (videomae); must not exist")
    p.add_argument("--config", default=None,
                   help="the model's YAML config (default: config.yaml of the checkpoint's run folder)")
    p.add_argument("--teacher", action="store_true", help="export the EMA teacher saved with the checkpoint (HPM)")
    p.add_argument("--classes", default=None, help="hf: classes.txt or SSv2 labels JSON for id2label")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (default: refuse, before any work)")
    cli.add_options(p, "overrides")
    return p.parse_intermixed_args(argv)


@cli.main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.classes is not None and args.format != "hf":
        raise cli.ToolError(f"error: --classes: only --format hf stores class names (id2label), not {args.format}")
    if os.path.lexists(args.out) and not args.overwrite:  # before any work
        raise cli.ToolError(f"error: --out {args.out}: already exists; pass --overwrite to replace it, "
                            "or pick a new path")
    if args.overwrite and os.path.isdir(args.out) and not os.path.isfile(os.path.join(args.out, "config.json")):
        raise cli.ToolError(f"error: --out {args.out}: a folder that is no export (no config.json); "
                            "--overwrite replaces exports only")
    from videohpm.tasks.export_weights import hf_processor_config
    from videohpm.tasks.weights import load_for_export
    from videohpm.tasks.predict import resolve_class_names
    from videohpm.tasks.run_config import tool_config
    from videohpm.models.formats import write_export

    with cli.config_errors():
        cfg, checkpoint = tool_config(args.config, args.overrides)
    with cli.config_errors(), cli.exits(FileExistsError):
        model = load_for_export(cfg, checkpoint, teacher=args.teacher)
        names = None
        if not hasattr(model, "decoder") and args.format == "hf":
            names, _ = resolve_class_names(cfg, args.classes, model.num_classes)
        elif args.classes is not None:
            raise ValueError("--classes: a pre-training model has no classes")
        processor = hf_processor_config(cfg) if args.format == "hf" else None
        files = write_export(model, args.format, args.out, class_names=names, overwrite=args.overwrite,
                             processor=processor)
    print(f"exported {'the EMA teacher of ' if args.teacher else ''}{checkpoint} as {args.format} → {args.out}")
    for f in files:
        print(f"  {f}")
    hint = {"hf": f"transformers: VideoMAEFor{'PreTraining' if hasattr(model, 'decoder') else 'VideoClassification'}"
                  f".from_pretrained({args.out!r})",
            "videomae": f"VideoMAE: model.load_state_dict(torch.load({args.out!r})['model'], strict=True)",
            "timm": f"timm: timm.create_model('local-dir:{args.out}', pretrained=True)",
            "hpm": f"HPM: main_pretrain.py / main_finetune.py --finetune {args.out} (strict=True)",
            "mae": f"MAE: main_pretrain.py / main_finetune.py --finetune {args.out} (strict=True)"}[args.format]
    print(f"load with {hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
