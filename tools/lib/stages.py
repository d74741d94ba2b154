"""Named stages with skip / resume / redo semantics: the engine under the demo, the ablation and the
data-efficiency benchmark.

:class:`StageRunner` runs a stage unless its folder holds a finished run with the same key: every
stage records the exact settings it ran with (`<stage dir>/.stage.json`). A finished stage with the
same key is skipped, an interrupted one is resumed (training stages pass `train.resume=auto`, so the
engine continues from its newest checkpoint), and a stage whose key changed is cleared and run
again. Tools run as subprocesses (their output shown live and copied to `<out>/logs/<stage>.log`),
through the `deepspeed` launcher for several ranks, or in this process (no interpreter start per
stage). Any failing stage raises :class:`DemoError` naming the stage, the command and its log.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

__all__ = ["REPO", "STAGE_FILE", "DemoError", "RunOptions", "StageRunner", "exit_with_parent", "resolved_digest",
           "write_atomic"]

REPO = Path(__file__).resolve().parents[2]  # the checkout: tools/lib/stages.py → ../..
STAGE_FILE = ".stage.json"


class DemoError(RuntimeError):
    """A demo / ablation / benchmark stage failed; the message names the stage, its command and its log."""


@dataclass
class RunOptions:
    """How a :class:`StageRunner` runs the tools.

    Attributes:
        in_process: run the tools in this process (one rank only) instead of subprocesses —
            saves the per-stage interpreter start; used by tests and short stages.
        threads: torch threads per process (`OMP_NUM_THREADS`, default 1); 0 = CPU cores / ranks.
            One thread per process avoids OpenMP threads spinning on cores other jobs hold, and
            leaves a core to the data-loading worker.
    """

    in_process: bool = False
    threads: int = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolved_digest(cfg: Path, overrides: Sequence[str]) -> str:
    """Digest of the resolved run config (file + `_base_` chain + overrides): what a stage runs.
    Comments and key order in the YAML do not matter; any changed value does."""
    # imports torch: inside, so that the tools' `--help` stays fast
    from omegaconf import OmegaConf

    from videohpm.config import ConfigError, load_config

    try:
        resolved = load_config(str(cfg), list(overrides))
    except ConfigError as e:
        raise DemoError(f"{cfg}: {e}") from e
    text = OmegaConf.to_yaml(resolved, resolve=True, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def exit_with_parent(interval: float = 1.0) -> None:
    """In a worker process that runs long stages: end it (exit status 1) once its parent is gone.

    A tool stopped by SIGTERM or SIGKILL cannot stop its pool's running tasks, which would go on
    training and writing into the tool's folders; a daemon thread here checks every `interval`
    seconds whether the process was re-parented and then exits at once (a stage's subprocess then
    ends on its closed output pipe, DataLoader workers on their own parent check).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: readers never see half a file."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class StageRunner:
    """Runs named stages with skip / resume / redo semantics, tees their output to a log and
    records their wall time (`<out>/stages.json`)."""

    def __init__(self, out_dir: Path, opts: RunOptions, total: Optional[int] = None) -> None:
        self.out = Path(out_dir)
        self.opts = opts
        self.total = total
        self.count = 0
        self.timings: Dict[str, Dict[str, Any]] = {}
        self.log_dir = self.out / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def announce(self, name: str, what: str) -> None:
        """Print the numbered header of stage `name`."""
        self.count += 1
        n = f"{self.count}/{self.total}" if self.total else str(self.count)
        print(f"\n==> [{n}] {name}: {what}", flush=True)

    def _record(self, name: str, seconds: float, status: str) -> None:
        self.timings[name] = {"seconds": round(seconds, 1), "status": status}
        path = self.out / "stages.json"
        try:  # another process (an ablation worker on other seeds) may share the folder
            old = json.loads(path.read_text()) if path.is_file() else {}
        except (json.JSONDecodeError, OSError):
            old = {}
        old[name] = self.timings[name]
        write_atomic(path, json.dumps(old, indent=1))

    @staticmethod
    def _state(stage_dir: Path) -> Dict[str, Any]:
        f = stage_dir / STAGE_FILE
        try:
            return json.loads(f.read_text()) if f.is_file() else {}
        except json.JSONDecodeError:
            return {}

    def stage(self, name: str, what: str, stage_dir: Path, key: Dict[str, Any], fn: Callable[[], None]) -> bool:
        """Run `fn` for stage `name` unless `stage_dir` already holds a finished run with the same
        `key`. Returns True if it ran, False if it was up to date.

        A previous run with another key is deleted first; an unfinished one with the same key is
        left in place for `fn` to resume.
        """
        self.announce(name, what)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        state = self._state(stage_dir)
        if state.get("key") == digest and state.get("status") == "done":
            print(f"    up to date (finished earlier in {state.get('seconds', 0):.0f} s): {stage_dir}", flush=True)
            self._record(name, float(state.get("seconds", 0.0)), "reused")
            return False
        if stage_dir.exists() and state.get("key") != digest:
            if any(stage_dir.iterdir()):
                print(f"    settings changed since the last run: clearing {stage_dir}", flush=True)
            shutil.rmtree(stage_dir)
        elif state.get("key") == digest:
            print(f"    resuming the interrupted run in {stage_dir}", flush=True)
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(stage_dir / STAGE_FILE, json.dumps({"key": digest, "status": "running", "what": what,
                                                          "settings": key}, indent=1, default=str))
        t0 = time.time()
        fn()
        seconds = time.time() - t0
        write_atomic(stage_dir / STAGE_FILE, json.dumps({"key": digest, "status": "done", "seconds": seconds,
                                                          "what": what, "settings": key}, indent=1, default=str))
        self._record(name, seconds, "ran")
        print(f"    done in {seconds:.0f} s", flush=True)
        return True

    def tool(self, name: str, tool: str, args: Sequence[str], ranks: int = 1) -> None:
        """Run `tools/<tool>.py ARGS` (through the `deepspeed` launcher for `ranks > 1`), in this
        process when `opts.in_process`; raise :class:`DemoError` if it fails."""
        script = REPO / "tools" / f"{tool}.py"
        if self.opts.in_process:
            if ranks > 1:
                raise DemoError(f"{name}: in-process runs use one rank (got ranks={ranks})")
            print(f"    $ {script.relative_to(REPO)} {' '.join(args)}  (in process)", flush=True)
            module = importlib.import_module(f"tools.{tool}")  # tools/<tool>.py, a module of this package
            rc = module.main(list(args))
            if rc:
                raise DemoError(f"stage {name!r} failed: tools/{tool}.py exited with {rc} (in process); "
                                f"arguments: {' '.join(args)}")
            return
        if ranks > 1:
            launcher = str(Path(sys.executable).with_name("deepspeed"))
            cmd = [launcher, "--num_gpus", str(ranks), "--master_port", str(_free_port()), str(script), *args]
        else:
            cmd = [sys.executable, str(script), *args]
        self.command(name, cmd, threads=self.thread_count(ranks))

    def thread_count(self, ranks: int) -> int:
        """Torch threads per process of a tool run with `ranks` processes."""
        if self.opts.threads > 0:
            return self.opts.threads
        return max(1, (os.cpu_count() or 1) // max(ranks, 1))

    def command(self, name: str, cmd: Sequence[str], threads: int = 0) -> None:
        """Run `cmd` with its output shown live (tqdm bars included) and copied to
        `<out>/logs/<name>.log`; raise :class:`DemoError` with the log's tail if it fails."""
        log_path = self.log_dir / f"{name.replace(' ', '_')}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if sys.prefix != sys.base_prefix:  # a venv: DeepSpeed's JIT comm op is built in its own cache
            env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
        shown = " ".join(str(c) for c in cmd).replace(str(REPO) + os.sep, "")
        print(f"    $ {shown}", flush=True)
        tail = bytearray()
        with open(log_path, "ab") as log:
            log.write(f"\n$ {shown}\n".encode())
            proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            try:
                while True:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                    log.write(chunk)
                    tail = (tail + chunk)[-6000:]
            except BaseException:
                proc.kill()
                raise
            finally:
                rc = proc.wait()
        if rc != 0:
            text = tail.decode(errors="replace").replace("\r", "\n")
            lines = [ln for ln in text.splitlines() if ln.strip()][-25:]
            raise DemoError(f"stage {name!r} failed with exit status {rc}\n  command: {shown}\n  log: {log_path}\n"
                            + "\n".join("  | " + ln for ln in lines))

