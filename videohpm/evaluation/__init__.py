"""Evaluation library: multi-view testing with FLOPs, k-NN on frozen features, visualization.

- :mod:`.multiview` — clips × crops testing, gathered and de-duplicated across ranks,
  `predictions.csv`, `metrics.json`, VideoMAE V1's per-rank `{rank}.txt` (HPM journal Tables 13–14).
- :mod:`.flops` — fvcore GFLOPs per view, parameters, the paper's "180×2×3" table line.
- :mod:`.knn` — DINO's weighted k-NN on mean-pooled, ℓ2-normalized encoder features (HPM journal
  Tables 1, 4, 5); `knn_eval` is the engine's quick health metric of a pre-training run.
- :mod:`.visualize` — input / loss / predicted loss / mask / reconstruction (HPM journal Fig. 2)
  as PNG grid and GIF/MP4; training curves from the engine's `log.jsonl`.

- :mod:`.features` — what frozen features are pooled per video, and `load_features` to read an
  extraction folder back; :mod:`.probe` — logistic probes on such features.
- :mod:`.score_agreement` — top-k overlap and Spearman's ρ of two token rankings, row by row.

What the tools run (test, predict, features, export, ...) lives in :mod:`videohpm.tasks`.
Linear probing is a training recipe: :mod:`videohpm.methods.linear_probe`.
"""
from .flops import CostSummary, count_flops, count_parameters, format_table, format_views
from .gather import deduplicate, gather_arrays, gather_tensor
from .knn import DEFAULT_KS, extract_features, knn_classify, knn_eval, knn_predict, mean_pooled_features
from .metrics import average_view_softmax, classification_metrics, mean_class_accuracy, topk_accuracy
from .multiview import (
    MultiViewPredictions,
    build_test_loader,
    evaluate_multiview,
    gather_predictions,
    predict_multiview,
    write_metrics_json,
    write_predictions_csv,
    write_videomae_txt,
)

__all__ = [
    "CostSummary", "count_flops", "count_parameters", "format_table", "format_views",
    "deduplicate", "gather_arrays", "gather_tensor",
    "DEFAULT_KS", "extract_features", "knn_classify", "knn_eval", "knn_predict", "mean_pooled_features",
    "average_view_softmax", "classification_metrics", "mean_class_accuracy", "topk_accuracy",
    "MultiViewPredictions", "build_test_loader", "evaluate_multiview",
    "gather_predictions", "predict_multiview", "write_metrics_json", "write_predictions_csv",
    "write_videomae_txt",
]
