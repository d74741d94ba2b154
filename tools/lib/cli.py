"""The entry scripts' shared boilerplate (`tools/*.py`), written once.

- :func:`parser`, :func:`add_options`: the argument parser (the tool's docstring as its
  description) and the arguments several tools declare alike (:data:`OPTIONS`).
- :func:`launcher_env`: what a launcher passes in (`--local_rank`, SLURM's task variables).
- :class:`ToolError`, :func:`main`, :func:`exits`: an error the user can fix ends the tool with
  one line on stderr and an exit code (2: bad arguments, config or input; 1: the run failed);
  anything else stays a traceback.
- :func:`config_errors`: how the errors of loading a tool's config and `checkpoint=` are told
  (the loaders are the library's: `videohpm.config.load_config` / `load_tool_config`,
  `videohpm.tasks.run_config.tool_config`); :func:`video_tool_config` for the tools that read
  videos; :func:`refuse_random_init_checkpoint`, :func:`require_inputs`: shared argument checks.
- :func:`add_overwrite`, :func:`held_results`, :func:`refuse_overwrite`, :func:`remove_results`:
  the one overwrite policy of the tools that write results.

Imports nothing heavy at module level: a tool's `--help` stays fast.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

# Arguments that several tools declare alike: flags (or a positional's name) → argparse keywords.
OPTIONS = {
    ("overrides",): dict(nargs="*", help="checkpoint=<path> and key=value config overrides"),
    # tools/predict.py, extract_features.py; videohpm.tasks.run_config.split_tool_args splits them
    ("args",): dict(nargs="*", metavar="checkpoint=PATH | INPUT | key=value",
                    help="checkpoint=<path>, videos / folders / lists, and config overrides"),
    ("--local_rank", "--local-rank"): dict(type=int, default=None, help="set by the deepspeed launcher"),
    ("--batch-size",): dict(type=int, default=None, help="videos per rank per batch (default train.batch_size)"),
    ("--data-root",): dict(default=None, help="prefix of relative paths in list files (default data.data_root)"),
    ("--views-per-forward",): dict(type=int, default=None, help="cap on views in one forward (memory)"),
    ("--teacher",): dict(action="store_true", help="the EMA teacher saved with the checkpoint (HPM)"),
    ("--random-init",): dict(action="store_true",
                             help="no checkpoint: the randomly initialised encoder (seeded by train.seed), the baseline"),
}


def parser(doc: str, summary: bool = False) -> argparse.ArgumentParser:
    """The tools' argument parser: `doc` (the module docstring) as the description, printed as
    written; with `summary`, only its first line, and the rest (from its third line) as the epilog."""
    if summary:
        lines = doc.splitlines()
        return argparse.ArgumentParser(description=lines[0], epilog="\n".join(lines[2:]),
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_options(p: argparse.ArgumentParser, *flags: str, **helps: str) -> None:
    """Add the shared :data:`OPTIONS` named by their first flag (`"--batch-size"`, `"overrides"`);
    `helps` replaces an argument's help text, keyed by its dest (`local_rank="..."`)."""
    for flag in flags:
        names = next(k for k in OPTIONS if k[0] == flag)
        kwargs = dict(OPTIONS[names])
        kwargs["help"] = helps.get(flag.lstrip("-").replace("-", "_"), kwargs["help"])
        p.add_argument(*names, **kwargs)


def launcher_env(args: argparse.Namespace, slurm: bool = True) -> None:
    """`--local_rank` into `$LOCAL_RANK` (unless set); with `slurm`, a SLURM task's variables
    into RANK / WORLD_SIZE / ... (`videohpm.distributed.apply_slurm_env`; inconsistent ones end
    the tool with exit 2)."""
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    if slurm:
        from videohpm import distributed as vdist  # imports torch: not for --help

        with exits(ValueError):  # srun: SLURM_PROCID/NTASKS/LOCALID/NODELIST → RANK, WORLD_SIZE, ...
            vdist.apply_slurm_env()


class ToolError(Exception):
    """Ends a tool: `message` goes to stderr as it is, the tool returns `code`."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.message, self.code = message, code


def main(fn: Callable[[Optional[Sequence[str]]], int]) -> Callable[[Optional[Sequence[str]]], int]:
    """Decorator of a tool's `main(argv=None) -> int`: a :class:`ToolError` raised inside is
    printed to stderr and its code returned (in-process callers such as tools/lib/demo.py get
    the code, as the shell does)."""

    @functools.wraps(fn)
    def run(argv: Optional[Sequence[str]] = None) -> int:
        try:
            return fn(argv)
        except ToolError as e:
            print(e.message, file=sys.stderr)
            return e.code

    return run


@contextmanager
def exits(*errors: type, prefix: str = "error", code: int = 2) -> Iterator[None]:
    """Inside the block, an exception of `errors` becomes `ToolError(f"{prefix}: {e}", code)`."""
    try:
        yield
    except errors as e:
        raise ToolError(f"{prefix}: {e}", code) from e


@contextmanager
def config_errors(value_hint: str = "") -> Iterator[None]:
    """The errors of loading a tool's config, `checkpoint=` or checkpoint, exit 2: `ConfigError`
    → `config error: …`; another ValueError (no or several `checkpoint=`, ...) →
    `error: …<value_hint>`; FileNotFoundError (the checkpoint path) → `error: …`."""
    from videohpm.config import ConfigError  # imports torch: only where a config is loaded

    try:
        yield
    except ConfigError as e:
        raise ToolError(f"config error: {e}") from e
    except ValueError as e:
        raise ToolError(f"error: {e}{value_hint}") from e
    except FileNotFoundError as e:
        raise ToolError(f"error: {e}") from e


def video_tool_config(args: argparse.Namespace, require_checkpoint: bool = True):
    """`(cfg, checkpoint, inputs)` of a tool that reads videos (`tools/predict.py`,
    `extract_features.py`): its positional words (`args.args`) split into overrides and inputs
    (`videohpm.tasks.run_config.split_tool_args`), the config of `--config` or of the
    checkpoint's run (`videohpm.tasks.run_config.tool_config`), errors as :func:`config_errors`."""
    from videohpm.tasks.run_config import split_tool_args, tool_config  # imports torch

    overrides, inputs = split_tool_args(args.args)
    with config_errors():
        cfg, checkpoint = tool_config(args.config, overrides, require_checkpoint=require_checkpoint)
    return cfg, checkpoint, inputs


def require_config_for_random_init(args: argparse.Namespace) -> None:
    """`--random-init` builds the encoder from `--config` alone: refuse it without one."""
    if args.random_init and args.config is None:
        raise ToolError("error: --random-init needs --config (there is no checkpoint to take it from)")


def refuse_random_init_checkpoint(args: argparse.Namespace, checkpoint: Optional[str]) -> None:
    """`--random-init` (`tools/knn.py`, `extract_features.py`) takes no `checkpoint=` and no
    `--teacher`: end the tool (exit 2) when one is given."""
    if args.random_init and (checkpoint or args.teacher):
        raise ToolError("error: --random-init evaluates no checkpoint: drop checkpoint= and --teacher")


def require_inputs(inputs: Sequence[str]) -> None:
    """End the tool (exit 2) when no video, folder or list was given."""
    if not inputs:
        raise ToolError("error: no input: give video files, folders or list files")


# The one overwrite policy of the tools that write results (README "Where results go"): a target
# that holds this tool's results is refused before any work, unless --overwrite; the old results
# are removed only once every check of the run has passed; a run that produced nothing writes no
# result file, so it never blocks its own rerun.
OVERWRITE_HELP = "replace the results already there (default: refuse, before any work)"


def add_overwrite(p: argparse.ArgumentParser) -> None:
    """The `--overwrite` flag of every tool that writes results."""
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def held_results(folder: str, names: Sequence[str]) -> list:
    """The entries of `names` (file or folder names; a trailing `*` matches a prefix) that
    `folder` holds, sorted."""
    if not os.path.isdir(folder):
        return []
    present = os.listdir(folder)
    found = {f for n in names for f in present if (f.startswith(n[:-1]) if n.endswith("*") else f == n)}
    return sorted(found)


def refuse_overwrite(where: str, held: Sequence[str], overwrite: bool) -> None:
    """End the tool (exit 2) when `where` holds results (`held`) and `overwrite` is off."""
    if held and not overwrite:
        shown = ", ".join(held[:4]) + (" …" if len(held) > 4 else "")
        raise ToolError(f"error: {where} holds results already ({shown}); nothing was changed: "
                        f"pass --overwrite to replace them, or choose another output")


def remove_results(folder: str, held: Sequence[str]) -> None:
    """Delete the entries `held` of `folder` (what :func:`held_results` found)."""
    for name in held:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def results_opener(out: str, cleared: Sequence[str], overwrite: bool, log_name: str) -> Callable[[], None]:
    """The `on_checks_passed` callback of a distributed evaluation tool: once the checkpoint and
    the lists passed their checks, rank 0 removes the earlier results (`--overwrite`), every rank
    waits for it, and rank 0's log file starts in `out` — nothing is written before."""

    def checks_passed() -> None:
        from videohpm import distributed as vdist  # imports torch: not for --help

        if vdist.is_main_process() and overwrite:
            remove_results(out, held_results(out, cleared))
        vdist.barrier()
        vdist.setup_logging(os.path.join(out, log_name) if vdist.is_main_process() else None)

    return checks_passed
