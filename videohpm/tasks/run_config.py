"""The config of a tool run on a checkpoint: `--config` when given, else the run's saved
`config.yaml`, else the config stored inside `model_final.pth`; and the split of a tool's
positional words into `key=value` overrides and inputs.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence, Tuple

from videohpm.config import config_from_dict, load_tool_config
from videohpm.models.formats import read_checkpoint_file

__all__ = ["split_tool_args", "find_run_config", "tool_config"]


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def split_tool_args(args: Sequence[str]) -> Tuple[List[str], List[str]]:
    """`(overrides, inputs)` of the positional words of `tools/predict.py` / `extract_features.py`:
    `checkpoint=...` and `key=value` words are overrides unless they name an existing path."""
    overrides: List[str] = []
    inputs: List[str] = []
    for a in args:
        (overrides if _OVERRIDE.match(a) and not os.path.exists(a) else inputs).append(a)
    return overrides, inputs


def find_run_config(checkpoint: str) -> Optional[str]:
    """The `config.yaml` the engine saved in the run folder of `checkpoint` (a run folder,
    `model_final.pth` in one, or `<run>/checkpoints/<tag>`), or None."""
    p = os.path.abspath(checkpoint)
    start = p if os.path.isdir(p) else os.path.dirname(p)
    d = start
    for _ in range(3):  # <run>, <run>/checkpoints, <run>/checkpoints/<tag>
        cand = os.path.join(d, "config.yaml")
        if os.path.isfile(cand):
            return cand
        d = os.path.dirname(d)
    return None


def tool_config(config: Optional[str], args: Sequence[str], require_checkpoint: bool = True):
    """`(cfg, checkpoint)` of `tools/predict.py` / `extract_features.py`: `--config` when given,
    else the run's saved `config.yaml` (:func:`find_run_config`), else the config stored inside
    the checkpoint file (`model_final.pth` holds it; read by the one safe reader,
    `videohpm.models.formats.read_checkpoint_file`, tensors on the meta device). `args` holds
    `checkpoint=` and the `key=value` overrides, as for `load_tool_config`.

    Raises:
        ValueError / FileNotFoundError / ConfigError as `videohpm.config.load_tool_config`, and a
        ValueError asking for `--config` when none can be found.
    """
    if config:
        return load_tool_config(config, args, require_checkpoint=require_checkpoint)
    ckpts = [a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")]
    if len(ckpts) != 1 or not ckpts[0] or not os.path.exists(ckpts[0]):
        load_tool_config("-", args, require_checkpoint=True)  # raises the checkpoint= error
        raise ValueError("give --config")  # pragma: no cover (load_tool_config raised)
    found = find_run_config(ckpts[0])
    if found:
        return load_tool_config(found, args)
    stored = None
    if os.path.isfile(ckpts[0]):
        obj = read_checkpoint_file(ckpts[0], map_location="meta")
        stored = obj.get("config") if isinstance(obj, dict) else None
    if not isinstance(stored, dict):
        raise ValueError(f"checkpoint={ckpts[0]}: no config.yaml in its run folder and no config inside: give --config")
    overrides = ["model.pretrained=null"] + [a for a in args if not a.startswith("checkpoint=")]
    return config_from_dict(stored, overrides, source=f"checkpoint={ckpts[0]} (its config)"), ckpts[0]
