"""Brute-force reference forwards written from the peers' model code (VideoMAE V1
``modeling_finetune.py`` / ``modeling_pretrain.py``, MAE ``models_mae.py``), on raw state dicts in
*their* key names: explicit softmax attention, no module of ours. Used by the layer-scale,
MAE-layout and export tests."""
from __future__ import annotations

import math
from typing import Mapping, Optional

import torch
import torch.nn.functional as F

Sd = Mapping[str, torch.Tensor]


def videomae_table(n: int, d: int) -> torch.Tensor:
    """VideoMAE's ``get_sinusoid_encoding_table``: ``angle = pos / 10000^(2⌊j/2⌋/d)``, sin on even
    ``j``, cos on odd ``j`` (written as a per-entry loop), ``[1, n, d]``."""
    t = torch.empty(n, d, dtype=torch.float64)
    for pos in range(n):
        for j in range(d):
            a = pos / math.pow(10000, 2 * (j // 2) / d)
            t[pos, j] = math.sin(a) if j % 2 == 0 else math.cos(a)
    return t.float().unsqueeze(0)


def mae_table(grid: int, d: int, cls_row: bool = True) -> torch.Tensor:
    """MAE's ``get_2d_sincos_pos_embed(d, grid, cls_token=True)`` entry by entry: for token
    ``h·grid + w`` the first ``d/2`` channels are ``[sin(w·ω) | cos(w·ω)]`` and the last ``d/2``
    ``[sin(h·ω) | cos(h·ω)]``, ``ω_k = 1/10000^(k/(d/4))``; a zero [CLS] row first. ``[1, 1+N, d]``."""
    q = d // 4
    rows = [[0.0] * d] if cls_row else []
    for h in range(grid):
        for w in range(grid):
            row = []
            for pos in (w, h):
                om = [1.0 / 10000 ** (k / q) for k in range(q)]
                row += [math.sin(pos * o) for o in om] + [math.cos(pos * o) for o in om]
            rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).float().unsqueeze(0)


def block(x: torch.Tensor, sd: Sd, pre: str, heads: int, eps: float = 1e-6) -> torch.Tensor:
    """One pre-norm ViT block from ``sd`` keys under ``pre``: VideoMAE's (``attn.q_bias``/``v_bias``,
    zero key bias, optional ``gamma_1``/``gamma_2``) or timm's/MAE's (``attn.qkv.bias`` with a key
    bias, optional ``ls1.gamma``/``ls2.gamma``)."""
    b, n, d = x.shape
    hd = d // heads

    def ln(y: torch.Tensor, name: str) -> torch.Tensor:
        mu = y.mean(-1, keepdim=True)
        var = ((y - mu) ** 2).mean(-1, keepdim=True)
        return (y - mu) / torch.sqrt(var + eps) * sd[f"{pre}{name}.weight"] + sd[f"{pre}{name}.bias"]

    if f"{pre}attn.qkv.bias" in sd:
        qkv_b = sd[f"{pre}attn.qkv.bias"]
    elif f"{pre}attn.q_bias" in sd:
        qkv_b = torch.cat((sd[f"{pre}attn.q_bias"], torch.zeros(d), sd[f"{pre}attn.v_bias"]))
    else:
        qkv_b = torch.zeros(3 * d)
    y = ln(x, "norm1")
    qkv = y @ sd[f"{pre}attn.qkv.weight"].t() + qkv_b
    q, k, v = (t.reshape(b, n, heads, hd).transpose(1, 2) for t in qkv.split(d, dim=-1))
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    o = (att @ v).transpose(1, 2).reshape(b, n, d) @ sd[f"{pre}attn.proj.weight"].t() + sd[f"{pre}attn.proj.bias"]
    g1 = sd.get(f"{pre}gamma_1", sd.get(f"{pre}ls1.gamma"))
    g2 = sd.get(f"{pre}gamma_2", sd.get(f"{pre}ls2.gamma"))
    x = x + (o if g1 is None else g1 * o)
    y = ln(x, "norm2")
    h = F.gelu(y @ sd[f"{pre}mlp.fc1.weight"].t() + sd[f"{pre}mlp.fc1.bias"])
    m = h @ sd[f"{pre}mlp.fc2.weight"].t() + sd[f"{pre}mlp.fc2.bias"]
    return x + (m if g2 is None else g2 * m)


def layer_norm(x: torch.Tensor, sd: Sd, name: str, eps: float = 1e-6) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def patch_tokens(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Non-overlapping patch projection as an explicit matrix product: ``x [B, C, T, H, W]`` with a
    ``[D, C, t, p, p]`` (or 2-D ``[D, C, p, p]``, t = 1) kernel -> ``[B, N, D]`` time-major."""
    if weight.dim() == 4:
        weight = weight.unsqueeze(2)
    d, c, t, p, _ = weight.shape
    b, _, T, H, W = x.shape
    v = x.reshape(b, c, T // t, t, H // p, p, W // p, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
    v = v.reshape(b, -1, c * t * p * p)
    return v @ weight.reshape(d, -1).t() + bias


def videomae_classifier(x: torch.Tensor, sd: Sd, depth: int, heads: int) -> torch.Tensor:
    """``modeling_finetune.VisionTransformer`` (fixed 1-D table, mean pooling + fc_norm + head)."""
    tok = patch_tokens(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])
    tok = tok + videomae_table(tok.shape[1], tok.shape[2])
    for i in range(depth):
        tok = block(tok, sd, f"blocks.{i}.", heads)
    feat = layer_norm(tok.mean(1), sd, "fc_norm")
    return feat @ sd["head.weight"].t() + sd["head.bias"]


def mae_forward(x: torch.Tensor, sd: Sd, ids_keep: torch.Tensor, depth: int, heads: int, dec_depth: int,
                dec_heads: int, decoder: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """MAE's ``forward_encoder`` / ``forward_decoder`` with the visible tokens ``ids_keep [B, n]``
    (in MAE's shuffled order, not sorted): returns the encoder output ``[B, 1 + n, D]`` ([CLS]
    first) and the decoder prediction for all N patches ``[B, N, p·p·3]``."""
    tok = patch_tokens(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])
    b, n_all, d = tok.shape
    tok = tok + sd["pos_embed"][:, 1:]
    tok = torch.gather(tok, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(b, -1, -1)
    tok = torch.cat((cls, tok), 1)
    for i in range(depth):
        tok = block(tok, sd, f"blocks.{i}.", heads)
    latent = layer_norm(tok, sd, "norm")
    if not decoder:
        return latent, None
    y = latent @ sd["decoder_embed.weight"].t() + sd["decoder_embed.bias"]
    dd = y.shape[-1]
    full = sd["mask_token"].expand(b, n_all, dd).clone()
    full.scatter_(1, ids_keep.unsqueeze(-1).expand(-1, -1, dd), y[:, 1:])  # unshuffle
    y = torch.cat((y[:, :1], full), 1) + sd["decoder_pos_embed"]
    for i in range(dec_depth):
        y = block(y, sd, f"decoder_blocks.{i}.", dec_heads)
    y = layer_norm(y, sd, "decoder_norm")
    pred = y @ sd["decoder_pred.weight"].t() + sd["decoder_pred.bias"]
    return latent, pred[:, 1:]
