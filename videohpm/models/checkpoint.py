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

Checkpoint wrappers are unwrapped (``model`` / ``module`` / ``state_dict`` entries) and the
``module.`` (DDP/DeepSpeed) and ``_orig_mod.`` (``torch.compile``) prefixes stripped. Fixed sin-cos
tables are never stored (they are functions of the sizes); a *learned* ``pos_embed`` is
interpolated to the target grid when the sizes differ.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .export import HF_COMMON_RULES as _HF_COMMON_RULES
from .export import export_state_dict, hf_config_from_model, is_timm_layout, timm_to_ours
from .vit import Grid, interpolate_pos_embed

__all__ = [
    "LoadReport",
    "unwrap_state_dict",
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

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

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


def _read(path: Union[str, os.PathLike]) -> Mapping[str, Any]:
    path = os.fspath(path)
    if os.path.isdir(path):  # a Hugging Face save_pretrained() folder
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.exists(os.path.join(path, name)):
                return _read(os.path.join(path, name))
        raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled extras (argparse.Namespace 'args' …) need a full unpickle
        raise RuntimeError(
            f"{path}: could not be read with torch.load(weights_only=True) ({err}). If you trust the "
            "file, load it yourself with torch.load(..., weights_only=False) and pass the dict."
        ) from err


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
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
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
# Per-layer HF names -> ours: _HF_COMMON_RULES (videohpm.models.export, shared with the HF export).
# q/v biases: transformers >= 5 modules call them query.bias / value.bias; files on the Hub (and
# transformers < 5 modules) call them q_bias / v_bias (transformers 5 renames them on load).
_HF_BIAS_RULES = (
    ("attention.attention.query.bias", "attn.q_bias"),
    ("attention.attention.value.bias", "attn.v_bias"),
    ("attention.attention.q_bias", "attn.q_bias"),
    ("attention.attention.v_bias", "attn.v_bias"),
)
_HF_LAYER_RULES = _HF_BIAS_RULES + _HF_COMMON_RULES
_HF_LAYER = re.compile(r"^(videomae\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")


def _hf_to_ours(sd: Mapping[str, torch.Tensor]) -> StateDict:
    src = dict(sd)
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in src):  # bare VideoMAEModel
        src = {("videomae." + k if k.startswith(("embeddings.", "encoder.layer.", "layernorm.")) else k): v
               for k, v in src.items()}
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in src.items():
        m = _HF_LAYER.match(k)
        if m:
            root = "encoder.blocks" if m.group(1).startswith("videomae") else "decoder.blocks"
            base, rest = f"{root}.{m.group(2)}.", m.group(3)
            proj = re.match(r"attention\.attention\.(query|key|value)\.weight$", rest)
            if proj:
                qkv.setdefault(base, {})[proj.group(1)] = v
                continue
            for old, new in _HF_LAYER_RULES:
                if rest.startswith(old):
                    out[base + new + rest[len(old):]] = v
                    break
            else:
                out[k] = v  # unknown layer key: surfaces as "unexpected"
            continue
        if k.startswith("videomae.embeddings.patch_embeddings.projection."):
            out["encoder.patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("videomae.layernorm."):
            out["encoder.norm." + k.rsplit(".", 1)[1]] = v
        elif k == "encoder_to_decoder.weight":
            out["decoder.embed.weight"] = v
        elif k == "mask_token":
            out["decoder.mask_token"] = v
        elif k.startswith("classifier."):
            out["head." + k.split(".", 1)[1]] = v
        else:  # decoder.norm, decoder.head, fc_norm keep their names
            out[k] = v
    for base, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"HF checkpoint: incomplete query/key/value weights for {base} (have {sorted(parts)})")
        out[base + "attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def _videomae_to_ours(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for k, v in sd.items():
        if k == "encoder_to_decoder.weight":
            k = "decoder.embed.weight"
        elif k == "mask_token":
            k = "decoder.mask_token"
        elif k.startswith(("patch_embed.", "blocks.", "norm.", "pos_embed")):  # fine-tuned ViT
            k = "encoder." + k
        out[k] = v
    return out


def to_canonical(sd: Mapping[str, torch.Tensor], source_format: Optional[str] = None) -> tuple[StateDict, str]:
    """Convert an (unwrapped) state dict to our key names. Returns ``(state_dict, format)``."""
    fmt = source_format or detect_format(sd)
    if fmt == "hf":
        return _hf_to_ours(sd), fmt
    if fmt == "videomae":
        return _videomae_to_ours(sd), fmt
    if fmt == "timm":
        return timm_to_ours(sd), fmt
    if fmt == "videohpm":
        return dict(sd), fmt
    raise ValueError(f"unknown source_format {fmt!r}; expected 'videohpm', 'videomae', 'timm' or 'hf'")


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


def load_pretrained(
    model: nn.Module,
    path_or_state_dict: Union[str, os.PathLike, Mapping[str, Any]],
    strict: bool = False,
    source_format: Optional[str] = None,
    src_grid: Optional[Grid] = None,
) -> LoadReport:
    """Load weights of any supported layout into a MaskedAutoencoder or VideoClassifier.

    Keys are converted to our names; tensors whose shape differs (e.g. another class count) are
    skipped and reported as ``mismatched``; a learned ``pos_embed`` is interpolated in time and
    space to the model's grid (``src_grid`` overrides the inferred source grid). Parts the target
    has no use for (pre-training decoders in a classifier, a classifier head or the final norm
    replaced by mean pooling) are reported as ``ignored``.

    Args:
        strict: raise ``RuntimeError`` (with the report) if anything is missing, unexpected or
            mismatched.
    """
    obj = _read(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else path_or_state_dict
    sd, fmt = to_canonical(unwrap_state_dict(obj), source_format)
    report = LoadReport(source_format=fmt)
    own = model.state_dict()
    is_classifier = not hasattr(model, "decoder")

    def is_ignored(k: str) -> bool:
        if k == "encoder.cls_token":  # a ccMIM [CLS] token: unused by a model without one
            return True
        if is_classifier:
            if k.startswith(("decoder.", "loss_predictor.")):
                return True
            return k.startswith("encoder.norm.") and not any(o.startswith("encoder.norm.") for o in own)
        return k.startswith(("fc_norm.", "head.")) or (
            k.startswith("loss_predictor.") and getattr(model, "loss_predictor", None) is None)

    to_load: StateDict = {}
    for k, v in sd.items():
        if k not in own:
            (report.ignored if is_ignored(k) else report.unexpected).append(k)
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
    report.missing = sorted(k for k in own if k not in to_load and not any(k == m[0] for m in report.mismatched))
    if strict and not report.ok:
        raise RuntimeError(f"load_pretrained(strict=True) failed:\n{report}")
    model.load_state_dict(to_load, strict=False)
    return report
