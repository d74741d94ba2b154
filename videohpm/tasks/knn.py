"""The work behind `tools/knn.py`: weighted k-NN top-1 / top-5 of a checkpoint's frozen,
mean-pooled encoder features (`videohpm.evaluation.knn`, DINO's protocol), written as `knn.json`.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional

from omegaconf import DictConfig

from videohpm import distributed as vdist
from videohpm.engine.data import build_knn_loaders
from videohpm.evaluation.knn import knn_eval, mean_pooled_features
from videohpm.evaluation.multiview import write_metrics_json
from videohpm.models.formats import built_name
from videohpm.tasks.weights import eval_amp_dtype, load_encoder

__all__ = ["run_knn"]


def run_knn(cfg: DictConfig, checkpoint: Optional[str], output_dir: str, teacher: bool = False,
            batch_size: Optional[int] = None, on_checks_passed: Optional[Callable[[], None]] = None
            ) -> Dict[str, Any]:
    """Weighted k-NN top-1/top-5 of a checkpoint's frozen, mean-pooled encoder features (HPM journal
    Tables 1, 4, 5; DINO's protocol, `videohpm.evaluation.knn`): `data.train` is the memory bank,
    `data.val` the queries, both through the validation transform; k over `train.knn_k`, T =
    `train.knn_temperature`. All ranks extract their share; rank 0 writes `knn.json` (not when
    a list had no readable video). `on_checks_passed`: as in :func:`run_test`.

    Returns the metrics (identical on every rank).
    """
    device = vdist.init_distributed(cfg.train.dist_backend or None)
    model = load_encoder(cfg, checkpoint, teacher=teacher).to(device)
    train_loader, val_loader = build_knn_loaders(cfg.data, int(batch_size or cfg.train.batch_size),
                                                 vdist.get_world_size(), vdist.get_rank(), device.type == "cuda")
    if on_checks_passed is not None:
        on_checks_passed()
    amp = eval_amp_dtype(str(cfg.train.precision), device)
    num_classes = cfg.data.num_classes
    res = knn_eval(mean_pooled_features(model), train_loader, val_loader, ks=[int(k) for k in cfg.train.knn_k],
                   temperature=float(cfg.train.knn_temperature),
                   num_classes=int(num_classes) if num_classes is not None else None,
                   device=device, amp_dtype=amp, module=model)
    res.update(checkpoint=None if checkpoint is None else os.path.abspath(checkpoint), teacher=teacher,
               temperature=float(cfg.train.knn_temperature), world_size=vdist.get_world_size(),
               model=built_name(model))
    if vdist.is_main_process() and res["knn_val_samples"] and res["knn_train_samples"]:
        write_metrics_json(res, os.path.join(output_dir, "knn.json"))
    vdist.barrier()
    return res
