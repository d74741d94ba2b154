"""Checkpoint formats, in one place: reading a file safely (:mod:`.reading`), telling a layout
from its key names and converting it to ours (:mod:`.layouts`: VideoMAE V1/V2, Hugging Face,
timm / MAE, HPM's official image model), and converting ours back and writing the files of an
export (:mod:`.writing`). The key tables live in :mod:`.hf_keys` (HF, VideoMAE's decoder names)
and :mod:`.mae_layout` (MAE / HPM), each read in both directions.

Loading converted weights into a model (shape checks, pos-embed interpolation, the report):
`videohpm.models.loading.load_pretrained`. Reading a run's DeepSpeed folders:
`videohpm.engine.checkpoint.read_checkpoint`.
"""
from .layouts import (TEACHER_KEYS, detect_format, is_timm_layout, select_weights, teacher_state_dict, timm_to_ours,
                      to_canonical, unwrap_state_dict)
from .reading import SAFE_GLOBALS, CheckpointRefusedError, read_checkpoint_file, resolve_checkpoint_path, \
    weights_only_loads
from .writing import EXPORT_FORMATS, built_name, export_state_dict, hf_config_from_model, timm_model_args, write_export

__all__ = [
    "TEACHER_KEYS", "detect_format", "is_timm_layout", "select_weights", "teacher_state_dict", "timm_to_ours",
    "to_canonical", "unwrap_state_dict",
    "SAFE_GLOBALS", "CheckpointRefusedError", "read_checkpoint_file", "resolve_checkpoint_path", "weights_only_loads",
    "EXPORT_FORMATS", "built_name", "export_state_dict", "hf_config_from_model", "timm_model_args", "write_export",
]
