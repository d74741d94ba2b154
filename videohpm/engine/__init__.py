"""Training engine: DeepSpeed (ZeRO 0–3, bf16/fp16/fp32), schedules, checkpoints, logging.

Entry point: `videohpm.engine.train(cfg)` with a config from `videohpm.config.load_config`.
The engine drives any recipe of `videohpm.methods` through `forward(batch, progress)` and
`on_step_end()`; it knows nothing about HPM itself.
"""
from .checkpoint import CheckpointInfo, checkpoint_info, find_latest, list_checkpoints
from .trainer import NonFiniteLossError, Trainer, resolve_precision, train
from videohpm.schedules import CosineSchedule, cosine_value  # the engine's schedules (bottom layer)

__all__ = [
    "train",
    "Trainer",
    "NonFiniteLossError",
    "resolve_precision",
    "CosineSchedule",
    "cosine_value",
    "CheckpointInfo",
    "checkpoint_info",
    "find_latest",
    "list_checkpoints",
]
