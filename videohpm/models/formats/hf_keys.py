"""The Hugging Face VideoMAE key map: one table, read in both directions.

`hf_to_ours` (the HF reader of `.layouts`) and `ours_to_hf` (the `"hf"` /
`"hf_file"` exports of `.writing`) are both derived from the tables below, so a
renamed key cannot go one way only. Every rule is `(HF name, our name)`; a name ending in "."
renames every key below it, any other name exactly that key.

Inside a transformer layer (`HF_LAYER_ROOTS`): `HF_LAYER_RULES`, plus the q/v biases
(`HF_BIAS_NAMES`: `transformers` ≥ 5 modules call them `query.bias` / `value.bias`; files on the
Hub and `transformers` < 5 modules `q_bias` / `v_bias`; the reader takes both) and the attention
projection (`HF_QKV`: HF's separate query/key/value weights are our `attn.qkv.weight`,
concatenated in that order).

The decoder's input projection and mask token keep VideoMAE's own names in HF
(`VIDEOMAE_DECODER_RULES`), so the VideoMAE reader and export (`.layouts`,
`.writing`) read that one table too, through `rename_key`.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["HF_LAYER_ROOTS", "HF_LAYER_RULES", "HF_BIAS_NAMES", "HF_QKV", "HF_TOP_RULES", "VIDEOMAE_DECODER_RULES",
           "hf_to_ours", "ours_to_hf", "rename_key"]

StateDict = dict[str, torch.Tensor]
Rules = Sequence[Tuple[str, str]]

#: Layer stacks: HF prefix ↔ ours (followed by the layer index).
HF_LAYER_ROOTS: Rules = (("videomae.encoder.layer.", "encoder.blocks."), ("decoder.decoder_layers.", "decoder.blocks."))
#: Inside one layer (after `<root><i>.`).
HF_LAYER_RULES: Rules = (
    ("attention.output.dense.", "attn.proj."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
#: q/v bias names per HF layout (`"hf"`: module names of transformers ≥ 5; `"hf_file"`: Hub files).
HF_BIAS_NAMES = {"hf": ("query.bias", "value.bias"), "hf_file": ("q_bias", "v_bias")}
#: HF's attention projections (`{}` = query, key, value) ↔ our `attn.qkv.weight`.
HF_QKV = ("attention.attention.{}.weight", ("query", "key", "value"), "attn.qkv.weight")
#: VideoMAE's names (HF's too) of the decoder's input projection and mask token ↔ ours.
VIDEOMAE_DECODER_RULES: Rules = (("encoder_to_decoder.weight", "decoder.embed.weight"), ("mask_token", "decoder.mask_token"))
#: Outside the layers. `classifier.` ↔ `head.` is a fine-tuned model's (a pre-training model's
#: `decoder.head` keeps its name).
HF_TOP_RULES: Rules = (
    ("videomae.embeddings.patch_embeddings.projection.", "encoder.patch_embed.proj."),
    ("videomae.layernorm.", "encoder.norm."),
    *VIDEOMAE_DECODER_RULES,
    ("classifier.", "head."),
)


def _bias_rules(fmt: str) -> Rules:
    q, v = HF_BIAS_NAMES[fmt]
    return (("attention.attention." + q, "attn.q_bias"), ("attention.attention." + v, "attn.v_bias"))


def _rename(key: str, rules: Iterable[Tuple[str, str]]) -> Optional[str]:
    """`key` renamed by the first rule `(src, dst)` that matches it (module doc), else None."""
    for src, dst in rules:
        if key == src or (src.endswith(".") and key.startswith(src)):
            return dst + key[len(src):]
    return None


def _flip(rules: Iterable[Tuple[str, str]]) -> Rules:
    return tuple((ours, hf) for hf, ours in rules)


def rename_key(key: str, rules: Rules, to_ours: bool = True) -> Optional[str]:
    """`key` renamed by the first rule `(their name, our name)` that matches it, into our names
    or (`to_ours=False`) back into theirs; None when no rule matches."""
    return _rename(key, rules if to_ours else _flip(rules))


def _layer_pattern(prefixes: Iterable[str]) -> "re.Pattern[str]":
    """`^(<prefix without its dot>)\\.(i)\\.(rest)$` over the layer roots of one side."""
    return re.compile(r"^(" + "|".join(re.escape(p[:-1]) for p in prefixes) + r")\.(\d+)\.(.+)$")


_HF_LAYER = _layer_pattern(hf for hf, _ in HF_LAYER_ROOTS)
_OUR_LAYER = _layer_pattern(ours for _, ours in HF_LAYER_ROOTS)
_OURS_OF_ROOT = {hf[:-1]: ours for hf, ours in HF_LAYER_ROOTS}
_HF_OF_ROOT = {ours[:-1]: hf for hf, ours in HF_LAYER_ROOTS}
_READ_LAYER_RULES = (*_bias_rules("hf"), *_bias_rules("hf_file"), *HF_LAYER_RULES)
_HF_PROJ = re.compile("^" + re.escape(HF_QKV[0]).replace(r"\{\}", "(" + "|".join(HF_QKV[1]) + ")") + "$")


def hf_to_ours(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """An HF VideoMAE state dict (`VideoMAEForPreTraining`, `…ForVideoClassification` or a bare
    `VideoMAEModel`) in our key names. Keys the table does not know keep their names (they
    surface as "unexpected" when loaded).

    Raises:
        ValueError: a layer with some but not all of its query/key/value weights.
    """
    src = dict(sd)
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in src):  # bare VideoMAEModel
        src = {("videomae." + k if k.startswith(("embeddings.", "encoder.layer.", "layernorm.")) else k): v
               for k, v in src.items()}
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in src.items():
        m = _HF_LAYER.match(k)
        if m:
            base, rest = f"{_OURS_OF_ROOT[m.group(1)]}{m.group(2)}.", m.group(3)
            proj = _HF_PROJ.match(rest)
            if proj:
                qkv.setdefault(base, {})[proj.group(1)] = v
                continue
            new = _rename(rest, _READ_LAYER_RULES)
            out[base + new if new is not None else k] = v  # unknown layer key: surfaces as "unexpected"
            continue
        new = _rename(k, HF_TOP_RULES)
        out[new if new is not None else k] = v  # decoder.norm, decoder.head, fc_norm keep their names
    for base, parts in qkv.items():
        if set(parts) != set(HF_QKV[1]):
            raise ValueError(f"HF checkpoint: incomplete query/key/value weights for {base} (have {sorted(parts)})")
        out[base + HF_QKV[2]] = torch.cat([parts[n] for n in HF_QKV[1]], dim=0)
    return out


def ours_to_hf(sd: Mapping[str, torch.Tensor], fmt: str = "hf", is_pretrain: bool = False) -> StateDict:
    """Our state dict in HF VideoMAE names: `fmt="hf"` (transformers ≥ 5 modules) or `"hf_file"`
    (Hub files; q/v biases as `q_bias` / `v_bias`). `is_pretrain`: a pre-training model (no
    `classifier`). Keys outside the table (decoder norm/head, fc_norm) keep their names.

    Raises:
        ValueError: a layer key the table has no HF name for.
    """
    layer_rules = _flip((*_bias_rules(fmt), *HF_LAYER_RULES))
    top_rules = _flip(r for r in HF_TOP_RULES if not (is_pretrain and r[1] == "head."))
    out: StateDict = {}
    for k, v in sd.items():
        m = _OUR_LAYER.match(k)
        if m:
            base, rest = f"{_HF_OF_ROOT[m.group(1)]}{m.group(2)}.", m.group(3)
            if rest == HF_QKV[2]:
                for name, t in zip(HF_QKV[1], v.chunk(3, dim=0)):
                    out[base + HF_QKV[0].format(name)] = t.clone()
                continue
            new = _rename(rest, layer_rules)
            if new is None:
                raise ValueError(f"export to 'hf': no HF name for {k}")
            out[base + new] = v
            continue
        new = _rename(k, top_rules)
        out[new if new is not None else k] = v
    return out
