"""Same numbers on 1 and 2 ranks: a real 2-process gloo run (torch.multiprocessing spawn).

7 videos on 2 ranks with 3 videos per batch: DistributedSampler pads rank 1 with a repeat of
video 0, so the gathered predictions hold 8 entries that must be de-duplicated to 7. The k-NN
features go through the same padding (11 train / 5 val clips on 2 ranks).
"""
import os
import pickle
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

from .helpers import SyntheticClips, SyntheticViews, tiny_autoencoder, tiny_classifier
from videohpm.evaluation.knn import knn_eval, mean_pooled_features
from videohpm.evaluation.multiview import evaluate_multiview

N_VIDEOS, BROKEN, BATCH = 7, [3], 3


def _run(out_dir: str) -> dict:
    """The evaluation under test; called in one process and in each of two ranks."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    preds, metrics = evaluate_multiview(tiny_classifier(), SyntheticViews(N_VIDEOS, views=6, broken=BROKEN),
                                        batch_size=BATCH, num_crops=3, videomae_dir=os.path.join(out_dir, "videomae"))
    ae = tiny_autoencoder().eval()

    def loader(ds):
        sampler = DistributedSampler(ds, world, rank, shuffle=False) if world > 1 else None
        return DataLoader(ds, batch_size=2, sampler=sampler)

    knn = knn_eval(mean_pooled_features(ae), loader(SyntheticClips(11, seed=1)), loader(SyntheticClips(5, seed=2)),
                   ks=(1, 3, 20), module=ae)
    return {"probs": preds.probs, "ids": preds.video_ids, "index": preds.index, "metrics": metrics, "knn": knn}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        res = _run(out_dir)
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(res, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_two_ranks_match_one_rank(tmp_path):
    single = _run(str(tmp_path / "single"))
    multi_dir = tmp_path / "multi"
    multi_dir.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(multi_dir)), nprocs=2, join=True)
    for rank in range(2):
        with open(multi_dir / f"rank{rank}.pkl", "rb") as f:
            res = pickle.load(f)
        assert res["ids"] == [f"vid{i:03d}" for i in range(N_VIDEOS)]  # 8 gathered → 7, in order
        assert res["index"].tolist() == list(range(N_VIDEOS))
        np.testing.assert_allclose(res["probs"], single["probs"], atol=1e-5)
        m, s = res["metrics"], single["metrics"]
        for key in ("top1", "top5", "mean_class_acc"):
            assert m[key] == pytest.approx(s[key]), key
        for key in ("num_videos", "num_broken", "broken_videos", "num_views"):
            assert m[key] == s[key], key
        assert res["metrics"]["num_videos"] == N_VIDEOS - len(BROKEN)
        assert res["knn"]["knn_train_samples"] == 11 and res["knn"]["knn_val_samples"] == 5
        for key, v in single["knn"].items():
            assert res["knn"][key] == pytest.approx(v), key
    # per-rank VideoMAE files: rank 0 saw videos 0,2,4,6; rank 1 saw 1,3(broken),5 and the pad 0
    r0 = open(multi_dir / "videomae" / "0.txt").read().splitlines()[1:]
    r1 = open(multi_dir / "videomae" / "1.txt").read().splitlines()[1:]
    assert sorted({line.split()[0] for line in r0}) == ["vid000", "vid002", "vid004", "vid006"]
    assert sorted({line.split()[0] for line in r1}) == ["vid000", "vid001", "vid005"]
    assert len(r0) == 4 * 6 and len(r1) == 3 * 6
