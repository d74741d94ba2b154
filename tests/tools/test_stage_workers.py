"""tools/lib/stages.py: a pool worker running a long stage ends when the tool that started it is
killed (a real process tree: the tool, its spawn pool, the worker)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.evaluation.helpers import ROOT

TOOL = textwrap.dedent("""
    import multiprocessing as mp, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    sys.path.insert(0, {root!r})
    from tools.lib.stages import exit_with_parent

    def stage(pid_file, watch):
        if watch:
            exit_with_parent(interval=0.1)
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)  # a long stage

    if __name__ == "__main__":
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            pool.submit(stage, sys.argv[1], sys.argv[2] == "1").result()
""")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line for line in f)  # a zombie has ended
    except FileNotFoundError:
        return False


def _worker_of_a_killed_tool(tmp_path, watch: bool) -> int:
    script = tmp_path / "tool.py"
    script.write_text(TOOL.format(root=ROOT))
    pid_file = tmp_path / f"worker{int(watch)}.pid"
    tool = subprocess.Popen([sys.executable, str(script), str(pid_file), "1" if watch else "0"])
    try:
        deadline = time.time() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _running(worker)
    finally:
        tool.send_signal(signal.SIGKILL)
        tool.wait()
    return worker


def test_a_pool_worker_ends_with_its_killed_tool(tmp_path):
    if not os.path.isdir("/proc"):
        pytest.skip("reads /proc")
    worker = _worker_of_a_killed_tool(tmp_path, watch=True)
    deadline = time.time() + 10
    while _running(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _running(worker)
    # without the watch the worker would go on: the case the helper exists for
    orphan = _worker_of_a_killed_tool(tmp_path, watch=False)
    try:
        time.sleep(1.0)
        assert _running(orphan)
    finally:
        os.kill(orphan, signal.SIGKILL)
