"""Fine-tuning model: ViT encoder on all tokens → mean pool → ``fc_norm`` → dropout → ``head``.

Matches VideoMAE's ``vit_*_patch16_224`` (``use_mean_pooling=True``: the encoder's final norm is
replaced by ``fc_norm`` on the pooled feature; ``False``: final norm and the first token, as
VideoMAE/HF do — there is no class token). The head is initialised with a truncated normal
scaled by ``init_scale`` (VideoMAE uses 0.001 for fine-tuning) and a zero bias.

Options for other peers' checkpoints: ``init_values`` (VideoMAE's layer scale ``gamma_1/2``),
``cls_token`` and ``sincos_table="2d"`` (MAE's image backbone: the [CLS] token takes part in the
attention; mean pooling averages the patch tokens only, as MAE's ``global_pool``; without mean
pooling the [CLS] output is the feature).

``time_pooling=True``: the head reads the time-keeping probe's features
(:mod:`videohpm.evaluation.probe`): the encoder's final-normed tokens averaged per time slice,
the ``T'`` slices concatenated in temporal order (``[B, T'·D]``), standardized by fixed
per-feature statistics (``feat_norm``: buffers, not trained). A fitted probe is then this head
exactly (:mod:`videohpm.models.probe_head`), the start of LP-FT fine-tuning.
"""
from __future__ import annotations

from typing import Optional

import torch
from timm.layers import trunc_normal_
from torch import nn

from .vit import Grid, Linear, VisionTransformerEncoder, token_grid

__all__ = ["VideoClassifier", "FeatureStandardize"]


class FeatureStandardize(nn.Module):
    """``(x − mean) / std`` with fixed per-feature statistics (buffers, saved with the model;
    identity until set, e.g. from a fitted probe)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class VideoClassifier(nn.Module):
    """Video (or image, ``num_frames=1, tubelet_size=1``) classifier for fine-tuning."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_frames: int = 16,
        tubelet_size: int = 2,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        fc_drop_rate: float = 0.0,
        init_scale: float = 0.001,
        use_mean_pooling: bool = True,
        use_learnable_pos_emb: bool = False,
        use_checkpoint: bool = False,
        torch_compile: bool = False,
        norm_eps: float = 1e-6,
        init_values: Optional[float] = None,
        cls_token: bool = False,
        sincos_table: str = "1d",
        time_pooling: bool = False,
    ):
        super().__init__()
        if time_pooling and cls_token:
            raise ValueError("time_pooling reads the patch tokens per time slice; it does not combine with cls_token")
        self.num_classes = num_classes
        self.time_pooling = bool(time_pooling)
        self.encoder = VisionTransformerEncoder(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_frames=num_frames,
            tubelet_size=tubelet_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, norm_eps=norm_eps, final_norm=time_pooling or not use_mean_pooling,
            use_learnable_pos_emb=use_learnable_pos_emb, use_checkpoint=use_checkpoint, torch_compile=torch_compile,
            init_values=init_values, cls_token=cls_token, sincos_table=sincos_table,
        )
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if use_mean_pooling and not time_pooling else None
        self.num_slices = num_frames // tubelet_size
        head_in = embed_dim * self.num_slices if time_pooling else embed_dim
        self.feat_norm = FeatureStandardize(head_in) if time_pooling else None
        self.fc_dropout = nn.Dropout(fc_drop_rate)
        self.head = Linear(head_in, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            with torch.no_grad():
                self.head.weight.mul_(init_scale)
                self.head.bias.zero_()  # VideoMAE's and MAE's fine-tuning heads start with a zero bias

    @property
    def default_grid(self) -> Grid:
        return self.encoder.default_grid

    def grid(self, x: torch.Tensor) -> Grid:
        return token_grid(x.shape, self.encoder.tubelet_size, self.encoder.patch_size)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.use_checkpoint = enable

    def set_torch_compile(self, enable: bool = True) -> None:
        self.encoder.torch_compile = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, T, H, W]`` -> pooled feature ``[B, D]`` (any T/H/W divisible by the patch
        sizes; the position table is interpolated when the grid differs from the default), or
        with ``time_pooling`` the standardized ``[B, T'·D]`` (``T'`` fixed by ``num_frames``)."""
        if self.feat_norm is not None:
            return self.feat_norm(self.time_features(x))
        if self.encoder.cls_token is not None:
            tokens = self.encoder.forward_cls(x)  # [B, 1 + N, D], [CLS] first
            if self.fc_norm is not None:
                return self.fc_norm(tokens[:, 1:].mean(dim=1))
            return tokens[:, 0]
        tokens = self.encoder(x)
        if self.fc_norm is not None:
            return self.fc_norm(tokens.mean(dim=1))
        return tokens[:, 0]

    def time_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, T, H, W]`` -> ``[B, T'·D]``: the final-normed tokens averaged per time slice,
        slices concatenated in temporal order (`tools/extract_features.py --pool time`, flattened)."""
        t, h, w = self.grid(x)
        if t != self.num_slices:
            raise ValueError(f"time_pooling: the head reads {self.num_slices} time slices, this clip has {t} "
                             f"({x.shape[2]} frames)")
        tokens = self.encoder(x)  # [B, T'·H'·W', D], time-major
        return tokens.view(x.shape[0], t, h * w, tokens.shape[-1]).mean(dim=2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, T, H, W]`` -> logits ``[B, num_classes]``."""
        return self.head(self.fc_dropout(self.forward_features(x)))

    def no_weight_decay(self) -> set[str]:
        """Names to exclude from weight decay besides 1-D tensors (norms, biases, q/v biases)."""
        names = {"encoder.pos_embed"} if isinstance(self.encoder.pos_embed, nn.Parameter) else set()
        return names | ({"encoder.cls_token"} if self.encoder.cls_token is not None else set())
