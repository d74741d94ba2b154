"""Training as tools/train.py runs it: the engine's `Trainer` with the evaluation hooks the config
asks for.

The engine knows no evaluation (`videohpm.engine.hooks`); this module builds the hooks from the
config and hands them over:

- `train.knn_every > 0`: `KnnHook`, the weighted k-NN top-1 of the student encoder's mean-pooled
  features (`videohpm.evaluation.knn`, DINO's protocol as the HPM journal version uses it) on the
  labelled train / val lists every `knn_every` epochs and after the last: a training-free health
  metric of pre-training. Logged keys: `knn_top1` (best over `train.knn_k`), `knn_best_k`,
  `knn_top1@<k>` for every k, `knn_time_s`, and `best_knn_top1` over the run.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from videohpm.config import ConfigError
from videohpm.engine import trainer as engine_trainer
from videohpm.engine.data import build_knn_loaders
from videohpm.engine.hooks import EvalHook
from videohpm.evaluation.knn import knn_eval, mean_pooled_features

__all__ = ["KnnHook", "build_eval_hooks", "Trainer", "train"]

log = logging.getLogger(__name__)


class KnnHook(EvalHook):
    """The k-NN health metric of pre-training (`train.knn_every`, `train.knn_k`,
    `train.knn_temperature`; module doc).

    `setup` builds the deterministic train (memory bank) / val (queries) loaders
    (`videohpm.engine.data.build_knn_loaders`); a missing or empty list is a `ConfigError`
    naming `train.knn_every`, raised before the run folder is written.
    """

    best = ("knn_top1",)

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.every = int(cfg.train.knn_every)
        self.ks = [int(k) for k in cfg.train.knn_k]
        self.temperature = float(cfg.train.knn_temperature)
        self.loaders: Optional[Tuple[DataLoader, DataLoader]] = None

    def setup(self, trainer: Any) -> None:
        cfg = self.cfg
        try:
            self.loaders = build_knn_loaders(cfg.data, int(cfg.train.batch_size), trainer.world, trainer.rank,
                                             trainer.pin_memory)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"{e} (train.knn_every)") from e
        log.info("k-NN health metric every %d epoch(s): %d train / %d val samples, k = %s, T = %g",
                 self.every, len(self.loaders[0].dataset), len(self.loaders[1].dataset), self.ks, self.temperature)

    @torch.no_grad()
    def __call__(self, trainer: Any) -> Dict[str, Any]:
        """Weighted k-NN top-1 (percent, like `val_acc1`) of the student encoder's mean-pooled,
        ℓ2-normalized features: train list → memory bank, val list → queries (collective).

        Returns `knn_top1` (best over `train.knn_k`), `knn_best_k`, `knn_top1@<k>` for every k and
        `knn_time_s`. The recipe is put in eval mode for the extraction (no dropout / drop path)
        and back in training mode afterwards.
        """
        t0 = time.time()
        features = mean_pooled_features(trainer.recipe)
        dtype = trainer.input_dtype  # CPU bf16: clips in the compute dtype (engine.trainer)

        def encode(x: torch.Tensor) -> torch.Tensor:
            """`x: [B, C, T, H, W]` → `[B, D]` mean of the encoder's tokens over all patches."""
            return features(x if dtype is None else x.to(dtype))

        num_classes = self.cfg.data.num_classes
        res = knn_eval(encode, self.loaders[0], self.loaders[1], ks=self.ks, temperature=self.temperature,
                       num_classes=int(num_classes) if num_classes is not None else None,
                       device=trainer.device, amp_dtype=trainer.amp_dtype, module=trainer.recipe)
        out: Dict[str, Any] = {"knn_top1": float(res["knn_top1"]), "knn_best_k": int(res["knn_best_k"])}
        out.update({f"knn_top1@{k}": float(res[f"knn_top1@{k}"]) for k in self.ks})
        out["knn_time_s"] = time.time() - t0
        return out


def build_eval_hooks(cfg: DictConfig) -> List[EvalHook]:
    """The evaluation hooks `cfg.train` asks for (module doc)."""
    return [KnnHook(cfg)] if int(cfg.train.knn_every) > 0 else []


class Trainer(engine_trainer.Trainer):
    """`videohpm.engine.Trainer` with `build_eval_hooks(cfg)` (and any extra `eval_hooks`)."""

    def __init__(self, cfg: DictConfig, eval_hooks: Sequence[EvalHook] = ()) -> None:
        super().__init__(cfg, [*build_eval_hooks(cfg), *eval_hooks])

    @property
    def knn_loaders(self) -> Optional[Tuple[DataLoader, DataLoader]]:
        """The k-NN hook's (memory bank, queries) loaders, or None without `train.knn_every`."""
        for hook in self.eval_hooks:
            if isinstance(hook, KnnHook):
                return hook.loaders
        return None


def train(cfg: DictConfig) -> Dict[str, Any]:
    """`videohpm.engine.train` with the config's evaluation hooks (what tools/train.py runs)."""
    return engine_trainer.train(cfg, build_eval_hooks(cfg))
