#!/usr/bin/env python
"""Speed benchmarks, ratios against the peers measured in the same run.

    python tools/benchmark.py model [--json] [...]   # training step: HF VideoMAE vs ours (plain, HPM)
    python tools/benchmark.py data  [--json] [...]   # decode + augment: VideoMAE-V1-style reader vs ours

Numbers and the commands that made them are kept in docs/BENCHMARKS.md.
"""
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SUITES = {"model": "tools.lib.benchmarks.model", "data": "tools.lib.benchmarks.data"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        print(f"\nsuites: {', '.join(sorted(SUITES))}; `python tools/benchmark.py SUITE --help` lists a suite's options")
        return 0
    if not argv or argv[0] not in SUITES:
        print(__doc__.strip(), file=sys.stderr)
        print(f"\nfirst argument must be one of {sorted(SUITES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUITES[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
