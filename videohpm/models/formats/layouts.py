"""Checkpoint layouts: find the state dict inside a checkpoint, tell its layout from the key names,
and convert it to ours.

- ``"videohpm"`` (ours): ``encoder.{patch_embed,blocks,norm}``, ``decoder.{embed,mask_token,
  blocks,norm,head}``, ``loss_predictor.*`` (d_ψ), classifier ``fc_norm``/``head``.
- ``"videomae"`` (V1/V2, also HPM's video code): pre-training ``encoder.*``,
  ``encoder_to_decoder.weight``, ``mask_token``, ``decoder.*``; fine-tuning ``patch_embed``,
  ``blocks``, ``norm``, ``fc_norm``, ``head`` without prefix (attention keys as ours).
- ``"hf"``: ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification`` / ``VideoMAEModel``
  (``videomae.`` prefix, separate query/key/value linears, ``classifier``): :mod:`.hf_keys`.
- ``"timm"`` (timm ViT, official MAE: ``cls_token``, ``pos_embed`` ``[1, 1+N, D]``, 2-D
  ``patch_embed.proj``, ``decoder_*``) and ``"hpm"`` (HPM's official image model, whole, with the
  ``decoder_*_losspred`` loss predictor): :mod:`.mae_layout`.

Wrappers (``model`` / ``module`` / ``state_dict`` entries) are unwrapped and the ``module.``
(DDP/DeepSpeed) and ``_orig_mod.`` (``torch.compile``) prefixes stripped.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import torch

from .hf_keys import VIDEOMAE_DECODER_RULES, hf_to_ours, rename_key
from .mae_layout import is_hpm_layout, mae_to_ours

__all__ = ["TEACHER_KEYS", "select_weights", "teacher_state_dict", "unwrap_state_dict", "detect_format",
           "to_canonical", "is_timm_layout", "timm_to_ours"]

StateDict = dict[str, torch.Tensor]

_WRAPPER_KEYS = ("model", "module", "state_dict", "model_state", "model_state_dict")
_STRIP_PREFIXES = ("module.", "_orig_mod.")

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


def is_timm_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    """A timm ViT / MAE checkpoint (as opposed to VideoMAE's): fused qkv biases, timm's layer
    scale, MAE's decoder names, or a 2-D patch embedding."""
    for k, v in sd.items():
        if k.endswith("attn.qkv.bias") or ".ls1.gamma" in k or k.startswith(("decoder_embed.", "decoder_blocks.",
                                                                              "decoder_pred.", "decoder_pos_embed")):
            return True
        if k == "patch_embed.proj.weight" and v.dim() == 4:
            return True
    return False


def timm_to_ours(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """A timm ViT or official MAE state dict in our key names (format ``"timm"``).

    - ``patch_embed.proj.weight [D, C, p, p]`` becomes our tubelet conv with ``t = 1``
      (``[D, C, 1, p, p]``).
    - ``attn.qkv.bias [3D]`` becomes ``q_bias``/``v_bias``; the key bias is dropped: it adds
      ``q·b_k`` to every logit of a query's row, which the softmax cancels, so outputs are unchanged.
    - ``pos_embed [1, 1+N, D]`` (timm / MAE, [CLS] row first): rows ``1:`` become
      ``encoder.pos_embed`` (MAE's fixed 2-D table loads into a ``sincos_table="2d"`` model's
      stored table, a learned one into ``use_learnable_pos_emb``), and the [CLS] row is folded
      into the token: ``cls_token + pos[:, :1]``, which is all the model ever adds (our [CLS]
      position is zero), so this is exact. ``decoder_pos_embed`` likewise, its [CLS] row must be
      zero (MAE's is).
    - ``ls1/ls2.gamma`` → ``gamma_1/2``; ``decoder_embed`` → ``decoder.embed``, ``mask_token`` →
      ``decoder.mask_token``, ``decoder_blocks`` → ``decoder.blocks``, ``decoder_norm`` →
      ``decoder.norm``, ``decoder_pred`` → ``decoder.head``; ``fc_norm``/``head`` keep their names.
    """
    src = dict(sd)
    n_prefix = 1 if "cls_token" in src else 0
    out: StateDict = {}
    for k, v in src.items():
        m = re.match(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)$", k)
        if m:
            base = ("encoder.blocks." if m.group(1) == "blocks" else "decoder.blocks.") + m.group(2) + "."
            rest = m.group(3)
            if rest == "attn.qkv.bias":
                q, _, vb = v.chunk(3)
                out[base + "attn.q_bias"], out[base + "attn.v_bias"] = q.clone(), vb.clone()
            elif rest in ("ls1.gamma", "ls2.gamma"):
                out[base + ("gamma_1" if rest.startswith("ls1") else "gamma_2")] = v
            else:
                out[base + rest] = v
            continue
        if k == "patch_embed.proj.weight":
            out["encoder.patch_embed.proj.weight"] = v.unsqueeze(2) if v.dim() == 4 else v
        elif k.startswith(("patch_embed.", "norm.")):
            out["encoder." + k] = v
        elif k == "cls_token":
            pos = src.get("pos_embed")
            out["encoder.cls_token"] = v + pos[:, :1] if pos is not None and pos.shape[1] > 1 else v
        elif k == "pos_embed":
            out["encoder.pos_embed"] = v[:, n_prefix:]
        elif k == "decoder_pos_embed":
            if n_prefix and v[:, :1].abs().max() > 0:
                raise ValueError("timm/MAE checkpoint: decoder_pos_embed has a non-zero [CLS] row, which our "
                                 "decoder (a zero [CLS] position) cannot hold")
            out["decoder.pos_embed"] = v[:, n_prefix:]
        elif k.startswith("decoder_embed."):
            out["decoder.embed." + k.split(".", 1)[1]] = v
        elif k == "mask_token":
            out["decoder.mask_token"] = v
        elif k.startswith("decoder_norm."):
            out["decoder.norm." + k.split(".", 1)[1]] = v
        elif k.startswith("decoder_pred."):
            out["decoder.head." + k.split(".", 1)[1]] = v
        else:  # fc_norm, head, anything else (surfaces as unexpected)
            out[k] = v
    return out
