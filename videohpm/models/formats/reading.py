"""Reading checkpoint files safely: the one reader of every tool and the engine.

`read_checkpoint_file` reads `.safetensors` through `safetensors` and anything else with
`torch.load(weights_only=True)`, allowing only tensors, plain containers and `argparse.Namespace`
(the official VideoMAE files' `args`) — never a full unpickle; a refused file raises
`CheckpointRefusedError` saying what it pickles. Folders (Hugging Face `save_pretrained`, a
DeepSpeed tag or save root) are resolved to their weight file. `weights_only_loads` routes
third-party readers (DeepSpeed's checkpoint engine, `zero_to_fp32`) through the same reader.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
from typing import Any, Iterator, Sequence, Union

import torch

__all__ = ["SAFE_GLOBALS", "CheckpointRefusedError", "resolve_checkpoint_path", "read_checkpoint_file",
           "weights_only_loads"]


# The only globals a checkpoint file may pickle besides tensors and plain containers (dict, list,
# tuple, set, str, numbers, None, OrderedDict, torch.Size ...): the `args` entry of the official
# VideoMAE / VideoMAE V2 `utils.save_model` files, an `argparse.Namespace` of the run's options.
SAFE_GLOBALS: tuple = (argparse.Namespace,)
_DEEPSPEED_MODEL_STATES = "mp_rank_00_model_states.pt"


class CheckpointRefusedError(ValueError):
    """A checkpoint file holds something other than tensors, plain containers and
    ``argparse.Namespace`` (or is no checkpoint at all); the message says what and what to do."""


def resolve_checkpoint_path(path: Union[str, os.PathLike]) -> str:
    """The file that holds the weights of ``path``: the path itself for a file; in a folder, a
    Hugging Face ``save_pretrained()`` file (``model.safetensors`` / ``pytorch_model.bin``), a
    DeepSpeed tag folder's ``mp_rank_00_model_states.pt`` (VideoMAE's ``checkpoint-N/``), or the
    tag named by the folder's ``latest`` file (DeepSpeed's save root).

    Raises:
        FileNotFoundError: nothing of the above.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not os.path.isdir(path):
        return path
    for name in ("model.safetensors", "pytorch_model.bin", _DEEPSPEED_MODEL_STATES):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    latest = os.path.join(path, "latest")
    if os.path.isfile(latest):
        with open(latest) as f:
            tag = f.read().strip()
        tagged = os.path.join(path, tag)
        if tag and os.path.isfile(os.path.join(tagged, _DEEPSPEED_MODEL_STATES)):
            return os.path.join(tagged, _DEEPSPEED_MODEL_STATES)
        raise FileNotFoundError(f"{path}: its 'latest' file names {tag!r}, but {tagged} holds no "
                                f"{_DEEPSPEED_MODEL_STATES}")
    raise FileNotFoundError(f"{path}: a folder without weights (no model.safetensors, pytorch_model.bin, "
                            f"{_DEEPSPEED_MODEL_STATES} or DeepSpeed 'latest' file)")


def _refusal(path: str, err: Exception) -> CheckpointRefusedError:
    m = re.search(r"GLOBAL ([\w.]+)", str(err))
    if m is None:
        why = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
        reason = why.group(1) if why else (str(err).splitlines() or [type(err).__name__])[0]
        if "Unsupported operand" in reason or "load key" in reason:  # not a pickle at all
            reason = f"not a torch.save file: {reason}"
        return CheckpointRefusedError(
            f"{path}: not a readable PyTorch checkpoint ({reason[:200]}). Pass a .pth/.pt file written by "
            "torch.save, a .safetensors file, or a checkpoint folder.")
    what = m.group(1)
    return CheckpointRefusedError(
        f"{path}: refused — the file pickles the Python object {what!r}. Checkpoints are read with "
        "torch.load(weights_only=True) only (tensors, plain containers and argparse.Namespace), because "
        "unpickling any other object can run arbitrary code on this machine. If you made this file and "
        "trust it, save its weights alone and pass that file instead: python -c \"import torch; "
        f"ck = torch.load({path!r}, weights_only=False); torch.save(ck.get('model', ck), 'weights.pth')\"")


_TORCH_LOAD = torch.load  # the real one, also while `weights_only_loads` replaces torch.load


def read_checkpoint_file(path: Union[str, os.PathLike], extra_safe_globals: Sequence[Any] = (),
                         map_location: Any = "cpu") -> Any:
    """Read a checkpoint safely: the one reader of every tool and the engine.

    ``.safetensors`` files through ``safetensors``; anything else with
    ``torch.load(weights_only=True)`` and :data:`SAFE_GLOBALS` allowed (the official VideoMAE /
    VideoMAE V2 files: ``{"model", "optimizer", "epoch", "scaler", "args": Namespace}``) — never
    a full unpickle. Folders are resolved by :func:`resolve_checkpoint_path` (Hugging Face and
    DeepSpeed folders).

    Args:
        extra_safe_globals: more classes to allow (the engine passes DeepSpeed's optimizer-state
            classes when it resumes its own checkpoints).
        map_location: as ``torch.load``'s (CPU by default).
    Raises:
        FileNotFoundError: no such file, or a folder without weights.
        CheckpointRefusedError: the file needs another global (named in the message) or is no
            checkpoint.
    """
    path = resolve_checkpoint_path(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file  # lazy: only .safetensors files need it

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError for a damaged file
            raise CheckpointRefusedError(f"{path}: not a readable .safetensors file ({err})") from None
    try:
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_safe_globals]):
            return _TORCH_LOAD(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, OSError) as err:
        if isinstance(err, (FileNotFoundError, IsADirectoryError)):
            raise
        raise _refusal(path, err) from None


@contextlib.contextmanager
def weights_only_loads(extra_safe_globals: Sequence[Any] = ()) -> Iterator[None]:
    """Inside, every ``torch.load(path, ...)`` is :func:`read_checkpoint_file` (``weights_only=True``,
    :data:`SAFE_GLOBALS` + ``extra_safe_globals``), whatever its caller asks for: for the
    third-party readers that unpickle on their own — DeepSpeed's checkpoint engine
    (``engine.load_checkpoint``) and ``zero_to_fp32``. Not thread-safe (it swaps ``torch.load``)."""
    def load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, os.PathLike)):
            return read_checkpoint_file(f, extra_safe_globals, map_location=map_location)
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_safe_globals]):
            return _TORCH_LOAD(f, map_location=map_location, weights_only=True)

    saved = torch.load
    torch.load = load
    try:
        yield
    finally:
        torch.load = saved
