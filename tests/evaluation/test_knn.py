"""Weighted k-NN (DINO) on planted features."""
import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .helpers import SyntheticClips, tiny_autoencoder
from videohpm.evaluation.knn import knn_classify, knn_eval, knn_predict, mean_pooled_features


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_temperature_weighted_vote_beats_majority():
    # query q; one very close neighbour of class 0, two moderately close of class 1
    q = _unit([1.0, 0.0])
    train = _unit([math.cos(0.1), math.sin(0.1)], [math.cos(1.0), math.sin(1.0)], [math.cos(1.0), -math.sin(1.0)],
                  [-1.0, 0.0])
    labels = torch.tensor([0, 1, 1, 2])
    scores = knn_predict(train, labels, q, k=3, temperature=0.07, num_classes=3)
    w_close, w_far = math.exp(math.cos(0.1) / 0.07), math.exp(math.cos(1.0) / 0.07)
    assert torch.allclose(scores[0], torch.tensor([w_close, 2 * w_far, 0.0]), rtol=1e-4)
    assert scores.argmax().item() == 0  # majority vote would say class 1
    # a hot temperature flattens the weights: the two class-1 neighbours win
    assert knn_predict(train, labels, q, k=3, temperature=100.0, num_classes=3).argmax().item() == 1


def test_knn_classify_vs_brute_force_and_best_k():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    ytr = torch.arange(40) % 4
    ftr = F.normalize(centers[ytr] + 0.3 * torch.randn(40, 16, generator=g), dim=-1)
    yte = torch.arange(12) % 4
    fte = F.normalize(centers[yte] + 0.3 * torch.randn(12, 16, generator=g), dim=-1)
    res = knn_classify(ftr, ytr, fte, yte, ks=(1, 5, 200), temperature=0.07)
    for k in (1, 5, 200):
        hits = 0
        for i in range(12):  # brute force from the definition
            sims = [(float(fte[i] @ ftr[j]), int(ytr[j])) for j in range(40)]
            sims.sort(key=lambda s: -s[0])
            votes = [0.0] * 4
            for s, c in sims[: min(k, 40)]:
                votes[c] += math.exp(s / 0.07)
            hits += int(max(range(4), key=lambda c: votes[c]) == int(yte[i]))
        assert abs(res[f"knn_top1@{k}"] - 100 * hits / 12) < 1e-9
    assert res["knn_top1"] == max(res[f"knn_top1@{k}"] for k in (1, 5, 200))
    assert res[f"knn_top1@{res['knn_best_k']}"] == res["knn_top1"]


def test_knn_eval_on_encoder_features():
    ae = tiny_autoencoder().train()
    train = DataLoader(SyntheticClips(12, seed=1), batch_size=4)
    val = DataLoader(SyntheticClips(6, seed=2), batch_size=4)
    res = knn_eval(mean_pooled_features(ae), train, val, ks=(1, 3), module=ae)
    assert ae.training  # restored
    assert res["knn_train_samples"] == 12 and res["knn_val_samples"] == 6
    # the planted class offsets survive a random encoder: nearest neighbour is correct
    assert res["knn_top1@1"] == 100.0
