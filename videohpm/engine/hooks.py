"""Evaluation hooks: metrics the application hands to the `Trainer` (`Trainer(cfg, eval_hooks=[...])`).

The engine does not know what a hook measures (the k-NN health metric of pre-training lives in
`videohpm.tasks.train`); it only calls, on every rank:

1. `setup(trainer)` once, while the trainer is built — after its datasets, before anything is
   written into the run folder, so that a hook's own checks (its lists, its options) fail first;
2. `due(epochs_done, epochs)` after every epoch, and, where it answers True,
   `hook(trainer) -> {name: value}` (collective), whose entries go into that epoch's record
   (log.jsonl, TensorBoard, the epoch line); for every name in `best` the running maximum is kept
   as `best_<name>` in the record and the checkpoint.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

__all__ = ["EvalHook"]


class EvalHook:
    """Base of an evaluation hook (see the module doc).

    Attributes:
        every: run after every `every`-th epoch and after the last one (0: never).
        best: metric names whose running maximum is kept as `best_<name>`.
    """

    every: int = 1
    best: Tuple[str, ...] = ()

    def setup(self, trainer: Any) -> None:
        """Prepare (e.g. build loaders) from the trainer's config, rank and world; errors here
        are `ConfigError`s raised before the run folder is written. Default: nothing."""

    def due(self, epochs_done: int, epochs: int) -> bool:
        """Whether to run after `epochs_done` (1-based) of `epochs` epochs."""
        return self.every > 0 and (epochs_done % self.every == 0 or epochs_done == epochs)

    def __call__(self, trainer: Any) -> Dict[str, Any]:
        """The metrics `{name: float | int}` of the trainer's current weights (collective)."""
        raise NotImplementedError(f"{type(self).__name__}.__call__")
