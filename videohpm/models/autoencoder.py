"""Masked autoencoder with a pixel reconstructor d_φ and an optional loss predictor d_ψ.

The HPM journal version §3.1, Fig. 3: an encoder ``f_θ`` sees only the visible tokens; the visual
reconstructor ``d_φ`` predicts the masked patches (Eq. 3) and the loss predictor ``d_ψ`` — the
same decoder class with a 1-d head — predicts a per-patch reconstruction-loss score (Eq. 4–7).
The HPM teacher runs ``d_ψ(f_θ(x))`` on *all* tokens (``mask=None``).

Architecture and initialisation follow VideoMAE (``PretrainVisionTransformer``) by default: fixed
1-D sin-cos position tables in encoder and decoders, q/v biases, LayerNorm eps 1e-6, an
``encoder_to_decoder`` linear without bias (here ``decoder.embed``). Options give MAE's and the
official HPM image model's layout (:class:`MaskedAutoencoder`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

from .patches import IMAGENET_MEAN, IMAGENET_STD, mask_split, pixel_target
from .vit import Block, Grid, Linear, VisionTransformerEncoder, init_vit_weights, interpolate_pos_embed, \
    make_sincos_table, run_blocks, token_grid

__all__ = ["MaskedDecoder", "MaskedAutoencoder", "LOSS_PREDICTOR_LAYOUTS"]

#: ``MaskedAutoencoder(loss_predictor_layout=...)``: d_ψ as VideoMAE-style decoder of its own, or
#: HPM's official image layout (see :class:`MaskedDecoder`).
LOSS_PREDICTOR_LAYOUTS = ("videomae", "hpm")


class MaskedDecoder(nn.Module):
    """A light transformer decoder over the full token grid (VideoMAE's pretraining decoder).

    ``embed`` (encoder dim → decoder dim, no bias) → scatter into the grid with a learned
    ``mask_token`` at masked positions → add the fixed sin-cos table → ``blocks`` → ``norm`` →
    ``head`` (``out_dim`` = t·p·p·C for d_φ, 1 for d_ψ).

    MAE's decoder differs in three switchable ways: ``embed_bias`` (MAE's ``decoder_embed`` has a
    bias), ``sincos_table="2d"`` (its 2-D table, stored like MAE's ``decoder_pos_embed``) and the
    encoder's [CLS] latent decoded along (``forward(..., cls=...)``). ``init_values``: layer scale
    in the decoder blocks, as VideoMAE passes it to both stacks.

    HPM's official image loss predictor (``decoder_blocks_losspred`` / ``decoder_norm_losspred`` /
    ``decoder_pred_losspred``) is ``own_input=False`` (no ``embed`` / ``mask_token`` / table: it
    reads the pixel decoder's, ``forward(..., inputs=pixel_decoder)``) with ``mean_head=True`` (a
    head of t·p·p·C outputs whose mean is the one score per patch).
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        out_dim: int,
        grid: Grid,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        use_checkpoint: bool = False,
        torch_compile: bool = False,
        init_values: Optional[float] = None,
        sincos_table: str = "1d",
        embed_bias: bool = False,
        own_input: bool = True,
        mean_head: bool = False,
    ):
        super().__init__()
        self.default_grid: Grid = tuple(grid)  # type: ignore[assignment]
        self.num_patches = math.prod(grid)
        self.use_checkpoint = use_checkpoint
        self.torch_compile = torch_compile
        self.own_input = bool(own_input)
        self.mean_head = bool(mean_head)
        if self.own_input:
            self.embed = Linear(in_dim, embed_dim, bias=embed_bias)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.register_buffer("pos_embed", make_sincos_table(sincos_table, self.default_grid, embed_dim),
                                 persistent=sincos_table != "1d")
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, 0.0, 0.0, dpr[i], norm_eps, init_values)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = Linear(embed_dim, out_dim)
        self.apply(init_vit_weights)
        if self.own_input:
            trunc_normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_masked: Optional[torch.Tensor] = None,
                ids_keep: Optional[torch.Tensor] = None, grid: Optional[Grid] = None,
                cls: Optional[torch.Tensor] = None, all_tokens: bool = False,
                inputs: Optional["MaskedDecoder"] = None, embed_only: bool = False,
                ) -> torch.Tensor | tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Decode.

        Args:
            latent: ``[B, n_vis, D_enc]`` encoder output for the tokens ``ids_keep`` (or all N).
            ids_keep / ids_masked: ``[B, n_vis]`` / ``[B, M]`` ascending indices from
                :func:`~videohpm.models.patches.mask_split`, or both None when ``latent`` covers
                all tokens.
            grid: token grid (default grid when None).
            cls: ``[B, 1, D_enc]`` the encoder's [CLS] latent, decoded along with the patch tokens
                at a zero position and dropped before the head (MAE's ``forward_decoder``), or None.
            all_tokens: with indices, return the outputs at the visible positions too, all
                ``n_vis + M`` of them in token-index order (``[B, N, out_dim]`` when ``ids_keep``
                and ``ids_masked`` cover the grid; the HPM teacher's ``subset`` mode).
            inputs: the decoder whose ``embed`` / ``mask_token`` / position table build this
                decoder's input (a decoder built with ``own_input=False``; HPM's loss predictor
                reads the pixel decoder's); None = its own. It is *called* (``embed_only=True``), so
                that a sharding wrapper (DeepSpeed ZeRO-3) gathers its parameters as for any call.
            embed_only: return the decoder input ``(x, ids)`` of :meth:`embed_tokens` instead.
        Returns:
            ``[B, M, out_dim]`` for the masked tokens in ascending index order, or
            ``[B, N, out_dim]`` for all tokens when no indices are given (or ``all_tokens``);
            ``out_dim`` is 1 when ``mean_head`` (the mean of the head's outputs).
        """
        if embed_only or inputs is None:
            if not self.own_input:
                raise ValueError("this decoder has no input layer of its own (own_input=False): pass inputs=<decoder>")
            x, ids = self.embed_tokens(latent, ids_masked, ids_keep, grid, cls)
            if embed_only:
                return x, ids
        else:
            x, ids = inputs(latent, ids_masked, ids_keep, grid=grid, cls=cls, embed_only=True)
        x = run_blocks(self.blocks, x, self.use_checkpoint, self.torch_compile)
        n_cls = 0 if cls is None else 1
        if ids is None or all_tokens:
            y = self._out(x[:, n_cls:])
            if ids is None:
                return y
            # back from [visible | masked] to token order: out[:, ids[j]] = y[:, j]
            return torch.empty_like(y).scatter_(1, ids.unsqueeze(-1).expand_as(y), y)
        return self._out(x[:, n_cls + latent.shape[1]:])

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.norm(x))
        return y.mean(dim=-1, keepdim=True) if self.mean_head else y

    def embed_tokens(self, latent: torch.Tensor, ids_masked: Optional[torch.Tensor], ids_keep: Optional[torch.Tensor],
                     grid: Optional[Grid], cls: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The decoder input (arguments as :meth:`forward`): ``([B, (1 +) n, Dd], ids)`` with
        ``ids = [ids_keep | ids_masked]`` (None over all tokens), [CLS] first when given."""
        grid = self.default_grid if grid is None else tuple(grid)
        pos = interpolate_pos_embed(self.pos_embed, self.default_grid, grid).to(latent.dtype)[0]  # [N, Dd]
        x = self.embed(latent)
        ids = None
        if ids_masked is None:
            if x.shape[1] != pos.shape[0]:
                raise ValueError(f"latent has {x.shape[1]} tokens, expected all {pos.shape[0]} of grid {grid}")
            x = x + pos
        else:
            # VideoMAE layout (and MAE/HPM's forward_decoder): [visible (ascending) | masked
            # (ascending)], each with its position. Attention is permutation-equivariant, so no
            # unshuffle is needed; the masked outputs are then the trailing slice, in index order.
            b, _, dd = x.shape
            ids = torch.cat((ids_keep, ids_masked), dim=1)
            x = torch.cat((x, self.mask_token.expand(b, ids_masked.shape[1], dd)), dim=1) + pos[ids]
        if cls is not None:
            x = torch.cat((self.embed(cls), x), dim=1)
        return x, ids


class MaskedAutoencoder(nn.Module):
    """VideoMAE/MAE-style masked autoencoder (encoder + d_φ [+ d_ψ]); API in docs/ARCHITECTURE.md.

    Image mode is ``num_frames=1, tubelet_size=1``. Its ``norm_pix_loss`` target is MAE's (each
    patch standardised over all its p·p·C values, see :meth:`target`). MAE's own layout
    (``mae_pretrain_vit_base.pth``: [CLS], 2-D sin-cos tables, a biased ``decoder_embed``) is
    ``cls_token=True, sincos_table="2d", decoder_embed_bias=True``; its checkpoints then load
    key for key (:mod:`videohpm.models.formats`). ``init_values`` > 0: VideoMAE's layer scale
    (``gamma_1``/``gamma_2``) in every encoder and decoder block.

    The official HPM image model (HPM's ``models_mae_learn_loss.MaskedAutoencoderViT``; the
    recipe ``configs/pretrain/in1k_vit_b_hpm.yaml``) adds ``cls_in_pretraining=True`` ([CLS] in
    every pre-training encoder and decoder pass, student and teacher), ``loss_predictor_layout=
    "hpm"`` (d_ψ shares d_φ's ``decoder_embed`` / ``mask_token`` / table, and its p·p·3 outputs
    are averaged into one score per patch) and ``target_unnormalize=False`` (the target is
    patchified from the normalised input, as its ``forward_loss``).
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
        drop_path_rate: float = 0.0,
        decoder_embed_dim: int = 384,
        decoder_depth: int = 4,
        decoder_num_heads: int = 6,
        norm_pix_loss: bool = True,
        loss_predictor: bool = False,
        target_dim: Optional[int] = None,
        use_checkpoint: bool = False,
        torch_compile: bool = False,
        use_learnable_pos_emb: bool = False,
        norm_eps: float = 1e-6,
        input_mean: Optional[Sequence[float]] = IMAGENET_MEAN,
        input_std: Optional[Sequence[float]] = IMAGENET_STD,
        cls_token: bool = False,
        init_values: Optional[float] = None,
        sincos_table: str = "1d",
        decoder_embed_bias: bool = False,
        cls_in_pretraining: bool = False,
        loss_predictor_layout: str = "videomae",
        target_unnormalize: bool = True,
    ):
        super().__init__()
        _check_options(cls_token, cls_in_pretraining, loss_predictor_layout)
        self.embed_dim = embed_dim  # encoder width (also of the optional [CLS] token)
        self.patch_size, self.tubelet_size, self.in_chans = patch_size, tubelet_size, in_chans
        self.cls_in_pretraining, self.loss_predictor_layout = bool(cls_in_pretraining), loss_predictor_layout
        self.norm_pix_loss, self.target_unnormalize = norm_pix_loss, bool(target_unnormalize)
        self.input_mean, self.input_std = _floats(input_mean), _floats(input_std)
        self.encoder = VisionTransformerEncoder(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_frames=num_frames,
            tubelet_size=tubelet_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path_rate=drop_path_rate, norm_eps=norm_eps,
            final_norm=True, use_learnable_pos_emb=use_learnable_pos_emb, use_checkpoint=use_checkpoint,
            torch_compile=torch_compile, cls_token=cls_token, init_values=init_values, sincos_table=sincos_table,
        )
        self.patch_dim = tubelet_size * patch_size * patch_size * in_chans
        dec = dict(in_dim=embed_dim, embed_dim=decoder_embed_dim, depth=decoder_depth, num_heads=decoder_num_heads,
                   grid=self.encoder.default_grid, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                   drop_path_rate=drop_path_rate, norm_eps=norm_eps, use_checkpoint=use_checkpoint,
                   torch_compile=torch_compile, init_values=init_values, sincos_table=sincos_table,
                   embed_bias=decoder_embed_bias)
        # d_φ; ``target_dim``: its head's width for a feature target (videohpm.models.targets)
        self.target_dim = self.patch_dim if target_dim is None else int(target_dim)
        self.decoder = MaskedDecoder(out_dim=self.target_dim, **dec)  # d_φ
        # d_ψ: VideoMAE-style, or HPM's image layout (MaskedDecoder doc)
        head = dict(out_dim=1) if loss_predictor_layout != "hpm" else dict(
            out_dim=self.patch_dim, own_input=False, mean_head=True)
        self.loss_predictor = MaskedDecoder(**head, **dec) if loss_predictor else None

    # -- helpers -------------------------------------------------------------------------------
    @property
    def default_grid(self) -> Grid:
        return self.encoder.default_grid

    @property
    def num_patches(self) -> int:
        return self.encoder.num_patches

    @property
    def has_cls_token(self) -> bool:
        """Built with ``cls_token=True`` (a learned [CLS] token in the encoder, for ccMIM)."""
        return self.encoder.cls_token is not None

    def grid(self, x: torch.Tensor | Sequence[int]) -> Grid:
        """Token grid ``(T', H', W')`` of a clip or clip shape ``(B, C, T, H, W)``."""
        shape = x.shape if isinstance(x, torch.Tensor) else tuple(x)
        return token_grid(shape, self.tubelet_size, self.patch_size)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Toggle activation checkpointing in the encoder and both decoders."""
        for m in (self.encoder, self.decoder, self.loss_predictor):
            if m is not None:
                m.use_checkpoint = enable

    def set_torch_compile(self, enable: bool = True) -> None:
        """Run the transformer stacks through ``torch.compile`` (see :func:`~videohpm.models.vit.run_blocks`)."""
        for m in (self.encoder, self.decoder, self.loss_predictor):
            if m is not None:
                m.torch_compile = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay (besides 1-D ones the optimizer skips)."""
        names = {"decoder.mask_token"}
        if self.loss_predictor is not None and self.loss_predictor.own_input:
            names.add("loss_predictor.mask_token")
        if isinstance(self.encoder.pos_embed, nn.Parameter):
            names.add("encoder.pos_embed")
        if self.has_cls_token:
            names.add("encoder.cls_token")  # as MAE/timm: a token, not a weight matrix
        return names

    # -- API ----------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, cls: Optional[bool] = None,
               return_cls_logits: bool = False, num_visible: Optional[int] = None,
               ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``f_θ``: encode the visible tokens.

        Args:
            x: ``[B, C, T, H, W]`` (ImageNet-normalized).
            mask: ``[B, N]`` bool, True = masked (hidden); None = encode all N tokens.
            cls: prepend the learned [CLS] token (models built with ``cls_token=True``; ccMIM).
                None = the model's convention, ``cls_in_pretraining`` (MAE / HPM's image model
                always prepends it).
            return_cls_logits: with ``cls``, also return per encoder block the [CLS]-row
                attention logits ``q_0 · k_j / √d_h`` over the encoded patch keys, ``[B, heads, n]``
                (ccMIM Eq. 4; see :meth:`VisionTransformerEncoder.forward_cls`).
            num_visible: visible tokens per sample when the caller knows it (every mask strategy
                does: ``mask_generator.num_visible_per_sample(grid)``). The training step then
                needs no device→host sync; without it the count is read from ``mask`` (one sync).
        Returns:
            ``[B, N_vis, D]`` after the final norm, tokens in ascending index order;
            ``[B, 1 + N_vis, D]`` with [CLS] first when ``cls``; with ``return_cls_logits`` the
            pair ``(tokens, [depth × [B, heads, N_vis]])``. :meth:`decode` takes them with the same
            ``cls`` (:meth:`patch_latents` drops the [CLS] row).
        """
        cls = self.cls_in_pretraining if cls is None else bool(cls)
        if not cls:
            if return_cls_logits:
                raise ValueError("encode(return_cls_logits=True) needs cls=True")
            if mask is None:
                return self.encoder(x)
            self._check_mask(mask, x)
            ids_keep = self._ids_keep(mask, num_visible)
            return self.encoder(x, ids_keep)
        if not self.has_cls_token:
            raise ValueError("encode(cls=True) needs a model built with cls_token=True "
                             "(model.kwargs.cls_token: true)")
        ids_keep = None
        if mask is not None:
            self._check_mask(mask, x)
            ids_keep = self._ids_keep(mask, num_visible)
        return self.encoder.forward_cls(x, ids_keep, return_cls_logits=return_cls_logits)

    def patch_latents(self, latent: torch.Tensor) -> torch.Tensor:
        """The patch tokens ``[B, n, D]`` of an :meth:`encode` output taken with the model's own
        convention (its [CLS] row dropped when ``cls_in_pretraining``)."""
        return latent[:, 1:] if self.cls_in_pretraining else latent

    @staticmethod
    def _ids_keep(mask: torch.Tensor, num_visible: Optional[int]) -> torch.Tensor:
        """Ascending visible indices ``[B, N_vis]``; sync-free when ``num_visible`` is given."""
        if num_visible is None:
            return mask_split(mask)[0]
        return _split_known(mask, int(num_visible))[0]

    def decode(self, latent: torch.Tensor, mask: Optional[torch.Tensor] = None, head: str = "pixel",
               grid: Optional[Grid] = None, decode_ids: Optional[torch.Tensor] = None,
               cls: Optional[bool] = None, all_tokens: bool = False) -> torch.Tensor:
        """``d_φ`` (``head="pixel"``) or ``d_ψ`` (``head="loss"``).

        Args:
            latent: ``[B, N_vis, D]`` from :meth:`encode` with the same ``mask``; with
                ``mask=None`` it must cover all N tokens (HPM teacher).
            mask: ``[B, N]`` bool, True = masked, or None.
            grid: token grid of the input (needed only when it is not the default grid).
            decode_ids: ``[B, K]`` ascending indices of a subset of the masked tokens (VideoMAE
                V2 decoder masking, :func:`videohpm.masking.decoder_token_ids`): the decoder
                then gets the visible latents plus mask tokens at these K positions only, and
                outputs are for these K tokens. None = all masked tokens.
            cls: ``latent`` starts with the [CLS] token (``encode(..., cls=True)``), which is
                then decoded along with the patch tokens at a zero position, as MAE's decoder
                does, and gets no output. None = the model's ``cls_in_pretraining``.
            all_tokens: with a ``mask`` (and no ``decode_ids``), outputs for all N tokens in
                token order, the masked ones from mask tokens and the visible ones from their
                latents, in one pass (the HPM teacher's ``subset`` mode, ``videohpm.methods.hpm``).
        Returns:
            ``[B, N_mask, out_dim]`` (pixel; ``out_dim`` = t·p·p·C or ``target_dim``) /
            ``[B, N_mask, 1]`` (loss) for the masked tokens in ascending index order (``[B, K,
            ...]`` with ``decode_ids``); for all N tokens when ``mask`` is None.
        """
        dec = self._head(head)
        # HPM's image loss predictor reads the pixel decoder's input layer (MaskedDecoder doc)
        inputs = None if dec.own_input else self.decoder
        cls_latent = None
        if self.cls_in_pretraining if cls is None else cls:
            if not self.has_cls_token:
                raise ValueError("decode(cls=True) needs a model built with cls_token=True")
            cls_latent, latent = latent[:, :1], latent[:, 1:]
        if grid is None:
            n = latent.shape[1] if mask is None else mask.shape[1]
            if n != self.num_patches:
                raise ValueError(
                    f"decode: {n} tokens differ from the default grid {self.default_grid}; pass grid="
                )
        if mask is None:
            return dec(latent, grid=grid, cls=cls_latent, inputs=inputs)
        ids_keep, ids_masked = _split_known(mask, latent.shape[1])
        if decode_ids is not None:
            if decode_ids.dim() != 2 or decode_ids.shape[0] != mask.shape[0] or decode_ids.dtype != torch.long:
                raise ValueError(f"decode_ids must be int64 [B, K] with B = {mask.shape[0]}, got "
                                 f"{decode_ids.dtype} {tuple(decode_ids.shape)}")
            if all_tokens:
                raise ValueError("decode: all_tokens=True needs decode_ids=None (outputs for all N tokens)")
            ids_masked = decode_ids
        return dec(latent, ids_masked, ids_keep, grid=grid, cls=cls_latent, all_tokens=all_tokens, inputs=inputs)

    def _head(self, head: str) -> MaskedDecoder:
        if head == "pixel":
            return self.decoder
        if head == "loss":
            if self.loss_predictor is None:
                raise ValueError("decode(head='loss') needs a model built with loss_predictor=True")
            return self.loss_predictor
        raise ValueError(f"decode: unknown head {head!r}; expected 'pixel' or 'loss'")

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction target ``T(x)``: ``[B, N, t·p·p·C]`` (see :func:`pixel_target`).

        With ``target_unnormalize`` (the default) inputs are un-normalized with ``input_mean`` /
        ``input_std`` (ImageNet by default) first, as VideoMAE does; ``target_unnormalize=False``
        patchifies the model input as it is, as MAE's ``forward_loss`` (kept by the official HPM
        image code) does. ``norm_pix_loss`` then standardizes each patch: per channel over its
        t·p·p voxels for video (VideoMAE), jointly over its p·p·C values for images (T = 1, MAE /
        HPM). The two spaces give other targets under ``norm_pix_loss``: the per-patch
        standardisation is not invariant to a per-channel affine map.
        """
        mean, std = (self.input_mean, self.input_std) if self.target_unnormalize else (None, None)
        return pixel_target(x, self.tubelet_size, self.patch_size, self.norm_pix_loss, mean, std)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Student pass: ``{"pred": [B, M, t·p·p·C]}`` plus ``"pred_loss": [B, M]`` with d_ψ."""
        latent = self.encode(x, mask)
        out = {"pred": self.decode(latent, mask, "pixel", grid=self.grid(x))}
        if self.loss_predictor is not None:
            out["pred_loss"] = self.decode(latent, mask, "loss", grid=self.grid(x))[..., 0]
        return out

    def _check_mask(self, mask: torch.Tensor, x: torch.Tensor) -> None:
        n = math.prod(self.grid(x))
        if mask.shape != (x.shape[0], n):
            raise ValueError(f"mask shape {tuple(mask.shape)} != (B, N) = ({x.shape[0]}, {n}) for x {tuple(x.shape)}")


def _floats(values: Optional[Sequence[float]]) -> Optional[tuple[float, ...]]:
    return None if values is None else tuple(float(v) for v in values)


def _check_options(cls_token: bool, cls_in_pretraining: bool, loss_predictor_layout: str) -> None:
    if cls_in_pretraining and not cls_token:
        raise ValueError("cls_in_pretraining=True needs a [CLS] token: set cls_token=True as well")
    if loss_predictor_layout not in LOSS_PREDICTOR_LAYOUTS:
        raise ValueError(f"loss_predictor_layout={loss_predictor_layout!r}: expected one of {LOSS_PREDICTOR_LAYOUTS}")


def _split_known(mask: torch.Tensor, n_vis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`mask_split` but with the visible count known (from the latent's shape), so
    it needs no device→host sync."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool [B, N] tensor, got {mask.dtype} {tuple(mask.shape)}")
    ids = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    return ids[:, :n_vis], ids[:, n_vis:]
