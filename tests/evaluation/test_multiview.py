"""Multi-view testing on a tiny model: the view-softmax average by hand, outputs, broken videos."""
import csv
import json

import numpy as np
import torch

from .helpers import SyntheticViews, tiny_classifier
from videohpm.evaluation.multiview import (
    build_test_loader,
    evaluate_multiview,
    predict_multiview,
    write_metrics_json,
    write_predictions_csv,
    write_videomae_txt,
)


def test_view_softmax_average_matches_per_view_loop():
    model = tiny_classifier()
    ds = SyntheticViews(5, views=6, num_classes=5)
    preds, metrics = evaluate_multiview(model, ds, batch_size=2, num_crops=3, keep_view_logits=True)
    assert preds.video_ids == [f"vid{i:03d}" for i in range(5)]
    with torch.no_grad():
        for i in range(5):
            views = ds[i]["views"]
            per_view = [torch.softmax(model(views[v:v + 1])[0], -1) for v in range(6)]  # one view at a time
            expected = torch.stack(per_view).mean(0)
            assert np.allclose(preds.probs[i], expected.numpy(), atol=1e-5)
            assert np.allclose(preds.view_logits[i, 3], model(views[3:4])[0].numpy(), atol=1e-5)
    top1 = np.mean([preds.probs[i].argmax() == i % 5 for i in range(5)]) * 100
    assert abs(metrics["top1"] - top1) < 1e-6
    assert metrics["num_videos"] == 5 and metrics["num_broken"] == 0 and metrics["num_views"] == 6


def test_broken_videos_listed_not_counted(tmp_path):
    model = tiny_classifier()
    ds = SyntheticViews(6, views=2, broken=[1, 4])
    preds, m = evaluate_multiview(model, ds, batch_size=4, num_crops=1,
                                  videomae_dir=str(tmp_path / "videomae"))
    good = [0, 2, 3, 5]
    assert m["num_videos"] == 4 and m["num_broken"] == 2
    assert m["broken_videos"] == [{"video_id": "vid001", "error": "synthetic decode error"},
                                  {"video_id": "vid004", "error": "synthetic decode error"}]
    top1 = np.mean([preds.probs[i].argmax() == preds.labels[i] for i in good]) * 100
    assert abs(m["top1"] - top1) < 1e-6
    write_predictions_csv(preds, str(tmp_path / "predictions.csv"))
    write_metrics_json(m, str(tmp_path / "metrics.json"))
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert [r["video_id"] for r in rows] == [f"vid{i:03d}" for i in range(6)]
    assert rows[1]["ok"] == "0" and rows[1]["top5_ids"] == ""
    top5 = [int(c) for c in rows[0]["top5_ids"].split()]
    assert top5 == np.argsort(-preds.probs[0])[:5].tolist()
    assert abs(float(rows[0]["top5_scores"].split()[0]) - preds.probs[0].max()) < 1e-6
    saved = json.load(open(tmp_path / "metrics.json"))
    assert saved["num_broken"] == 2 and abs(saved["top1"] - m["top1"]) < 1e-9
    # VideoMAE's per-rank file: header + one line per view of the decodable videos
    lines = open(tmp_path / "videomae" / "0.txt").read().splitlines()
    assert len(lines) == 1 + 4 * 2
    assert not any(line.startswith(("vid001", "vid004")) for line in lines[1:])


def _videomae_merge(paths):
    """VideoMAE V1 `merge` as its format describes it: parse `id [logits] label chunk split`,
    drop repeated (chunk, split) per id, softmax each view, average, argmax."""
    feats, labels = {}, {}
    for path in paths:
        for line in open(path).read().splitlines()[1:]:
            name = line.split("[")[0].strip()
            data = np.array([float(v) for v in line.split("[")[1].split("]")[0].split(",")])
            label, chunk, split = line.split("]")[1].split()
            key = (chunk, split)
            feats.setdefault(name, {})
            if key in feats[name]:
                continue
            e = np.exp(data - data.max())
            feats[name][key] = e / e.sum()
            labels[name] = int(label)
    top1 = np.mean([np.mean(list(v.values()), 0).argmax() == labels[k] for k, v in feats.items()])
    return 100 * top1, {k: np.mean(list(v.values()), 0) for k, v in feats.items()}


def test_videomae_format_round_trips_through_merge(tmp_path):
    model = tiny_classifier()
    ds = SyntheticViews(5, views=6)
    loader = build_test_loader(ds, batch_size=2)
    local = predict_multiview(model, loader, num_crops=3, keep_view_logits=True)
    path = write_videomae_txt(local, str(tmp_path), rank=0)
    lines = open(path).read().splitlines()
    assert len(lines) == 1 + 5 * 6
    first = lines[1]
    assert first.startswith("vid000 [") and first.endswith("] 0 0 0")
    assert lines[1 + 5].endswith(" 0 1 2")  # view 5 = clip 1, crop 2
    top1, probs = _videomae_merge([path])
    assert abs(top1 - local.metrics()["top1"]) < 1e-9
    for i in range(5):
        assert np.allclose(probs[f"vid{i:03d}"], local.probs[i], atol=1e-5)
