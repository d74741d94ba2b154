#!/usr/bin/env python
"""Prepare here, run there: the wheel set a bare GPU machine lacks, and the device check itself.

    python tools/device_check.py wheels [--dest device_wheels]   # here, with network (make device-wheels)
    python tools/device_check.py run [--device cuda] [--out DIR]  # there, after tools/device_check.sh installed
    python tools/device_check.py run --device cpu --tiny          # the CPU dry run (CI)

`run` writes `device_check.json` and `device_check.log` under `--out` (default `$OUT`, else
`outputs/device_check`); what each step measures: tools/lib/device_check.py, docs/BENCHMARKS.md "GPU".
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.lib import device_check  # noqa: E402


def wheels(args: argparse.Namespace) -> int:
    from tools.lib import device_wheels as dw  # needs `packaging` and pip: the wheel step only

    dest = Path(args.dest)
    report = dw.build_wheels(dest, args.python_version)
    tree = dw.tree_bytes(device_check.ROOT)
    report.update(tree_bytes=tree, total_bytes=tree + report["wheels_bytes"], limit_bytes=dw.LIMIT_BYTES)
    (dest / "manifest.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    mib = 2**20
    print(f"{len(report['wheels'])} wheels in {dest}: {report['wheels_bytes'] / mib:.1f} MiB; working tree "
          f"{tree / mib:.1f} MiB; together {report['total_bytes'] / mib:.1f} MiB of the {dw.LIMIT_BYTES / mib:.0f} MiB "
          f"a device call carries")
    for name, how in sorted(report["how"].items()):
        print(f"  {name}=={report['pins'][name]} ({how})")
    if report["total_bytes"] > dw.LIMIT_BYTES:
        print("over the limit: the device call would not carry it", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or os.environ.get("OUT") or device_check.ROOT / "outputs" / "device_check")
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(device_check.STEPS))
    if unknown:
        raise SystemExit(f"--steps: unknown {unknown}; choose from {','.join(device_check.STEPS)}")
    check = device_check.Check(device=args.device, tiny=args.tiny, out=out, budget_s=args.budget_s,
                               steps=steps, keep_log=args.keep_log, work=Path(args.work))
    return device_check.run_check(check)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/device_check.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wheels", help="download / build the wheels the device lacks into --dest")
    w.add_argument("--dest", default="device_wheels")
    w.add_argument("--python-version", default="3.12", help="the device's Python (X.Y)")
    r = sub.add_parser("run", help="run the device check")
    r.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    r.add_argument("--tiny", action="store_true", help="toy sizes (the CPU dry run)")
    r.add_argument("--out", default=None, help="output folder (default $OUT, else outputs/device_check)")
    r.add_argument("--budget-s", type=float, default=400.0, help="wall-clock budget of all steps together")
    r.add_argument("--steps", default=",".join(device_check.STEPS), help="comma list, in order")
    r.add_argument("--work", default=str(device_check.ROOT / "outputs" / "device_check_work"),
                   help="scratch folder: generated clips, the training run (checkpoints)")
    r.add_argument("--keep-log", action="store_true", help="append to an existing log (the installer's)")
    args = p.parse_args(argv)
    if args.command == "run" and args.device == "cpu" and not args.tiny:
        p.error("--device cpu runs only with --tiny (ViT-B at 16×224² is a GPU workload)")
    return wheels(args) if args.command == "wheels" else run(args)


if __name__ == "__main__":
    sys.exit(main())
