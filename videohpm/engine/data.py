"""Resumable, reproducible data loading for the engine.

Two small pieces make a killed-and-resumed run see exactly the batches — and the random
augmentations — of an uninterrupted one:

* `ResumableDistributedSampler` (a `DistributedSampler`): the epoch's permutation depends only on
  (seed, epoch); `set_epoch(epoch, start)` skips the first `start` samples of this rank's shard
  (the position saved in the checkpoint) without loading them. Each index is yielded together
  with a per-sample seed derived from (seed, epoch, global position).
* `SeededDataset`: seeds Python's, NumPy's and torch's generators with that per-sample seed around
  `dataset[index]`, so the random crop / flip / frame offset of a sample is a function of its
  position in the epoch — independent of the number of workers, of which worker serves it and of
  where a resumed run started. In the main process (`num_workers=0`) the caller's generator
  states are restored afterwards, so masking and dropout streams are unaffected.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from videohpm.data import build_dataset
from videohpm.data.datasets import collate

__all__ = ["sample_seed", "ResumableDistributedSampler", "SeededDataset", "build_loader", "build_knn_loaders"]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for the sample at global `position` of `epoch` (NumPy `SeedSequence` mix)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(position)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class ResumableDistributedSampler(DistributedSampler):
    """`DistributedSampler` that yields `(index, sample_seed)` and can start mid-epoch.

    Rank r gets positions r, r + W, r + 2W, … of the epoch's permutation (the parent's
    interleaving), so the global position of its k-th sample is `k·W + r`.
    """

    def __init__(self, dataset: Sequence, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:  # type: ignore[override]
        """Select the epoch's permutation and skip the first `start` samples of this rank."""
        super().set_epoch(epoch)
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"sampler start {start} outside [0, {self.num_samples}]")
        self.start = int(start)

    def __iter__(self) -> Iterator[Tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        for k in range(self.start, len(indices)):
            yield indices[k], sample_seed(self.seed, self.epoch, k * self.num_replicas + self.rank)

    def __len__(self) -> int:
        return self.num_samples - self.start


@contextlib.contextmanager
def _seeded(seed: int, restore: bool) -> Iterator[None]:
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if restore else None
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class SeededDataset(Dataset):
    """Wraps a map-style dataset; `self[(index, seed)]` is `dataset[index]` drawn under `seed`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        index, seed = key
        in_worker = torch.utils.data.get_worker_info() is not None
        with _seeded(seed, restore=not in_worker):
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:  # expose the wrapped dataset's attributes (counters…)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def build_loader(
    dataset: Dataset, batch_size: int, sampler: Optional[DistributedSampler], num_workers: int,
    drop_last: bool, pin_memory: bool = False, collate_fn: Optional[Callable] = None,
    persistent_workers: bool = False,
) -> DataLoader:
    """A `DataLoader` over `SeededDataset(dataset)` when `sampler` yields `(index, seed)` pairs.

    `collate_fn` defaults to `videohpm.data.datasets.collate` (flattens repeated augmentation
    `[S, C, T, H, W]` samples into the batch). The loader's own generator is fixed so that
    creating an iterator never draws from the global torch generator (which the masking and
    dropout streams use).
    """
    if collate_fn is None:
        collate_fn = collate
    wrapped = SeededDataset(dataset) if isinstance(sampler, ResumableDistributedSampler) else dataset
    g = torch.Generator()
    g.manual_seed(0)
    return DataLoader(
        wrapped, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last,
        pin_memory=pin_memory, collate_fn=collate_fn, generator=g,
        persistent_workers=persistent_workers and num_workers > 0,
    )


def build_knn_loaders(data_cfg: Any, batch_size: int, world: int = 1, rank: int = 0,
                      pin_memory: bool = False) -> Tuple[DataLoader, DataLoader]:
    """Deterministic loaders of the labelled `data.train` and `data.val` lists for the weighted
    k-NN (the engine's `train.knn_every` metric and `tools/knn.py`).

    Both use the validation transform (centre clip / centre crop, no flip, no RandAugment: k-NN
    features must not depend on augmentation noise), and a non-shuffling `DistributedSampler`:
    each rank extracts its share, `knn_eval` gathers the features and drops the sampler's
    padding repeats by dataset index.

    Raises:
        ValueError naming `data.train` / `data.val` when a list is missing or empty.
    """
    for name in ("train", "val"):
        if not getattr(data_cfg, name, None):
            raise ValueError(f"data.{name}: the k-NN needs a labelled {name} list (memory bank / queries)")
    # The train list read like the val list: same list parsing (labels checked against
    # data.num_classes), the deterministic val transform.
    train_as_val = OmegaConf.merge(data_cfg, {"val": data_cfg.train})
    sets = {"train": build_dataset(train_as_val, "val"), "val": build_dataset(data_cfg, "val")}
    loaders = []
    for name in ("train", "val"):
        ds = sets[name]
        if len(ds) == 0:
            raise ValueError(f"data.{name}: no samples for the k-NN")
        sampler = DistributedSampler(ds, world, rank, shuffle=False, drop_last=False)
        loaders.append(build_loader(ds, int(batch_size), sampler, int(data_cfg.num_workers), drop_last=False,
                                    pin_memory=pin_memory))
    return loaders[0], loaders[1]
