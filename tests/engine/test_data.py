"""Resumable sampling: a run started at position k sees exactly the tail of the full epoch — the
same indices *and* the same random augmentations — whatever the number of workers."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, default_collate

from videohpm.engine.data import ResumableDistributedSampler, SeededDataset, build_loader


class _RandomAug(Dataset):
    """Each item draws from all three generators, like a crop offset + a flip + a frame jitter."""

    def __len__(self):
        return 23

    def __getitem__(self, i):
        return {"index": i, "aug": torch.tensor([torch.rand(()).item(), float(np.random.rand()), random.random()])}


def _collect(loader):
    idx, aug = [], []
    for b in loader:
        idx += b["index"].tolist()
        aug.append(b["aug"])
    return idx, torch.cat(aug)


@pytest.mark.parametrize("world", [1, 3])
def test_sampler_shards_and_resumes(world):
    ds = list(range(23))
    full = [[(i, s) for i, s in ResumableDistributedSampler(ds, world, r, seed=5)] for r in range(world)]
    per_rank = 23 // world
    assert all(len(f) == per_rank for f in full)
    seen = [i for f in full for i, _ in f]
    assert len(set(seen)) == len(seen)  # disjoint shards, drop_last
    seeds = [s for f in full for _, s in f]
    assert len(set(seeds)) == len(seeds)  # one seed per (epoch, position)
    for r in range(world):
        s = ResumableDistributedSampler(ds, world, r, seed=5)
        s.set_epoch(0, start=4)
        assert list(s) == full[r][4:] and len(s) == per_rank - 4
        s.set_epoch(1)
        assert [i for i, _ in s] != [i for i, _ in full[r]]  # a new permutation per epoch
    with pytest.raises(ValueError):
        ResumableDistributedSampler(ds, world, 0).set_epoch(0, start=per_rank + 1)


def test_augmentations_follow_the_position_not_the_worker():
    ds = _RandomAug()
    sampler = ResumableDistributedSampler(ds, 1, 0, seed=3)
    sampler.set_epoch(2)
    idx, aug = _collect(build_loader(ds, 4, sampler, num_workers=0, drop_last=True, collate_fn=default_collate))
    sampler.set_epoch(2, start=8)  # resume after two batches, now with a worker process
    idx2, aug2 = _collect(build_loader(ds, 4, sampler, num_workers=1, drop_last=True, collate_fn=default_collate))
    assert idx2 == idx[8:]
    assert torch.equal(aug2, aug[8:])


def test_main_process_generators_are_left_alone():
    """With num_workers=0 the item seeds must not disturb the training process's own streams
    (masking, dropout, mixup)."""
    ds = SeededDataset(_RandomAug())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    a = ds[(1, 123)]
    b = ds[(1, 123)]
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a["aug"], b["aug"])
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


class _PidAug(_RandomAug):
    def __getitem__(self, i):
        import os

        return {**super().__getitem__(i), "pid": torch.tensor(os.getpid())}


def test_persistent_workers_keep_the_process_and_the_augmentations():
    """`data.persistent_workers`: one worker serves every epoch, and each epoch's indices and
    augmentations equal those of a fresh loader (a new worker) for that epoch."""
    ds = _PidAug()
    persistent_sampler, fresh_sampler = (ResumableDistributedSampler(ds, 1, 0, seed=5) for _ in range(2))
    persistent = build_loader(ds, 4, persistent_sampler, num_workers=1, drop_last=True, collate_fn=default_collate,
                              persistent_workers=True)
    assert persistent.persistent_workers
    pids = {"persistent": set(), "fresh": set()}
    for epoch in range(3):
        persistent_sampler.set_epoch(epoch)
        fresh_sampler.set_epoch(epoch)
        fresh = build_loader(ds, 4, fresh_sampler, num_workers=1, drop_last=True, collate_fn=default_collate)
        a, b = list(persistent), list(fresh)
        assert [x["index"].tolist() for x in a] == [x["index"].tolist() for x in b]
        assert all(torch.equal(x["aug"], y["aug"]) for x, y in zip(a, b))
        pids["persistent"] |= {int(p) for x in a for p in x["pid"]}
        pids["fresh"] |= {int(p) for x in b for p in x["pid"]}
    assert len(pids["persistent"]) == 1 and len(pids["fresh"]) == 3


def test_trainer_passes_persistent_workers(demo, tmp_path):
    from tests.engine.conftest import PRETRAIN_CFG, data_overrides
    from videohpm.config import load_config
    from videohpm.engine import Trainer

    base = [*data_overrides(demo), f"train.output_dir={tmp_path}", "data.num_workers=1"]
    for flag in (True, False):
        tr = Trainer(load_config(str(PRETRAIN_CFG), [*base, f"data.persistent_workers={str(flag).lower()}"]))
        try:
            assert tr.loader.persistent_workers is flag
        finally:
            tr.close()
