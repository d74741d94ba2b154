"""Every `tools/*.py --help`: exit 0 with its usage, nothing heavy (torch, DeepSpeed, transformers)
imported before the arguments are parsed, a quick answer, and example lines that survive Python's
string literal (a `\\` at the end of a docstring line must be written `\\\\`)."""
import glob
import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "tools", "*.py"))
               if not p.endswith("__init__.py"))
HEAVY = ("torch", "deepspeed", "transformers", "timm", "decord", "av", "omegaconf")

# Runs a tool as `__main__` with `--help` in a fresh interpreter, then names the heavy modules it
# imported: the check is on sys.modules, not on a clock.
_PROBE = """
import runpy, sys
path = sys.argv[1]
sys.argv = [path, "--help"]
try:
    runpy.run_path(path, run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
""".format(heavy=HEAVY)


def test_every_tool_is_covered():
    assert {"train", "test", "predict", "export", "extract_features", "knn", "visualize", "make_lists",
            "benchmark", "resize_videos"} <= set(TOOLS)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_exits_0_fast_without_heavy_imports(tool):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PROBE, os.path.join(ROOT, "tools", f"{tool}.py")], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    heavy = re.search(r"HEAVY=(.*)", r.stderr).group(1)
    assert heavy == "", f"tools/{tool}.py imports {heavy} before parsing its arguments"
    assert "usage:" in r.stdout or tool == "benchmark", r.stdout[:500]
    assert r.stdout.strip()
    assert took < 3.0, f"tools/{tool}.py --help took {took:.1f} s"  # loose: a loaded CI machine
    for line in r.stdout.splitlines():
        if "python tools/" in line or line.lstrip().startswith(("deepspeed ", "torchrun ")):
            # a swallowed `\` + newline joins two example lines with a run of spaces
            assert not re.search(r"\S {5,}--", line), f"tools/{tool}.py: broken example line: {line!r}"
            for name in re.findall(r"tools/(\w+)\.py", line):
                assert name in TOOLS or name == "lib", f"tools/{tool}.py names tools/{name}.py, which is not there"
