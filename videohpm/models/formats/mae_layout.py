"""The official MAE / HPM image pre-training layout, read and written (format ``"hpm"``).

HPM's ``models_mae_learn_loss.MaskedAutoencoderViT`` (MAE's ``models_mae`` plus a loss predictor;
files ``{"state_dict": {"module.…"}, "ema_state_dict", …}``, MAE's ``{"model": …}``) names:

======================================================  ============================================
theirs                                                  ours
======================================================  ============================================
``cls_token`` + ``pos_embed[:, :1]`` (a zero row)       ``encoder.cls_token`` (zero position)
``pos_embed[:, 1:]``, ``decoder_pos_embed[:, 1:]``      ``encoder.pos_embed``, ``decoder.pos_embed``
``patch_embed.proj.weight`` ``[D, C, p, p]``            ``encoder.patch_embed.proj.weight`` (t = 1)
``blocks.i.*`` (fused ``qkv.bias``), ``norm.*``         ``encoder.{blocks.i,norm}.*`` (q/v biases)
``decoder_embed``, ``mask_token``                       ``decoder.embed``, ``decoder.mask_token``
``decoder_blocks``, ``decoder_norm``, ``decoder_pred``  ``decoder.blocks``, ``.norm``, ``.head``
``decoder_{blocks,norm,pred}_losspred``                 ``loss_predictor.{blocks,norm,head}``
======================================================  ============================================

The key part of a fused qkv bias adds the same ``q·b_k`` to a query's every logit, which the
softmax cancels: dropped on reading, written as zeros (exact both ways). No slot: ``vis_mask_token``.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import nn

from .hf_keys import rename_key

__all__ = ["MAE_RULES", "is_hpm_layout", "mae_to_ours", "ours_to_mae"]

StateDict = dict[str, torch.Tensor]

#: ``(their name, our name)``; a name ending in "." renames every key below it (`rename_key`).
#: Order matters: the loss-predictor names come before their pixel-decoder prefixes.
MAE_RULES = (
    ("decoder_blocks_losspred.", "loss_predictor.blocks."),
    ("decoder_norm_losspred.", "loss_predictor.norm."),
    ("decoder_pred_losspred.", "loss_predictor.head."),
    ("decoder_blocks.", "decoder.blocks."),
    ("decoder_embed.", "decoder.embed."),
    ("decoder_norm.", "decoder.norm."),
    ("decoder_pred.", "decoder.head."),
    ("decoder_pos_embed", "decoder.pos_embed"),
    ("mask_token", "decoder.mask_token"),
    ("patch_embed.", "encoder.patch_embed."),
    ("blocks.", "encoder.blocks."),
    ("norm.", "encoder.norm."),
    ("cls_token", "encoder.cls_token"),
    ("pos_embed", "encoder.pos_embed"),
)
_LOSSPRED = ("decoder_blocks_losspred.", "decoder_norm_losspred.", "decoder_pred_losspred.")
_QKV_BIAS = re.compile(r"^(.*\.)attn\.qkv\.bias$")
_QV_BIAS = re.compile(r"^(.*\.)attn\.q_bias$")


def is_hpm_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    """HPM's image layout: MAE's names plus the ``*_losspred`` loss predictor."""
    return any(k.startswith(_LOSSPRED) for k in sd)


def mae_to_ours(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """An HPM (or MAE) pre-training state dict, prefixes stripped, in our names (module doc).
    Keys the table does not know keep their names (they surface as "unexpected").

    Raises:
        ValueError: a position table whose [CLS] row is not zero (our [CLS] position is zero and
            MAE's table has a zero row, so only a foreign file can have one).
    """
    out: StateDict = {}
    for k, v in sd.items():
        if k in ("pos_embed", "decoder_pos_embed"):
            if k == "decoder_pos_embed" and bool(v[:, :1].abs().max() > 0):
                raise ValueError(f"{k} has a non-zero [CLS] row, which our decoder (a zero [CLS] position) cannot hold")
            v = v[:, 1:]
        elif k == "cls_token" and "pos_embed" in sd:
            v = v + sd["pos_embed"][:, :1]  # all the model ever adds to it
        elif k == "patch_embed.proj.weight" and v.dim() == 4:
            v = v.unsqueeze(2)
        m = _QKV_BIAS.match(k)
        if m:
            base = rename_key(m.group(1), MAE_RULES) or m.group(1)
            q, _, vb = v.chunk(3)
            out[base + "attn.q_bias"], out[base + "attn.v_bias"] = q.clone(), vb.clone()
            continue
        out[rename_key(k, MAE_RULES) or k] = v
    return out


def _check_writable(model: nn.Module, loss_predictor: bool) -> None:
    """Refuse (ValueError naming the parts) a model the official class cannot hold."""
    enc, problems = getattr(model, "encoder", None), []
    if enc is None or not hasattr(model, "decoder"):
        raise ValueError("the official pre-training layout needs a pre-training model (MaskedAutoencoder)")
    if enc.default_grid[0] != 1 or enc.tubelet_size != 1:
        problems.append(f"a video model (token grid {enc.default_grid}): the official model is an image model")
    if enc.cls_token is None or not getattr(model, "cls_in_pretraining", False):
        problems.append("no [CLS] in pre-training (cls_token, cls_in_pretraining)")
    learned = isinstance(enc.pos_embed, nn.Parameter)
    if enc.sincos_table != "2d" or learned:
        problems.append(f"position table {enc.sincos_table!r}{' (learned)' if learned else ''}: the official model "
                        "has MAE's fixed 2-D table (sincos_table='2d')")
    if model.decoder.embed.bias is None:
        problems.append("no decoder embedding bias (decoder_embed_bias)")
    if enc.init_values or enc.blocks[0].attn.q_bias is None:
        problems.append("layer scale or no qkv bias: the official blocks have a qkv bias and no layer scale")
    if loss_predictor and getattr(model, "loss_predictor_layout", None) != "hpm":
        problems.append("no loss predictor in HPM's layout (loss_predictor=true, loss_predictor_layout='hpm'); "
                        "--format mae writes the model without it")
    if problems:
        raise ValueError("cannot export to the official HPM/MAE layout: " + "; ".join(problems))


def ours_to_mae(model: nn.Module, loss_predictor: bool = True) -> StateDict:
    """``model`` in the official names: what HPM's ``MaskedAutoencoderViT`` (``loss_predictor``)
    or MAE's (without the ``*_losspred`` keys) of the same sizes loads with ``strict=True``.

    Raises:
        ValueError: a part the official model cannot hold (named).
    """
    _check_writable(model, loss_predictor)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if not loss_predictor:
        sd = {k: v for k, v in sd.items() if not k.startswith("loss_predictor.")}
    out: StateDict = {}
    for k, v in sd.items():
        if k.endswith("attn.v_bias"):
            continue
        m = _QV_BIAS.match(k)
        if m:
            base = rename_key(m.group(1), MAE_RULES, to_ours=False)
            out[base + "attn.qkv.bias"] = torch.cat((v, torch.zeros_like(v), sd[m.group(1) + "attn.v_bias"]))
            continue
        if k in ("encoder.pos_embed", "decoder.pos_embed"):
            v = torch.cat((v.new_zeros(1, 1, v.shape[-1]), v.reshape(1, -1, v.shape[-1])), dim=1)
        elif k == "encoder.patch_embed.proj.weight":
            v = v[:, :, 0]
        name = rename_key(k, MAE_RULES, to_ours=False)
        if name is None:
            raise ValueError(f"export to the official layout: no name for {k}")
        out[name] = v.contiguous().clone()
    return out
