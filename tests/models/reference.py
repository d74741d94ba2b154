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


# --- HPM's official image model (models_mae_learn_loss.MaskedAutoencoderViT), from its equations ---
def hpm_forward(x: torch.Tensor, sd: Sd, mask: torch.Tensor, depth: int, heads: int, dec_depth: int,
                dec_heads: int) -> dict:
    """The official forward on a bool ``mask [B, N]`` (True = hidden; ``mask`` all False = the
    teacher's pass): the encoder sees ``[CLS] + visible`` (ascending); both decoders read one input
    ``[CLS | visible + pos | mask_token + pos]`` built with the shared ``decoder_embed`` /
    ``mask_token``; the loss predictor's ``p·p·3`` outputs are averaged. Outputs (``latent``
    ``[B, 1 + n, D]``, ``pred`` ``[B, N, p·p·3]``, ``loss_pred`` ``[B, N]``) are in the decoder's
    ``[visible | masked]`` order, as the official ones."""
    tok = patch_tokens(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]) + sd["pos_embed"][:, 1:]
    b, n, d = tok.shape
    vis = torch.stack([tok[i][~mask[i]] for i in range(b)])
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(b, -1, -1)
    h = torch.cat((cls, vis), 1)
    for i in range(depth):
        h = block(h, sd, f"blocks.{i}.", heads)
    latent = layer_norm(h, sd, "norm")
    y = latent @ sd["decoder_embed.weight"].t() + sd["decoder_embed.bias"]
    dpos = sd["decoder_pos_embed"]
    rows = []
    for i in range(b):
        masked = sd["mask_token"][0] + dpos[0, 1:][mask[i]]
        rows.append(torch.cat((y[i, :1] + dpos[0, :1], y[i, 1:] + dpos[0, 1:][~mask[i]], masked)))
    dec_in = torch.stack(rows)

    def stack(names: str, norm: str, pred: str) -> torch.Tensor:
        z = dec_in
        for i in range(dec_depth):
            z = block(z, sd, f"{names}.{i}.", dec_heads)
        z = layer_norm(z, sd, norm)
        return (z @ sd[f"{pred}.weight"].t() + sd[f"{pred}.bias"])[:, 1:]

    pred = stack("decoder_blocks", "decoder_norm", "decoder_pred")
    loss_pred = stack("decoder_blocks_losspred", "decoder_norm_losspred", "decoder_pred_losspred").mean(-1)
    return {"latent": latent, "pred": pred, "loss_pred": loss_pred}


def hpm_target(x: torch.Tensor, mask: torch.Tensor, p: int, norm_pix_loss: bool = True) -> torch.Tensor:
    """The official ``forward_loss`` target of the masked patches ``[B, M, p·p·3]`` (ascending):
    the *model input* patchified ``(p p c)`` (no un-normalisation), each patch standardised over
    its ``p·p·3`` values with the unbiased variance: ``(v − mean) / (var + 1e-6) ** .5``."""
    img = x[:, :, 0]
    b, c, hh, ww = img.shape
    out = []
    for i in range(b):
        rows = []
        for k in torch.nonzero(mask[i]).flatten().tolist():
            r, col = divmod(k, ww // p)
            v = img[i, :, r * p:(r + 1) * p, col * p:(col + 1) * p].permute(1, 2, 0).reshape(-1)
            if norm_pix_loss:
                v = (v - v.mean()) / (v.var(unbiased=True) + 1e-6) ** 0.5
            rows.append(v)
        out.append(torch.stack(rows))
    return torch.stack(out)


def hpm_relative_loss(loss_pred: torch.Tensor, loss_target: torch.Tensor) -> torch.Tensor:
    """The official relative objective, pair by pair: ``−1[L_j > L_i] log(σ(L̂_j − L̂_i) + 1e-6) −
    1[L_j < L_i] log(1 − σ(L̂_j − L̂_i) + 1e-6)`` summed over the batch's ordered pairs, divided
    by the number of pairs with ``L_i ≠ L_j``."""
    total, count = 0.0, 0
    for b in range(loss_pred.shape[0]):
        for i in range(loss_pred.shape[1]):
            for j in range(loss_pred.shape[1]):
                s = torch.sigmoid(loss_pred[b, j] - loss_pred[b, i])
                if loss_target[b, j] > loss_target[b, i]:
                    total, count = total - torch.log(s + 1e-6), count + 1
                elif loss_target[b, j] < loss_target[b, i]:
                    total, count = total - torch.log(1 - s + 1e-6), count + 1
    return total / count


def hpm_absolute_loss(loss_pred: torch.Tensor, loss_target: torch.Tensor) -> torch.Tensor:
    """The official absolute objective: the target standardised per image, ``(L − mean) /
    (var_unbiased + 1e-6) ** .5``, then the mean squared error."""
    mean = loss_target.mean(1, keepdim=True)
    var = ((loss_target - mean) ** 2).sum(1, keepdim=True) / (loss_target.shape[1] - 1)
    return ((loss_pred - (loss_target - mean) / (var + 1e-6) ** 0.5) ** 2).mean()
