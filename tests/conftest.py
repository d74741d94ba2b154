"""Test-session environment shared by every process the tests start.

DeepSpeed builds its CPU shared-memory comm op with torch's JIT extension loader on first use. Two
things keep that to one build per virtual environment (issue "Runs, passes and stays fast on any
CPU", item 4): the project's own build cache (``TORCH_EXTENSIONS_DIR`` under the venv, as the
Makefile sets it), and the same ``ninja`` for every process — the venv's ninja (1.13) and the
system's (1.11) each take the other's ``.ninja_log`` as invalid and rebuild, which cost minutes
per launch when launchers and test processes found different ones on ``PATH``.

The CPU kernels' per-shape choices (``videohpm.kernels``) persist in one folder for the
test session — every process the tests start reads the same choices, as the processes of one
machine do — and not in the user's ``~/.cache``.
"""
import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
_BIN = os.path.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

if "VIDEOHPM_KERNEL_CACHE" not in os.environ:
    _KERNEL_CACHE = tempfile.mkdtemp(prefix="videohpm-kernels-")
    os.environ["VIDEOHPM_KERNEL_CACHE"] = _KERNEL_CACHE
    atexit.register(shutil.rmtree, _KERNEL_CACHE, True)
