"""Load pre-trained weights into a model: :func:`load_pretrained` takes a path or a state dict in
any layout :mod:`videohpm.models.formats` reads, converts it to our key names, checks every key
and shape against the model and says what it did in a :class:`LoadReport`.

Fixed sin-cos tables are never stored (they are functions of the sizes); a *learned* ``pos_embed``
is interpolated to the target grid when the sizes differ. A new classifier head (fine-tuning) and
the loss predictor / decoders of a pre-training model may be absent from the checkpoint.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .formats import read_checkpoint_file, select_weights, to_canonical, unwrap_state_dict
from .vit import Grid, interpolate_pos_embed

__all__ = ["LoadReport", "PretrainedMismatchError", "load_pretrained"]

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


class PretrainedMismatchError(ValueError, RuntimeError):
    """Pre-trained weights do not fit the model (:func:`load_pretrained`); ``report`` is the
    :class:`LoadReport` and the message lists the keys."""

    def __init__(self, message: str, report: "LoadReport") -> None:
        super().__init__(message)
        self.report = report


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
