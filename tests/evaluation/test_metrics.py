"""Metrics of the multi-view protocol against brute-force loops."""
import numpy as np
import torch

from videohpm.evaluation.gather import deduplicate, first_occurrence
from videohpm.evaluation.metrics import (
    average_view_softmax,
    classification_metrics,
    mean_class_accuracy,
    topk_accuracy,
)


def test_average_view_softmax_by_hand():
    logits = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]])  # 1 video, 2 views, 3 classes
    e3 = np.exp(3.0)
    view2 = [e3 / (e3 + 2), 1 / (e3 + 2), 1 / (e3 + 2)]
    expected = [(1 / 3 + view2[0]) / 2, (1 / 3 + view2[1]) / 2, (1 / 3 + view2[2]) / 2]
    assert torch.allclose(average_view_softmax(logits)[0], torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    # averaging softmaxes (VideoMAE's merge) is not averaging logits: one over-confident view
    # wins the logit mean [3.33, 2] but not the probability mean [0.37, 0.63]
    logits = torch.tensor([[[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])
    assert average_view_softmax(logits).argmax(-1).item() == 1
    assert logits.mean(1).argmax(-1).item() == 0


def test_topk_and_mean_class_accuracy_vs_loops():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 7, generator=g)
    labels = torch.randint(0, 7, (50,), generator=g)
    labels[labels == 6] = 5  # class 6 absent: must not enter the mean
    acc = topk_accuracy(scores, labels, (1, 5))
    order = scores.argsort(dim=1, descending=True)
    top1 = sum(int(order[i, 0] == labels[i]) for i in range(50)) / 50 * 100
    top5 = sum(int(labels[i] in order[i, :5].tolist()) for i in range(50)) / 50 * 100
    assert abs(acc[1] - top1) < 1e-9 and abs(acc[5] - top5) < 1e-9
    pred = scores.argmax(1)
    per_class = []
    for c in range(7):
        idx = [i for i in range(50) if labels[i] == c]
        if idx:
            per_class.append(sum(int(pred[i] == c) for i in idx) / len(idx))
    assert abs(mean_class_accuracy(pred, labels, 7) - 100 * sum(per_class) / len(per_class)) < 1e-9
    m = classification_metrics(scores.numpy(), labels.numpy())
    assert m["num_videos"] == 50 and abs(m["top1"] - top1) < 1e-6


def test_dedup_keeps_first_occurrence_in_index_order():
    # DistributedSampler(7 samples, 2 ranks): rank0 [0,2,4,6], rank1 [1,3,5,0] (0 repeated)
    index = np.array([0, 2, 4, 6, 1, 3, 5, 0])
    vals = np.array([10, 12, 14, 16, 11, 13, 15, 99])
    ids = [f"v{i}" for i in index]
    out = deduplicate(index, {"vals": vals, "ids": ids})
    assert out["vals"].tolist() == [10, 11, 12, 13, 14, 15, 16]
    assert out["ids"] == [f"v{i}" for i in range(7)]
    assert first_occurrence(index).tolist() == [0, 4, 1, 5, 2, 6, 3]
