"""Load, convert and export weights: ours, VideoMAE V1/V2, Hugging Face ``transformers`` VideoMAE.

Formats (state-dict key layouts):

- ``"videohpm"`` (ours): ``encoder.{patch_embed,blocks,norm}``, ``decoder.{embed,mask_token,
  blocks,norm,head}``, ``loss_predictor.*`` (d_ψ), classifier ``fc_norm``/``head``.
- ``"videomae"`` (V1/V2, also HPM's video code): pre-training ``encoder.*``,
  ``encoder_to_decoder.weight``, ``mask_token``, ``decoder.*``; fine-tuning ``patch_embed``,
  ``blocks``, ``norm``, ``fc_norm``, ``head`` without prefix. Attention keys (``attn.qkv.weight``,
  ``attn.q_bias``, ``attn.v_bias``) are the same as ours.
- ``"hf"``: ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification`` / ``VideoMAEModel``
  (``videomae.`` prefix, separate query/key/value linears, ``classifier``).
- ``"timm"`` (timm ViT, MAE) and ``"hpm"`` (HPM's official image model, whole: encoder, pixel
  decoder and the ``decoder_*_losspred`` loss predictor; :mod:`videohpm.models.mae_layout`).

Checkpoint wrappers are unwrapped (``model`` / ``module`` / ``state_dict`` entries) and the
``module.`` (DDP/DeepSpeed) and ``_orig_mod.`` (``torch.compile``) prefixes stripped. Fixed sin-cos
tables are never stored (they are functions of the sizes); a *learned* ``pos_embed`` is
interpolated to the target grid when the sizes differ.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .export import export_state_dict, hf_config_from_model, is_timm_layout, timm_to_ours
from .hf_keys import VIDEOMAE_DECODER_RULES, hf_to_ours, rename_key
from .mae_layout import is_hpm_layout, mae_to_ours
from .vit import Grid, interpolate_pos_embed

__all__ = [
    "LoadReport",
    "SAFE_GLOBALS",
    "CheckpointRefusedError",
    "PretrainedMismatchError",
    "read_checkpoint_file",
    "resolve_checkpoint_path",
    "weights_only_loads",
    "unwrap_state_dict",
    "select_weights",
    "teacher_state_dict",
    "TEACHER_KEYS",
    "detect_format",
    "to_canonical",
    "export_state_dict",
    "load_pretrained",
    "hf_config_from_model",
]

StateDict = dict[str, torch.Tensor]


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. ``missing``/``unexpected`` are in *our* key names."""

    source_format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # parts the target model has no use for
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    expected_missing: list[str] = field(default_factory=list)  # the model's new parts (a new head)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problem_keys(self) -> list[str]:
        """Keys that make a fine-tuning start wrong: unexpected, mismatched, and missing outside
        the model's new parts (``expected_missing``)."""
        mism = [m[0] for m in self.mismatched]
        return self.unexpected + mism + [k for k in self.missing if k not in self.expected_missing and k not in mism]

    def problems(self, limit: int = 12) -> str:
        """The unexpected, mismatched (checkpoint → model shape) and unexplained missing keys,
        one category a line."""
        def fmt(keys: Sequence[str]) -> str:
            keys = list(keys)
            return ", ".join(keys[:limit]) + (f" … (+{len(keys) - limit} more)" if len(keys) > limit else "")

        mism = [m[0] for m in self.mismatched]
        missing = [k for k in self.missing if k not in self.expected_missing and k not in mism]
        lines = [f"  loaded {len(self.loaded)} tensors (format {self.source_format})"]
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}, not in the model): {fmt(self.unexpected)}")
        if self.mismatched:
            lines.append(f"  mismatched ({len(self.mismatched)}, checkpoint shape -> model shape, kept at their "
                         f"initialisation): " + fmt([f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in self.mismatched]))
        if missing:
            lines.append(f"  missing ({len(missing)}, not in the checkpoint): {fmt(missing)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        def fmt(keys: Sequence[Any], limit: int = 8) -> str:
            keys = list(keys)
            more = f" … (+{len(keys) - limit})" if len(keys) > limit else ""
            return ", ".join(str(k) for k in keys[:limit]) + more

        lines = [f"LoadReport(format={self.source_format}, loaded={len(self.loaded)})"]
        for name in ("missing", "unexpected", "ignored", "mismatched", "interpolated"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"  {name} ({len(keys)}): {fmt(keys)}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Reading and unwrapping
# ----------------------------------------------------------------------------------------------
_WRAPPER_KEYS = ("model", "module", "state_dict", "model_state", "model_state_dict")
_STRIP_PREFIXES = ("module.", "_orig_mod.")


# The only globals a checkpoint file may pickle besides tensors and plain containers (dict, list,
# tuple, set, str, numbers, None, OrderedDict, torch.Size ...): the `args` entry of the official
# VideoMAE / VideoMAE V2 `utils.save_model` files, an `argparse.Namespace` of the run's options.
SAFE_GLOBALS: tuple = (argparse.Namespace,)
_DEEPSPEED_MODEL_STATES = "mp_rank_00_model_states.pt"


class PretrainedMismatchError(ValueError, RuntimeError):
    """Pre-trained weights do not fit the model (:func:`load_pretrained`); ``report`` is the
    :class:`LoadReport` and the message lists the keys."""

    def __init__(self, message: str, report: "LoadReport") -> None:
        super().__init__(message)
        self.report = report


class CheckpointRefusedError(ValueError):
    """A checkpoint file holds something other than tensors, plain containers and
    ``argparse.Namespace`` (or is no checkpoint at all); the message says what and what to do."""


def resolve_checkpoint_path(path: Union[str, os.PathLike]) -> str:
    """The file that holds the weights of ``path``: the path itself for a file; in a folder, a
    Hugging Face ``save_pretrained()`` file (``model.safetensors`` / ``pytorch_model.bin``), a
    DeepSpeed tag folder's ``mp_rank_00_model_states.pt`` (VideoMAE's ``checkpoint-N/``), or the
    tag named by the folder's ``latest`` file (DeepSpeed's save root).

    Raises:
        FileNotFoundError: nothing of the above.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not os.path.isdir(path):
        return path
    for name in ("model.safetensors", "pytorch_model.bin", _DEEPSPEED_MODEL_STATES):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    latest = os.path.join(path, "latest")
    if os.path.isfile(latest):
        with open(latest) as f:
            tag = f.read().strip()
        tagged = os.path.join(path, tag)
        if tag and os.path.isfile(os.path.join(tagged, _DEEPSPEED_MODEL_STATES)):
            return os.path.join(tagged, _DEEPSPEED_MODEL_STATES)
        raise FileNotFoundError(f"{path}: its 'latest' file names {tag!r}, but {tagged} holds no "
                                f"{_DEEPSPEED_MODEL_STATES}")
    raise FileNotFoundError(f"{path}: a folder without weights (no model.safetensors, pytorch_model.bin, "
                            f"{_DEEPSPEED_MODEL_STATES} or DeepSpeed 'latest' file)")


def _refusal(path: str, err: Exception) -> CheckpointRefusedError:
    m = re.search(r"GLOBAL ([\w.]+)", str(err))
    if m is None:
        why = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
        reason = why.group(1) if why else (str(err).splitlines() or [type(err).__name__])[0]
        if "Unsupported operand" in reason or "load key" in reason:  # not a pickle at all
            reason = f"not a torch.save file: {reason}"
        return CheckpointRefusedError(
            f"{path}: not a readable PyTorch checkpoint ({reason[:200]}). Pass a .pth/.pt file written by "
            "torch.save, a .safetensors file, or a checkpoint folder.")
    what = m.group(1)
    return CheckpointRefusedError(
        f"{path}: refused — the file pickles the Python object {what!r}. Checkpoints are read with "
        "torch.load(weights_only=True) only (tensors, plain containers and argparse.Namespace), because "
        "unpickling any other object can run arbitrary code on this machine. If you made this file and "
        "trust it, save its weights alone and pass that file instead: python -c \"import torch; "
        f"ck = torch.load({path!r}, weights_only=False); torch.save(ck.get('model', ck), 'weights.pth')\"")


_TORCH_LOAD = torch.load  # the real one, also while `weights_only_loads` replaces torch.load


def read_checkpoint_file(path: Union[str, os.PathLike], extra_safe_globals: Sequence[Any] = (),
                         map_location: Any = "cpu") -> Any:
    """Read a checkpoint safely: the one reader of every tool and the engine.

    ``.safetensors`` files through ``safetensors``; anything else with
    ``torch.load(weights_only=True)`` and :data:`SAFE_GLOBALS` allowed (the official VideoMAE /
    VideoMAE V2 files: ``{"model", "optimizer", "epoch", "scaler", "args": Namespace}``) — never
    a full unpickle. Folders are resolved by :func:`resolve_checkpoint_path` (Hugging Face and
    DeepSpeed folders).

    Args:
        extra_safe_globals: more classes to allow (the engine passes DeepSpeed's optimizer-state
            classes when it resumes its own checkpoints).
        map_location: as ``torch.load``'s (CPU by default).
    Raises:
        FileNotFoundError: no such file, or a folder without weights.
        CheckpointRefusedError: the file needs another global (named in the message) or is no
            checkpoint.
    """
    path = resolve_checkpoint_path(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file  # lazy: only .safetensors files need it

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError for a damaged file
            raise CheckpointRefusedError(f"{path}: not a readable .safetensors file ({err})") from None
    try:
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_safe_globals]):
            return _TORCH_LOAD(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, OSError) as err:
        if isinstance(err, (FileNotFoundError, IsADirectoryError)):
            raise
        raise _refusal(path, err) from None



@contextlib.contextmanager
def weights_only_loads(extra_safe_globals: Sequence[Any] = ()) -> Iterator[None]:
    """Inside, every ``torch.load(path, ...)`` is :func:`read_checkpoint_file` (``weights_only=True``,
    :data:`SAFE_GLOBALS` + ``extra_safe_globals``), whatever its caller asks for: for the
    third-party readers that unpickle on their own — DeepSpeed's checkpoint engine
    (``engine.load_checkpoint``) and ``zero_to_fp32``. Not thread-safe (it swaps ``torch.load``)."""
    def load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, os.PathLike)):
            return read_checkpoint_file(f, extra_safe_globals, map_location=map_location)
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_safe_globals]):
            return _TORCH_LOAD(f, map_location=map_location, weights_only=True)

    saved = torch.load
    torch.load = load
    try:
        yield
    finally:
        torch.load = saved

#: Where checkpoints keep an EMA teacher next to the student: HPM's official files
#: (``ema_state_dict``), ours (``model_final.pth``: ``teacher``), timm / DeiT (``model_ema``).
TEACHER_KEYS = ("ema_state_dict", "teacher", "model_ema")


def select_weights(obj: Any, teacher: bool = False) -> Any:
    """The part of a checkpoint to load: all of it (the student, found by
    :func:`unwrap_state_dict`), or with ``teacher`` the EMA teacher's state dict (:data:`TEACHER_KEYS`).

    Raises:
        ValueError: ``teacher`` and the checkpoint holds none (naming what it holds).
    """
    if not teacher:
        return obj
    if isinstance(obj, Mapping):
        for key in TEACHER_KEYS:
            if isinstance(obj.get(key), Mapping) and obj[key]:
                return obj[key]
    top = list(obj.keys())[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"the checkpoint holds no EMA teacher (looked for {', '.join(TEACHER_KEYS)}; it has {top})")


def teacher_state_dict(obj: Any) -> Optional[StateDict]:
    """The EMA teacher a checkpoint holds next to its student (:data:`TEACHER_KEYS`), in our key
    names (any layout :func:`to_canonical` reads), or None when it holds none."""
    if not isinstance(obj, Mapping) or not any(isinstance(obj.get(k), Mapping) and obj[k] for k in TEACHER_KEYS):
        return None
    return to_canonical(unwrap_state_dict(select_weights(obj, teacher=True)))[0]


def unwrap_state_dict(obj: Mapping[str, Any]) -> StateDict:
    """Find the tensor dict inside a checkpoint and strip ``module.`` / ``_orig_mod.`` prefixes."""
    sd: Any = obj
    for _ in range(3):  # e.g. {"module": {"model": {...}}} — unwrap a few levels
        if not isinstance(sd, Mapping):
            break
        if any(isinstance(v, torch.Tensor) for v in sd.values()):
            break
        inner = next((sd[k] for k in _WRAPPER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = inner
    if not isinstance(sd, Mapping) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        top = list(obj.keys())[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"no state dict of tensors found in checkpoint (top-level keys: {top})")
    out: StateDict = {}
    # a recipe-level state dict (a DeepSpeed checkpoint of the engine: the recipe wraps `model`)
    recipe_level = all(k.startswith(("model.", "module.model.")) for k, v in sd.items() if isinstance(v, torch.Tensor))
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        if recipe_level:
            k = k[len("module."):] if k.startswith("module.") else k
            k = k[len("model."):]
        for prefix in _STRIP_PREFIXES:
            while k.startswith(prefix):
                k = k[len(prefix):]
            k = k.replace("." + prefix, ".")
        out[k] = v
    return out


def detect_format(sd: Mapping[str, torch.Tensor]) -> str:
    """``"hf"``, ``"videomae"``, ``"timm"`` (timm ViT / MAE) or ``"videohpm"`` from the key names
    (raises if none fits)."""
    keys = list(sd.keys())
    if any(".attention.attention.query." in k or k.startswith(("videomae.", "embeddings.patch_embeddings"))
           for k in keys):
        return "hf"
    if is_hpm_layout(sd):
        return "hpm"  # HPM's official image model (MAE's names + decoder_*_losspred)
    if any(k.startswith(("decoder.embed.", "decoder.mask_token", "loss_predictor.")) for k in keys):
        return "videohpm"
    if any(k.startswith(("encoder.blocks.", "encoder.patch_embed.")) for k in keys):
        # V1/V2 pre-training (encoder_to_decoder, mask_token) or an encoder-only dump of ours —
        # the encoder keys are the same in both.
        return "videomae" if any(k in ("encoder_to_decoder.weight", "mask_token") for k in keys) else "videohpm"
    if is_timm_layout(sd):
        return "timm"  # timm ViT / official MAE (fused qkv bias, 2-D patch conv, MAE's decoder_* names)
    if any(k.startswith(("blocks.", "patch_embed.")) for k in keys):
        return "videomae"  # V1/V2 fine-tuned ViT
    raise ValueError(f"unrecognised checkpoint layout (first keys: {keys[:8]})")


# ----------------------------------------------------------------------------------------------
# Conversions to our key names
# ----------------------------------------------------------------------------------------------
def _videomae_to_ours(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for k, v in sd.items():
        new = rename_key(k, VIDEOMAE_DECODER_RULES)
        if new is not None:
            k = new
        elif k.startswith(("patch_embed.", "blocks.", "norm.", "pos_embed")):  # fine-tuned ViT
            k = "encoder." + k
        out[k] = v
    return out


def to_canonical(sd: Mapping[str, torch.Tensor], source_format: Optional[str] = None) -> tuple[StateDict, str]:
    """Convert an (unwrapped) state dict to our key names. Returns ``(state_dict, format)``."""
    fmt = source_format or detect_format(sd)
    if fmt == "hf":
        return hf_to_ours(sd), fmt
    if fmt == "videomae":
        return _videomae_to_ours(sd), fmt
    if fmt == "timm":
        return timm_to_ours(sd), fmt
    if fmt == "hpm":
        return mae_to_ours(sd), fmt
    if fmt == "videohpm":
        return dict(sd), fmt
    raise ValueError(f"unknown source_format {fmt!r}; expected 'videohpm', 'videomae', 'timm', 'hpm' or 'hf'")


# ----------------------------------------------------------------------------------------------
# Export: export_state_dict / hf_config_from_model live in videohpm.models.export (imported above,
# still importable from here).
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def _infer_src_grid(n_src: int, dst: Grid) -> Grid:
    t, h, w = dst
    if n_src % t == 0:  # same number of time slices, square space (VideoMAE's assumption)
        s = math.isqrt(n_src // t)
        if s * s == n_src // t:
            return (t, s, s)
    if n_src % (h * w) == 0:  # same space, other number of time slices
        return (n_src // (h * w), h, w)
    raise ValueError(f"cannot infer the grid of a {n_src}-token pos_embed for target grid {dst}; pass src_grid=")


def _new_part_prefixes(model: nn.Module) -> tuple:
    """Parts of ``model`` that a pre-trained checkpoint is not expected to hold: the new
    classifier head (``fc_norm``, ``head``, a time-pooling head's ``feat_norm``) when fine-tuning;
    the loss predictor d_ψ (VideoMAE has none) and the decoders (an encoder-only checkpoint) of a
    pre-training model."""
    if hasattr(model, "decoder"):
        return ("decoder.", "loss_predictor.")
    return ("fc_norm.", "head.", "feat_norm.")


def load_pretrained(
    model: nn.Module,
    path_or_state_dict: Union[str, os.PathLike, Mapping[str, Any]],
    strict: Union[bool, str] = False,
    source_format: Optional[str] = None,
    src_grid: Optional[Grid] = None,
    teacher: bool = False,
) -> LoadReport:
    """Load weights of any supported layout into a MaskedAutoencoder or VideoClassifier.

    Keys are converted to our names; tensors whose shape differs (e.g. another class count, another
    tubelet) are skipped, reported as ``mismatched`` *and* counted as ``missing`` (the model keeps
    its initialisation there); a learned ``pos_embed`` is interpolated in time and space to the
    model's grid (``src_grid`` overrides the inferred source grid). Parts the target has no use
    for are reported as ``ignored``: pre-training decoders, ``mask_token`` and the loss predictor
    in a classifier, the final norm a mean-pooling classifier replaces, a ccMIM ``cls_token``, a
    ``teacher.*`` copy, a classifier head in a pre-training model.

    Args:
        strict: ``False``: load what fits and report the rest. ``"parts"`` (what fine-tuning
            uses): raise :class:`PretrainedMismatchError` if any key is unexpected or mismatched,
            or missing outside the model's new parts (``fc_norm``/``head`` of a classifier,
            ``decoder``/``loss_predictor`` of a pre-training model). ``True``: raise unless
            every key fits (``report.ok``). The model is left untouched when it raises.
        teacher: load the EMA teacher saved next to the student (:func:`select_weights`: HPM's
            ``ema_state_dict``, our ``teacher``) instead of the student (``model.pretrained_teacher``).
    Raises:
        PretrainedMismatchError: as ``strict`` says, and always when not one tensor fits (another
            model's checkpoint: training would silently start from scratch).
    """
    if strict not in (False, True, "parts"):
        raise ValueError(f"load_pretrained: strict must be False, True or 'parts', got {strict!r}")
    obj = read_checkpoint_file(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else path_or_state_dict
    sd, fmt = to_canonical(unwrap_state_dict(select_weights(obj, teacher)), source_format)
    report = LoadReport(source_format=fmt)
    own = model.state_dict()
    to_load: StateDict = {}
    for k, v in sd.items():
        if k not in own:
            (report.ignored if _is_ignored(model, own, k) else report.unexpected).append(k)
            continue
        target = own[k]
        if k == "encoder.pos_embed" and v.shape != target.shape and v.shape[-1] == target.shape[-1]:
            dst = model.encoder.default_grid
            src = tuple(src_grid) if src_grid is not None else _infer_src_grid(v.shape[-2], dst)
            v = interpolate_pos_embed(v.reshape(1, -1, v.shape[-1]), src, dst)
            report.interpolated.append(k)
        if v.shape != target.shape:
            report.mismatched.append((k, tuple(v.shape), tuple(target.shape)))
            continue
        to_load[k] = v
    report.loaded = sorted(to_load)
    report.missing = sorted(k for k in own if k not in to_load)  # mismatched ones included
    new_parts = _new_part_prefixes(model)
    report.expected_missing = [k for k in report.missing if k.startswith(new_parts)
                               and not any(k == m[0] for m in report.mismatched)]
    _refuse(model, report, strict)
    model.load_state_dict(to_load, strict=False)
    return report


def _is_ignored(model: nn.Module, own: Mapping[str, torch.Tensor], k: str) -> bool:
    """A checkpoint key ``model`` has no use for (``load_pretrained``'s docstring)."""
    if k == "encoder.cls_token" or k.startswith("teacher."):  # ccMIM [CLS]; an EMA copy
        return True
    if not hasattr(model, "decoder"):  # a classifier
        if k.startswith(("decoder.", "loss_predictor.")):
            return True
        return k.startswith("encoder.norm.") and not any(o.startswith("encoder.norm.") for o in own)
    return k.startswith(("fc_norm.", "head.")) or (
        k.startswith("loss_predictor.") and getattr(model, "loss_predictor", None) is None)


def _refuse(model: nn.Module, report: LoadReport, strict: Union[bool, str]) -> None:
    """Raise :class:`PretrainedMismatchError` as ``load_pretrained``'s ``strict`` says."""
    if not report.loaded:
        raise PretrainedMismatchError(
            f"not one tensor of the checkpoint fits this model (another width, depth or patch size?):\n"
            f"{report.problems()}", report)
    hint = _layout_hint(model, report.source_format)
    if strict is True and not report.ok:
        raise PretrainedMismatchError(f"load_pretrained(strict=True): the checkpoint does not fit the model:\n{report}"
                                      f"{hint}", report)
    if strict == "parts" and report.problem_keys():
        raise PretrainedMismatchError(f"the checkpoint does not fit the model:\n{report.problems()}{hint}", report)


def _layout_hint(model: nn.Module, fmt: str) -> str:
    """A line naming the model options an official HPM / MAE file needs, when they are off."""
    if fmt not in ("hpm", "timm") or getattr(model, "encoder", None) is None:
        return ""
    enc = model.encoder
    if not hasattr(model, "decoder"):
        if enc.cls_token is None:
            return ("\n  an official MAE / HPM encoder: fine-tune it with model.kwargs {cls_token: true, "
                    "use_learnable_pos_emb: true} (configs/finetune/in1k_vit_b.yaml)")
        return ""
    wanted = {"cls_token": enc.cls_token is not None, "cls_in_pretraining": getattr(model, "cls_in_pretraining", False),
              "sincos_table": enc.sincos_table == "2d", "decoder_embed_bias": model.decoder.embed.bias is not None}
    if fmt == "hpm":
        wanted["loss_predictor_layout"] = getattr(model, "loss_predictor_layout", None) == "hpm"
    off = [k for k, ok in wanted.items() if not ok]
    if not off:
        return ""
    return (f"\n  the official {fmt.upper() if fmt == 'hpm' else 'MAE'} image model needs model.kwargs {off} as in "
            "configs/pretrain/in1k_vit_b_hpm.yaml")
