"""Our weights in the peers' layouts, written as files (``tools/export.py``).

- ``"videomae"``: VideoMAE V1 key names (``PretrainVisionTransformer`` / ``VisionTransformer`` of
  the official code), layer scale as ``gamma_1``/``gamma_2``; loads with ``strict=True``.
- ``"hf"`` / ``"hf_file"``: ``transformers`` ``VideoMAEForPreTraining`` /
  ``VideoMAEForVideoClassification`` (module names of transformers ≥ 5 / the names of Hub files
  and transformers < 5); :func:`hf_config_from_model` gives the matching ``VideoMAEConfig``.
- ``"timm"``: a timm ``VisionTransformer`` backbone of an image-mode model, with the
  ``timm.create_model`` arguments that rebuild it (:func:`timm_model_args`): the format ViTDet /
  UperNet pipelines load.
- ``"hpm"`` / ``"mae"``: the official pre-training image models (:mod:`.mae_layout`).

Every format has a part the other side cannot hold; exporting such a model raises a
``ValueError`` naming the part (e.g. layer scale or a [CLS] token to HF VideoMAE), never a file
that loads but computes something else. Reading these layouts back: :mod:`.layouts`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any, Mapping, Optional, Sequence, Union

import timm
import torch
from timm.models import save_for_hf
from torch import nn

from videohpm.constants import IMAGENET_MEAN, IMAGENET_STD

from .hf_keys import VIDEOMAE_DECODER_RULES, ours_to_hf, rename_key
from .mae_layout import ours_to_mae
from ..registry import MODEL_SIZES

__all__ = [
    "EXPORT_FORMATS",
    "built_name",
    "export_state_dict",
    "hf_config_from_model",
    "timm_model_args",
    "write_export",
]

StateDict = dict[str, torch.Tensor]

# Formats of write_export (tools/export.py --format).
EXPORT_FORMATS = ("hf", "videomae", "timm", "hpm", "mae")

def built_name(model: nn.Module) -> str:
    """A name that says what ``model`` (anything with an ``encoder``) is: the registry's size name
    when width, depth and heads are one of ``MODEL_SIZES``, else ``dim128-depth4-heads2``; the
    patch, the input side and, for video, the frames (and a tubelet other than 2):
    ``vit_base_patch16_224_16f``, ``pretrain_videomae_dim128-depth4-heads2_patch16_112_8f``."""
    enc = model.encoder
    dim, depth, heads = enc.embed_dim, len(enc.blocks), enc.blocks[0].attn.num_heads
    size = next((n for n, s in MODEL_SIZES.items()
                 if (s["embed_dim"], s["depth"], s["num_heads"]) == (dim, depth, heads)),
                f"dim{dim}-depth{depth}-heads{heads}")
    gt, gh, gw = enc.default_grid
    p, t = enc.patch_size, enc.tubelet_size
    frames = gt * t
    side = f"{gh * p}" if gh == gw else f"{gh * p}x{gw * p}"
    kind = "vit" if not hasattr(model, "decoder") else ("pretrain_mae" if frames == 1 else "pretrain_videomae")
    name = f"{kind}_{size}_patch{p}_{side}"
    if frames > 1:
        name += f"_{frames}f" + (f"_tubelet{t}" if t != 2 else "")
    return name


def _is_pretrain(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("decoder.") for k in sd)


def _check_exportable(sd: Mapping[str, torch.Tensor], model: Optional[nn.Module], fmt: str) -> None:
    """Refuse (ValueError naming the parts) what ``fmt`` cannot express."""
    problems = []
    pretrain = _is_pretrain(sd)
    if fmt in ("hf", "hf_file", "videomae"):
        name = "HF VideoMAE" if fmt != "videomae" else "VideoMAE V1"
        if "encoder.cls_token" in sd:
            problems.append(f"a [CLS] token (encoder.cls_token): {name} has none")
        if "decoder.embed.bias" in sd:
            problems.append(f"a decoder embedding bias (decoder.embed.bias, MAE's decoder_embed): {name}'s "
                            "encoder_to_decoder has none")
        if "decoder.pos_embed" in sd:
            problems.append(f"a stored decoder position table (decoder.pos_embed, MAE's 2-D table): {name} "
                            "always uses its fixed 1-D table")
        if "encoder.pos_embed" in sd and (fmt != "videomae" or pretrain):
            problems.append(f"a learned or 2-D encoder position table (encoder.pos_embed): {name}"
                            f"{' pre-training' if fmt == 'videomae' else ''} uses its fixed 1-D table")
        if fmt != "videomae" and any(k.endswith((".gamma_1", ".gamma_2")) for k in sd):
            problems.append("layer scale (blocks.N.gamma_1/gamma_2, init_values): HF VideoMAE has none; "
                            "export --format videomae keeps it")
    if fmt == "timm":
        enc = getattr(model, "encoder", None)
        if enc is None:
            problems.append("timm export needs the model (to read its grid and options), not a state dict")
        else:
            if enc.default_grid[0] != 1 or enc.tubelet_size != 1:
                problems.append(f"a video model (token grid {enc.default_grid}, tubelet {enc.tubelet_size}): "
                                "timm's ViT is an image model; export image-mode models (num_frames=1, "
                                "tubelet_size=1), or video models as --format hf / videomae")
            eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
            if eps != {1e-6}:
                problems.append(f"LayerNorm eps {sorted(eps)}: timm's ViT uses 1e-6")
    if problems:
        raise ValueError(f"cannot export to {fmt!r}: " + "; ".join(problems))


def export_state_dict(model_or_sd: Union[nn.Module, Mapping[str, torch.Tensor]], fmt: str = "videomae") -> StateDict:
    """Our weights in another layout: ``"videomae"`` (V1 key names), ``"hf"`` (the module names
    of ``transformers`` ≥ 5: ``load_state_dict`` into ``VideoMAEForPreTraining`` /
    ``VideoMAEForVideoClassification``), ``"hf_file"`` (the names in Hub checkpoint files and
    ``transformers`` < 5 modules: q/v biases as ``attention.attention.q_bias`` / ``v_bias``) or
    ``"timm"`` (an image-mode model's encoder as a timm ``VisionTransformer`` backbone; needs the
    module, see :func:`timm_model_args`).

    The loss predictor d_ψ has no slot in these layouts and is left out (keep our own format, or
    HPM's official image layout: :func:`videohpm.models.formats.mae_layout.ours_to_mae`). Parts a layout
    cannot express (see the module docstring) raise ``ValueError``.
    """
    model = model_or_sd if isinstance(model_or_sd, nn.Module) else None
    sd = model.state_dict() if model is not None else dict(model_or_sd)
    sd = {k: v for k, v in sd.items() if not k.startswith("loss_predictor.")}
    if fmt not in ("videomae", "hf", "hf_file", "timm"):
        raise ValueError(f"export_state_dict: unknown format {fmt!r}; expected 'videomae', 'hf', 'hf_file' or 'timm'")
    _check_exportable(sd, model, fmt)
    is_pretrain = _is_pretrain(sd)
    if fmt == "timm":
        return _export_timm(model, sd)
    if fmt == "videomae":
        out: StateDict = {}
        for k, v in sd.items():
            new = rename_key(k, VIDEOMAE_DECODER_RULES, to_ours=False)
            if new is not None:
                k = new
            elif not is_pretrain and k.startswith("encoder."):
                k = k[len("encoder."):]
            out[k] = v
        return out
    return ours_to_hf(sd, fmt, is_pretrain)


def hf_config_from_model(model: nn.Module, **extra: Any):
    """A ``transformers.VideoMAEConfig`` describing ``model`` (a MaskedAutoencoder or VideoClassifier).

    ``layer_norm_eps`` is the model's (1e-6, VideoMAE's); HF applies it to every encoder and
    decoder block and the final encoder norm, but builds the decoder's final norm and the
    classifier's ``fc_norm`` with LayerNorm's default 1e-5, which no config key changes: outputs
    agree to ~1e-5, not bit for bit.
    """
    from transformers import VideoMAEConfig  # lazy: heavy, and a dev extra only

    enc = model.encoder
    blk = enc.blocks[0]
    gt, gh, gw = enc.default_grid
    cfg: dict[str, Any] = dict(
        image_size=gh * enc.patch_size if gh == gw else [gh * enc.patch_size, gw * enc.patch_size],
        patch_size=enc.patch_size, num_channels=enc.in_chans, num_frames=gt * enc.tubelet_size,
        tubelet_size=enc.tubelet_size, hidden_size=enc.embed_dim, num_hidden_layers=len(enc.blocks),
        num_attention_heads=blk.attn.num_heads, intermediate_size=blk.mlp.fc1.out_features,
        qv_bias=blk.attn.q_bias is not None, layer_norm_eps=blk.norm1.eps, hidden_act="gelu",
    )
    dec = getattr(model, "decoder", None)
    if dec is not None:
        dblk = dec.blocks[0]
        cfg.update(
            use_mean_pooling=False, norm_pix_loss=model.norm_pix_loss,
            decoder_hidden_size=dec.embed.out_features, decoder_num_hidden_layers=len(dec.blocks),
            decoder_num_attention_heads=dblk.attn.num_heads, decoder_intermediate_size=dblk.mlp.fc1.out_features,
        )
    else:
        cfg.update(use_mean_pooling=model.fc_norm is not None, num_labels=model.num_classes)
    cfg.update(extra)
    return VideoMAEConfig(**cfg)


# ----------------------------------------------------------------------------------------------
# timm
# ----------------------------------------------------------------------------------------------
_TIMM_SIZES = {(192, 12, 3): "vit_tiny_patch16_224", (384, 12, 6): "vit_small_patch16_224",
               (768, 12, 12): "vit_base_patch16_224", (1024, 24, 16): "vit_large_patch16_224"}


# The keys of a timm pretrained_cfg that describe the input, not the origin of the weights.
_TIMM_INPUT_CFG = ("architecture", "input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode",
                   "mean", "std", "num_classes", "pool_size", "first_conv", "classifier")


def timm_model_args(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """``(architecture, kwargs)`` such that ``timm.create_model(architecture, **kwargs)`` builds the
    backbone that :func:`export_state_dict` (``"timm"``) loads into with ``strict=True``.

    ``num_classes=0`` (a backbone); ``class_token`` as the model; ``global_pool="avg"`` with
    ``fc_norm`` for a mean-pooling classifier (our ``fc_norm``), ``global_pool="avg"`` with the
    final ``norm`` for a pre-training encoder, ``"token"`` for a classifier that reads the
    [CLS] output. timm's ``model(x)`` is then our pooled feature, ``forward_features(x)`` our tokens.
    """
    enc = model.encoder
    blk = enc.blocks[0]
    has_cls = enc.cls_token is not None
    fc_norm = getattr(model, "fc_norm", None) is not None
    if fc_norm:
        global_pool = "avg"
    elif not hasattr(model, "decoder") and has_cls:
        global_pool = "token"
    else:
        global_pool = "avg"
    dim, depth, heads = enc.embed_dim, len(enc.blocks), blk.attn.num_heads
    arch = _TIMM_SIZES.get((dim, depth, heads), "vit_base_patch16_224")
    _, gh, gw = enc.default_grid
    kwargs = dict(
        img_size=[gh * enc.patch_size, gw * enc.patch_size] if gh != gw else gh * enc.patch_size,
        patch_size=enc.patch_size, in_chans=enc.in_chans, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=blk.mlp.fc1.out_features / dim, qkv_bias=blk.attn.q_bias is not None,
        class_token=has_cls, global_pool=global_pool, fc_norm=fc_norm,
        init_values=enc.init_values, num_classes=0,
    )
    return arch, kwargs


def _export_timm(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> StateDict:
    enc = model.encoder
    out: StateDict = {}
    pos = enc.pos_embed.detach().reshape(1, -1, enc.embed_dim)
    if enc.cls_token is not None:
        out["cls_token"] = sd["encoder.cls_token"]
        pos = torch.cat((pos.new_zeros(1, 1, pos.shape[-1]), pos), dim=1)  # our [CLS] has a zero position
    out["pos_embed"] = pos.clone()
    for k, v in sd.items():
        if not k.startswith("encoder.") or k in ("encoder.cls_token", "encoder.pos_embed"):
            if k.startswith("fc_norm."):
                out[k] = v
            continue  # decoders, classifier head: not part of the backbone
        name = k[len("encoder."):]
        if name == "patch_embed.proj.weight":
            out[name] = v[:, :, 0].clone()  # [D, C, 1, p, p] -> timm's Conv2d [D, C, p, p]
            continue
        m = re.match(r"^blocks\.(\d+)\.(.+)$", name)
        if m:
            base, rest = f"blocks.{m.group(1)}.", m.group(2)
            if rest == "attn.q_bias":
                q, v_b = v, sd[f"encoder.{base}attn.v_bias"]
                out[base + "attn.qkv.bias"] = torch.cat((q, torch.zeros_like(q), v_b))  # VideoMAE's zero k-bias
                continue
            if rest == "attn.v_bias":
                continue
            if rest in ("gamma_1", "gamma_2"):
                out[base + ("ls1.gamma" if rest == "gamma_1" else "ls2.gamma")] = v
                continue
        out[name] = v
    return out


def _hf_class(model: nn.Module):
    from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification  # lazy: as above

    return VideoMAEForPreTraining if hasattr(model, "decoder") else VideoMAEForVideoClassification


def _write_hf_folder(model: nn.Module, sd: Mapping[str, torch.Tensor], folder: str,
                     class_names: Optional[Sequence[str]], processor: Optional[Mapping[str, Any]]) -> None:
    """The ``"hf"`` export into ``folder``: transformers' ``save_pretrained`` of the HF model that
    has just loaded ``sd`` with ``strict=True`` (``class_names`` fill ``id2label``)."""
    extra: dict[str, Any] = {}
    if class_names is not None and not hasattr(model, "decoder"):
        if len(class_names) != model.num_classes:
            raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class model")
        extra.update(id2label=dict(enumerate(class_names)),
                     label2id={n: i for i, n in enumerate(class_names)})
    hf = _hf_class(model)(hf_config_from_model(model, **extra))
    hf.load_state_dict(sd, strict=True)
    hf.save_pretrained(folder, safe_serialization=True)
    if processor is not None:
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump(dict(processor), f, indent=2)


def _write_timm_folder(model: nn.Module, sd: Mapping[str, torch.Tensor], folder: str, out: str) -> None:
    """The ``"timm"`` export into ``folder`` (to be moved to ``out``): timm's ``save_for_hf`` of the
    backbone that has just loaded ``sd`` with ``strict=True``, and ``videohpm_export.json``."""
    arch, kwargs = timm_model_args(model)
    net = timm.create_model(arch, pretrained=False, **kwargs)
    net.load_state_dict(sd, strict=True)
    mean = getattr(model, "input_mean", None) or IMAGENET_MEAN
    std = getattr(model, "input_std", None) or IMAGENET_STD
    size = kwargs["img_size"] if isinstance(kwargs["img_size"], list) else [kwargs["img_size"]] * 2
    # timm's config of `arch` names its own pretrained weights (tag, licence, paper): not these
    net.pretrained_cfg = {k: v for k, v in net.pretrained_cfg.items() if k in _TIMM_INPUT_CFG}
    save_for_hf(net, folder, model_args=kwargs, safe_serialization="both",
                model_config={"model_name": built_name(model)},
                data_config=dict(mean=tuple(mean), std=tuple(std), input_size=(kwargs["in_chans"], *size),
                                 crop_pct=1.0))
    with open(os.path.join(folder, "videohpm_export.json"), "w") as f:
        # `architecture` is only timm's builder: `model_args` set every size
        json.dump({"model_name": built_name(model), "architecture": arch, "model_args": kwargs,
                   "load": f"timm.create_model('local-dir:{out}', pretrained=True)"}, f, indent=2)


def write_export(model: nn.Module, fmt: str, out: Union[str, os.PathLike],
                 class_names: Optional[Sequence[str]] = None, overwrite: bool = False,
                 processor: Optional[Mapping[str, Any]] = None) -> list[str]:
    """Write ``model`` in format ``fmt`` to ``out`` (refusing an existing path unless
    ``overwrite``: then an earlier export there is replaced once the new one is complete) and
    return the files written. ``processor`` (``"hf"``): the ``preprocessor_config.json`` content.

    - ``"hf"``: a folder ``config.json`` + ``model.safetensors``, written by transformers' own
      ``save_pretrained`` from a ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification``
      that the export has just loaded with ``strict=True``; ``class_names`` fill ``id2label``.
    - ``"videomae"``: one file ``{"model": state_dict}`` (VideoMAE's ``utils.save_model`` layout,
      which its ``--finetune`` / ``load_state_dict`` read).
    - ``"hpm"`` / ``"mae"``: one file ``{"model": state_dict}`` in the official pre-training
      layout (:func:`videohpm.models.formats.mae_layout.ours_to_mae`): HPM's ``MaskedAutoencoderViT`` with
      its loss predictor / MAE's without, loaded with ``strict=True``; HPM's and MAE's
      ``--finetune`` and ``--resume`` read it.
    - ``"timm"``: a folder ``config.json`` + ``model.safetensors`` + ``pytorch_model.bin`` written
      by timm's ``save_for_hf`` from the timm backbone the export has just loaded with
      ``strict=True``: ``timm.create_model("local-dir:<out>", pretrained=True)`` rebuilds it, and
      ``pytorch_model.bin`` is the plain state dict that detectron2's ViTDet and mmseg/mmdet load.

    The output is assembled next to ``out`` and renamed into place, so a failed export leaves
    nothing behind (and an overwritten export as it was).
    """
    out = os.fspath(out)
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f"--out {out}: already exists; pass --overwrite to replace it, or pick a new path")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {EXPORT_FORMATS}")
    if fmt in ("hpm", "mae"):  # refuses what the official model cannot hold
        sd = ours_to_mae(model, loss_predictor=fmt == "hpm")
    else:
        sd = export_state_dict(model, "hf" if fmt == "hf" else fmt)  # refuses what fmt cannot express
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        if fmt in ("videomae", "hpm", "mae"):
            target = os.path.join(tmp, "weights.pth")
            torch.save({"model": {k: v.detach().contiguous().clone() for k, v in sd.items()}}, target)
            _move_into_place(target, out)
            return [out]
        if fmt == "hf":
            _write_hf_folder(model, sd, tmp, class_names, processor)
        else:
            _write_timm_folder(model, sd, tmp, out)
        _move_into_place(tmp, out)
        tmp = None
        return sorted(os.path.join(out, n) for n in os.listdir(out))
    finally:
        if tmp is not None and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(src: str, out: str) -> None:
    """Rename the finished export ``src`` to ``out``; an existing ``out`` is first renamed aside and
    removed only after the new one is in place."""
    old = None
    if os.path.lexists(out):
        old = tempfile.mkdtemp(prefix=".export-old-", dir=os.path.dirname(os.path.abspath(out)))
        old = os.path.join(old, "old")
        os.replace(out, old)
    os.replace(src, out)
    if old is not None:
        shutil.rmtree(os.path.dirname(old), ignore_errors=True)
