"""VideoMAE-style Vision Transformer building blocks.

Everything here works on clips ``x: [B, C, T, H, W]``; images are clips with ``T = 1`` and a
tubelet of 1. Tokens are flattened time-major over the grid ``(T/t, H/p, W/p)``:
``index = τ·(H/p·W/p) + h·(W/p) + w`` (docs/ARCHITECTURE.md).

Parameter names follow VideoMAE V1/V2 (``patch_embed.proj``, ``blocks.i.attn.qkv``,
``attn.q_bias``/``attn.v_bias``, ``mlp.fc1``/``mlp.fc2``, ``norm1``/``norm2``) so that their
checkpoints map onto ours one to one (see :mod:`videohpm.models.formats`).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from videohpm.kernels import attention, linear

Grid = tuple[int, int, int]

__all__ = [
    "Grid",
    "Linear",
    "sincos_table_1d",
    "sincos_table_2d",
    "SINCOS_TABLES",
    "make_sincos_table",
    "interpolate_pos_embed",
    "token_grid",
    "PatchEmbed3D",
    "Attention",
    "Block",
    "VisionTransformerEncoder",
    "init_vit_weights",
]


# ----------------------------------------------------------------------------------------------
# Linear layers (fp32 CPU GEMMs on oneDNN, see videohpm/kernels/cpu.py)
# ----------------------------------------------------------------------------------------------
class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and init) whose forward uses :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class Mlp(nn.Module):
    """``fc1 → GELU → drop → fc2 → drop`` (timm's ``Mlp`` layout and names, on :class:`Linear`)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


# ----------------------------------------------------------------------------------------------
# Position tables
# ----------------------------------------------------------------------------------------------
def sincos_table_1d(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed 1-D sin-cos table over the flattened token grid.

    ``table[n, j] = sin(n / 10000^(2⌊j/2⌋/dim))`` for even ``j`` and ``cos(·)`` for odd ``j``
    (interleaved, as VideoMAE V1/V2 and HF ``get_sinusoid_encoding_table``), computed in float64
    and returned as float32 so that it matches their tables bit for bit.

    Returns ``[1, num_positions, dim]``.
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2.0 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.to(torch.float32).unsqueeze(0)


def sincos_table_2d(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table (``get_2d_sincos_pos_embed``, without the [CLS] row).

    The first ``dim/2`` channels encode the token's *column* ``w`` and the last ``dim/2`` its row
    ``h`` (MAE's ``meshgrid(grid_w, grid_h)`` puts ``w`` first), each as ``[sin(pos·ω) | cos(pos·ω)]``
    (halves, not interleaved) with ``ω_k = 10000^(-k/(dim/4))``, ``k < dim/4``. Tokens are
    row-major (``index = h·W + w``). Computed in float64 like MAE's numpy code and returned as
    float32, so it equals the ``pos_embed[:, 1:]`` stored in MAE checkpoints.

    Returns ``[1, grid_h·grid_w, dim]``.
    """
    if dim % 4:
        raise ValueError(f"sincos_table_2d: dim {dim} must be divisible by 4")
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))  # [D/4]
    hh, ww = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                            indexing="ij")

    def one_d(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega  # [M, D/4]
        return torch.cat((out.sin(), out.cos()), dim=1)  # [M, D/2]

    return torch.cat((one_d(ww), one_d(hh)), dim=1).to(torch.float32).unsqueeze(0)


def _sincos_axis(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[len(positions), dim]``: ``[sin(pos·ω) | cos(pos·ω)]`` with ``ω_k = 10000^(-k/(dim/2))``."""
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angle = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat((torch.sin(angle), torch.cos(angle)), dim=1)


def sincos_table_3d(grid_t: int, grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """A separable space-time sin-cos table: ``dim/4`` channels encode the time slice ``τ`` and
    ``3·dim/8`` each the row ``h`` and the column ``w`` (each axis as in MAE's 2-D table,
    ``[sin | cos]`` halves), concatenated ``[τ | h | w]``; tokens time-major
    (``index = τ·H'·W' + h·W' + w``).

    Beyond VideoMAE (whose table is 1-D over the flattened grid) and in the spirit of MAE-ST's
    separable space / time embeddings: two tokens at the same place in different time slices
    share their whole spatial part, so attention can match "the same patch, another time" with a
    fixed projection — which a small model in a short schedule could not find in the 1-D table
    (docs/EVIDENCE.md). Returns ``[1, T'·H'·W', dim]`` float32; needs ``dim % 16 == 0``.
    """
    if dim % 16:
        raise ValueError(f"sincos_table_3d: dim {dim} must be divisible by 16")
    dt, ds = dim // 4, 3 * dim // 8
    tt, hh, ww = torch.meshgrid(torch.arange(grid_t), torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    table = torch.cat((_sincos_axis(tt.reshape(-1), dt), _sincos_axis(hh.reshape(-1), ds),
                       _sincos_axis(ww.reshape(-1), ds)), dim=1)
    return table.float()[None]


SINCOS_TABLES = ("1d", "2d", "3d")


def make_sincos_table(kind: str, grid: Sequence[int], dim: int) -> torch.Tensor:
    """The fixed table ``[1, N, dim]`` of ``kind`` for a ``(T', H', W')`` grid: ``"1d"`` VideoMAE's
    over the flattened grid, ``"2d"`` MAE's image table (needs ``T' = 1``), ``"3d"`` the separable
    space-time table of :func:`sincos_table_3d`."""
    gt, gh, gw = (int(g) for g in grid)
    if kind == "1d":
        return sincos_table_1d(gt * gh * gw, dim)
    if kind == "3d":
        return sincos_table_3d(gt, gh, gw, dim)
    if kind == "2d":
        if gt != 1:
            raise ValueError(f"sincos_table='2d' is MAE's image table and needs one time slice (T' = 1), got grid "
                             f"{tuple(grid)}; video models use VideoMAE's '1d' table")
        return sincos_table_2d(gh, gw, dim)
    raise ValueError(f"sincos_table={kind!r}: expected one of {SINCOS_TABLES}")


def interpolate_pos_embed(pos: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]) -> torch.Tensor:
    """Resample a position table laid out on ``src_grid`` onto ``dst_grid``.

    The table is reshaped to its grid ``[T', H', W', D]`` and resized separably: bicubic over
    space (as VideoMAE/DeiT fine-tuning code does for other resolutions) and linear over time
    (``align_corners=False``). Identity (the same tensor object) when the grids are equal.

    Args:
        pos: ``[1, N_src, D]`` or ``[N_src, D]`` with ``N_src = prod(src_grid)``.
        src_grid, dst_grid: ``(T', H', W')`` token grids.
    Returns:
        ``[1, prod(dst_grid), D]`` (or ``[N_dst, D]`` if the input had no batch dim), same dtype.
    """
    src = tuple(int(s) for s in src_grid)
    dst = tuple(int(s) for s in dst_grid)
    squeeze = pos.dim() == 2
    table = pos.unsqueeze(0) if squeeze else pos
    if table.dim() != 3 or table.shape[0] != 1:
        raise ValueError(f"pos table must be [1, N, D] or [N, D], got {tuple(pos.shape)}")
    n, d = table.shape[1], table.shape[2]
    if n != math.prod(src):
        raise ValueError(f"pos table has {n} positions but src_grid {src} has {math.prod(src)}")
    if src == dst:
        return pos
    t0, h0, w0 = src
    t1, h1, w1 = dst
    dtype = table.dtype
    x = table.reshape(t0, h0, w0, d).permute(0, 3, 1, 2).float()  # [T0, D, H0, W0]
    if (h0, w0) != (h1, w1):
        x = F.interpolate(x, size=(h1, w1), mode="bicubic", align_corners=False)
    if t0 != t1:
        # [T0, D, H1, W1] -> [D*H1*W1 (batch), 1, T0] -> linear over time
        x = x.permute(1, 2, 3, 0).reshape(1, d * h1 * w1, t0)
        x = F.interpolate(x, size=t1, mode="linear", align_corners=False)
        x = x.reshape(d, h1, w1, t1).permute(3, 0, 1, 2)  # [T1, D, H1, W1]
    out = x.permute(0, 2, 3, 1).reshape(1, t1 * h1 * w1, d).to(dtype)
    return out[0] if squeeze else out


def token_grid(shape: Sequence[int], tubelet_size: int, patch_size: int) -> Grid:
    """Token grid ``(T/t, H/p, W/p)`` of a clip shape ``(B, C, T, H, W)``; raises if not divisible."""
    if len(shape) != 5:
        raise ValueError(f"expected a clip of shape (B, C, T, H, W), got {tuple(shape)}")
    _, _, t, h, w = (int(s) for s in shape)
    if t % tubelet_size or h % patch_size or w % patch_size:
        raise ValueError(
            f"clip (T, H, W) = ({t}, {h}, {w}) is not divisible by the tubelet/patch size "
            f"({tubelet_size}, {patch_size}, {patch_size})"
        )
    return t // tubelet_size, h // patch_size, w // patch_size


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------
class PatchEmbed3D(nn.Module):
    """Tubelet embedding: ``Conv3d`` with kernel = stride = ``(t, p, p)`` (VideoMAE).

    A stride-equals-kernel convolution is a linear map on non-overlapping patches, so when only
    the visible tokens are needed (:meth:`forward_patches`) we project just those patches with the
    same weights instead of convolving the whole clip and throwing 90 % of the result away.
    """

    def __init__(self, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size = int(patch_size)
        self.tubelet_size = int(tubelet_size)
        self.in_chans = int(in_chans)
        k = (self.tubelet_size, self.patch_size, self.patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def _check(self, x: torch.Tensor) -> Grid:
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected x: [B, {self.in_chans}, T, H, W], got {tuple(x.shape)}")
        return token_grid(x.shape, self.tubelet_size, self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, T, H, W]`` -> tokens ``[B, N, D]`` (all tokens, time-major)."""
        self._check(x)
        return self.proj(x).flatten(2).transpose(1, 2)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, T, H, W]`` -> ``[B, N, C·t·p·p]`` ordered ``(c t p p)`` like the conv weight."""
        (gt, gh, gw) = self._check(x)
        b, c = x.shape[:2]
        t, p = self.tubelet_size, self.patch_size
        x = x.reshape(b, c, gt, t, gh, p, gw, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, gt * gh * gw, c * t * p * p)

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Project patch vectors from :meth:`patches` (any subset): ``[B, n, C·t·p·p] -> [B, n, D]``."""
        w = self.proj.weight
        return linear(patches, w.reshape(w.shape[0], -1), self.proj.bias)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv linear, on ``scaled_dot_product_attention``
    (or, for fp32 CPU tensors with many tokens, the oneDNN kernels of :mod:`videohpm.kernels.cpu`).

    ``qkv_bias=True`` follows VideoMAE: learnable ``q_bias`` and ``v_bias``, the key bias is fixed
    at zero (it cancels in the softmax anyway), so V1/V2/HF checkpoints load unchanged.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        else:
            self.q_bias = self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, N, D] -> [B, N, D]``."""
        b, n, d = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = linear(x, self.qkv.weight, bias)  # [B, N, 3·D], (3 h hd)
        x = attention(qkv, self.num_heads, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x))

    def cls_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[CLS]-row attention logits ``q_0 · k_j / √d_h`` over the other tokens (ccMIM Eq. 4).

        SDPA never materializes the attention map, so the one row we need is formed here from
        the same qkv weights: with ``k_j = W_k,h x_j`` (the key bias is zero, see the class
        docstring), ``q_0 · k_j = (W_k,hᵀ q_0) · x_j``, i.e. one ``[D]`` vector per head dotted with
        every token: ``O(B·h·N·D)``, a fraction of the block's ``O(B·N·D²)`` qkv GEMM.

        Args:
            x: ``[B, 1 + N, D]`` the *normalized* block input (``norm1`` output), [CLS] first.
        Returns:
            ``[B, heads, N]`` logits of the [CLS] query against the N patch keys (pre-softmax).
        """
        b, n1, d = x.shape
        h, hd = self.num_heads, self.head_dim
        w_q, w_k = self.qkv.weight[:d], self.qkv.weight[d:2 * d]  # [D, D] each, rows (h hd)
        q0 = F.linear(x[:, 0], w_q, self.q_bias).view(b, h, hd)  # [B, h, hd]
        u = torch.einsum("bhe,hed->bhd", q0, w_k.view(h, hd, d))  # W_k,hᵀ q_0: [B, h, D]
        return torch.einsum("bhd,bnd->bhn", u, x[:, 1:]) * hd ** -0.5  # [B, h, N]


class Block(nn.Module):
    """Pre-norm transformer block (``norm1 → attn → +``, ``norm2 → mlp → +``) with DropPath.

    ``init_values > 0`` adds VideoMAE's layer scale (CaiT's LayerScale): learned per-channel
    ``gamma_1``/``gamma_2`` (initialised to ``init_values``) multiply the attention and MLP branches,
    ``x + drop_path(γ₁ ⊙ attn(norm1(x)))``, with VideoMAE's parameter names so that such
    checkpoints load one to one. ``None``/``0`` (the default, as VideoMAE's) adds no parameter.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6,
                 init_values: Optional[float] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        if init_values:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None:
            x = x + self.drop_path(self.attn(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


def _run_blocks_eager(blocks: nn.ModuleList, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    ckpt = use_checkpoint and torch.is_grad_enabled()
    for blk in blocks:
        x = checkpoint(blk, x, use_reentrant=False) if ckpt else blk(x)
    return x


_compiled_run_blocks: Optional[Callable[..., torch.Tensor]] = None


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, use_checkpoint: bool, compile: bool = False) -> torch.Tensor:
    """Apply ``blocks`` in order.

    ``use_checkpoint``: recompute each block's activations in backward (``torch.utils.checkpoint``,
    non-reentrant) to trade compute for memory. ``compile``: run the stack through one shared
    ``torch.compile(dynamic=False)`` function. Modules are arguments, not constants, so every
    stack of the same structure and token count (student and EMA teacher alike) reuses one graph;
    the first call per shape pays the compilation.
    """
    if compile:
        global _compiled_run_blocks
        if _compiled_run_blocks is None:
            _compiled_run_blocks = torch.compile(_run_blocks_eager, dynamic=False)
        return _compiled_run_blocks(blocks, x, use_checkpoint)
    return _run_blocks_eager(blocks, x, use_checkpoint)


def init_vit_weights(module: nn.Module) -> None:
    """VideoMAE init: truncated normal (std .02) for linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------
class VisionTransformerEncoder(nn.Module):
    """ViT encoder over tubelet tokens (shared by the autoencoder and the classifier).

    ``pos_embed`` is VideoMAE's fixed 1-D sin-cos table over the default grid (a non-persistent
    buffer: it is a function of the sizes, not a weight), with ``sincos_table="2d"`` MAE's fixed
    2-D image table (a *persistent* buffer, because MAE checkpoints store it: they then load key for
    key and a model of the other table refuses them) or, with ``use_learnable_pos_emb``, a learned
    parameter. Inputs of another T/H/W get the table interpolated on the fly
    (:func:`interpolate_pos_embed`). ``init_values`` turns on layer scale (:class:`Block`).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_frames: int = 16,
        tubelet_size: int = 2,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        final_norm: bool = True,
        use_learnable_pos_emb: bool = False,
        use_checkpoint: bool = False,
        torch_compile: bool = False,
        cls_token: bool = False,
        init_values: Optional[float] = None,
        sincos_table: str = "1d",
    ):
        super().__init__()
        if num_frames % tubelet_size or img_size % patch_size:
            raise ValueError(
                f"num_frames={num_frames} / img_size={img_size} not divisible by "
                f"tubelet_size={tubelet_size} / patch_size={patch_size}"
            )
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        self.default_grid: Grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_patches = math.prod(self.default_grid)
        self.use_checkpoint = use_checkpoint
        self.torch_compile = torch_compile
        self.sincos_table = sincos_table
        self.init_values = float(init_values) if init_values else None

        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim)
        self._add_pos_embed(use_learnable_pos_emb)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth decay rule
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i], norm_eps, init_values)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.apply(init_vit_weights)
        self._add_cls_token(cls_token)

    def _add_pos_embed(self, learnable: bool) -> None:
        """The fixed sin-cos table as a buffer (persistent for MAE's 2-D table), or a learned one."""
        table = make_sincos_table(self.sincos_table, self.default_grid, self.embed_dim)  # checks the kind in any case
        if learnable:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, self.embed_dim))
            trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_buffer("pos_embed", table, persistent=self.sincos_table != "1d")

    def _add_cls_token(self, enabled: bool) -> None:
        """Optional learned [CLS] token (ccMIM §4 "Backbone"); VideoMAE has none, so it is off by
        default and then adds no state-dict key. Its position embedding is the zero vector, as in
        MAE's table (a learned one would only duplicate the learned token)."""
        if enabled:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
            trunc_normal_(self.cls_token, std=0.02)
        else:
            self.cls_token = None

    def pos_table(self, grid: Grid) -> torch.Tensor:
        """Position table ``[1, N, D]`` for ``grid`` (interpolated if it is not the default grid)."""
        return interpolate_pos_embed(self.pos_embed, self.default_grid, grid)

    def forward(self, x: torch.Tensor, ids_keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode a clip.

        Args:
            x: ``[B, C, T, H, W]`` (ImageNet-normalized).
            ids_keep: ``[B, n]`` ascending indices of the tokens to encode (the visible ones), or
                ``None`` for all ``N`` tokens.
        Returns:
            ``[B, n, D]`` after the final norm (``n = N`` when ``ids_keep`` is None).
        """
        tokens = self.pos_drop(self.embed(x, ids_keep))
        tokens = run_blocks(self.blocks, tokens, self.use_checkpoint, self.torch_compile)
        return self.norm(tokens)

    def embed(self, x: torch.Tensor, ids_keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Patch tokens plus their positions: ``x: [B, C, T, H, W]`` -> ``[B, n, D]`` (before
        ``pos_drop``); ``ids_keep: [B, n]`` as in :meth:`forward`."""
        grid = self.patch_embed._check(x)
        pos = self.pos_table(grid).to(dtype=x.dtype)
        if ids_keep is None:
            return self.patch_embed(x) + pos
        # Project only the kept patches (same math as the conv, ~1/(1-ρ) less work).
        patches = self.patch_embed.patches(x)
        idx = ids_keep.unsqueeze(-1)
        patches = torch.gather(patches, 1, idx.expand(-1, -1, patches.shape[-1]))
        return self.patch_embed.forward_patches(patches) + pos[0][ids_keep]

    def forward_cls(
        self, x: torch.Tensor, ids_keep: Optional[torch.Tensor] = None, return_cls_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode with the learned [CLS] token prepended (needs ``cls_token=True``).

        Args:
            x, ids_keep: as in :meth:`forward`.
            return_cls_logits: also return, per block, the [CLS]-row attention logits over the
                patch keys (ccMIM Eq. 4, :meth:`Attention.cls_logits`) under the current weights.
                Runs the blocks eagerly (no checkpointing / compile): meant for a no-grad pass.
        Returns:
            ``tokens: [B, 1 + n, D]`` after the final norm, [CLS] first, then the patch tokens in
            ascending index order; with ``return_cls_logits`` the pair
            ``(tokens, [depth × [B, heads, n]])``.
        """
        if self.cls_token is None:
            raise ValueError("this encoder has no [CLS] token: build the model with cls_token=True")
        tokens = self.embed(x, ids_keep)
        cls = self.cls_token.to(dtype=tokens.dtype).expand(tokens.shape[0], -1, -1)  # zero position
        tokens = self.pos_drop(torch.cat((cls, tokens), dim=1))
        if not return_cls_logits:
            tokens = run_blocks(self.blocks, tokens, self.use_checkpoint, self.torch_compile)
            return self.norm(tokens)
        # The [CLS] row is read off each attention's own input by a pre-forward hook: it sees the
        # exact tensor the block attends over, and runs *inside* the module call, i.e. while a
        # sharding wrapper (DeepSpeed ZeRO-3, FSDP) has the qkv weight gathered.
        logits: list[torch.Tensor] = []
        hooks = [blk.attn.register_forward_pre_hook(lambda mod, args: logits.append(mod.cls_logits(args[0])))
                 for blk in self.blocks]
        try:
            tokens = _run_blocks_eager(self.blocks, tokens, use_checkpoint=False)
        finally:
            for h in hooks:
                h.remove()
        return self.norm(tokens), logits
