"""AdaMAE: masked video pre-training with a learned, adaptive token sampler.

AdaMAE (Bandara et al., *AdaMAE: Adaptive Masking for Efficient Spatiotemporal Learning with Masked
Autoencoders*, CVPR 2023, arXiv 2211.09120, §3) — HPM's closest peer: both learn *where* to mask
from the reconstruction error. One step:

1. the token sampling network (:class:`TokenSampler`) reads every token's patch embedding and gives
   a categorical ``p = Softmax(Linear(MHA(X)))`` over the N tokens;
2. ``N_v = int(N·(1−γ))`` visible tokens are drawn from ``p`` without replacement (the ``adamae``
   mask strategy), the rest are masked (γ = 0.95 in the paper);
3. encoder + decoder reconstruct the masked tokens: ``L_R`` = mean per-token MSE (Eq. 3 of the HPM
   journal, the same targets as MAE / HPM);
4. the sampler is trained by the REINFORCE-style sampling objective (:func:`sampling_loss`),
   ``L_S = −mean_{b, j∈M_b}[log p_bj · sg(L_R,bj)]``, and ``L = L_R + λ·L_S`` with λ = 1e-4 — the
   official code's ``engine_for_pretraining.py`` (``l_s = −mean(mask_log_probs · loss.detach())``
   per sample, averaged over the batch, ``loss = m_l_r + 1e-4·m_l_s``).

Gradient paths: the draw is discrete, so ``L_R`` gives the sampler no gradient; the sampler reads
*detached* patch embeddings, so ``L_S`` gives the encoder / decoder none (the official code lets the
1e-4-weighted ``L_S`` reach the shared patch embedding; here each network has exactly one loss).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from videohpm.masking.adamae import AdaMAEMaskGenerator
from videohpm.methods.base import EmaTeacher, Recipe, clip_of, num_visible
from videohpm.methods.target_mixin import TargetMixin, take_tokens
from videohpm.models.vit import Block, Linear, interpolate_pos_embed
from videohpm.objectives.reconstruction import select_masked

__all__ = ["AdaMAE", "TokenSampler", "sampling_loss"]


class TokenSampler(nn.Module):
    """AdaMAE's token sampling network: ``X [B, N, D] → p [B, N]`` (rows sum to 1).

    As the official code's ``get_token_probs``: a learned position table (zeros at start) is added
    to the tokens, then ``depth`` transformer blocks (MHA + MLP; 1 block, 8 heads, MLP ratio 4, no
    qkv bias, dropout 0.1 by default), a ``Linear(D, 1)`` and a softmax over the N tokens (in fp32).
    Width D is the encoder's, so the sampler scales with the model. Linear weights are
    Xavier-uniform, biases zero (the official initialisation). ``forward`` gives the logits (called
    as a module, so that ZeRO-3 gathers the position table), :meth:`probs` the distribution.
    """

    def __init__(self, dim: int, grid, depth: int = 1, num_heads: int = 8, mlp_ratio: float = 4.0,
                 drop: float = 0.1) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"method.sampler_depth must be ≥ 1, got {depth}")
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"method.sampler_heads={num_heads} must divide the encoder width {dim}")
        self.default_grid = tuple(int(g) for g in grid)
        n = 1
        for g in self.default_grid:
            n *= g
        self.pos_embed = nn.Parameter(torch.zeros(1, n, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=False, drop=drop)
                                    for _ in range(depth))
        self.head = Linear(dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, grid) -> torch.Tensor:
        """Unnormalised log-probabilities ``[B, N]`` (fp32) of ``tokens: [B, N, D]`` on ``grid``."""
        x = tokens + interpolate_pos_embed(self.pos_embed, self.default_grid, tuple(grid)).to(tokens.dtype)
        for blk in self.blocks:
            x = blk(x)
        return torch.nan_to_num(self.head(x)[..., 0].float())

    def probs(self, tokens: torch.Tensor, grid) -> torch.Tensor:
        """``p = Softmax(Linear(MHA(X)))``: ``[B, N]`` fp32."""
        return self(tokens, grid).softmax(dim=-1)


def sampling_loss(log_probs: torch.Tensor, mask: torch.Tensor, rec_per_token: torch.Tensor) -> torch.Tensor:
    """AdaMAE's sampling objective ``L_S = −mean_{b, j∈M_b}[log p_bj · sg(L_R,bj)]`` (scalar).

    Args:
        log_probs: ``[B, N]`` ``log p`` of the sampler's categorical (with gradient).
        mask: bool ``[B, N]``, True = masked (the same count M in every sample).
        rec_per_token: ``[B, M]`` reconstruction error of the masked tokens in ascending token
            order; detached here (the error is the reward, not a path for gradients).

    Minimising it raises ``log p`` where the error is high: masked tokens that were hard to
    reconstruct become more likely to be drawn *visible* next time, so the mask spends its
    visible budget on high-information regions (the paper's "expected reconstruction error"
    maximised over the policy ``p``). Every sample masks M tokens, so the official per-sample
    mean followed by the batch mean is this one mean over ``[B, M]``.
    """
    if log_probs.shape != mask.shape or rec_per_token.dim() != 2 or rec_per_token.shape[0] != mask.shape[0]:
        raise ValueError(f"sampling_loss: log_probs {tuple(log_probs.shape)} and mask {tuple(mask.shape)} must "
                         f"be [B, N] and rec_per_token [B, M], got {tuple(rec_per_token.shape)}")
    lp = select_masked(log_probs, mask, key="log_probs", count=rec_per_token.shape[1])  # [B, M], no sync
    return -(lp * rec_per_token.detach().to(lp.dtype)).mean()


class AdaMAE(TargetMixin, Recipe):
    """AdaMAE recipe: ``L = L_R + λ·L_S`` (module doc) with the ``adamae`` mask strategy.

    Args:
        model: a `MaskedAutoencoder` (no loss predictor needed).
        mask_generator: ``adamae`` (:class:`~videohpm.masking.adamae.AdaMAEMaskGenerator`).
        sampling_weight: λ (1e-4, the official code). With Adam the sampler's update size barely
            depends on λ (its parameters get gradient from ``L_S`` only), except through Adam's ε.
        sampler_depth / sampler_heads / sampler_mlp_ratio / sampler_drop: :class:`TokenSampler`.
        target / feature_teacher / momentum: as :class:`~videohpm.methods.mae.MAE` (decoder masking
            is not offered: the reward needs the error of every masked token).
    """

    learned_sampler = True

    def __init__(self, model: nn.Module, mask_generator: Any, *, sampling_weight: float = 1e-4,
                 sampler_depth: int = 1, sampler_heads: int = 8, sampler_mlp_ratio: float = 4.0,
                 sampler_drop: float = 0.1, target: str = "pixel",
                 feature_teacher: Optional[Mapping[str, Any]] = None, momentum: float = 0.999) -> None:
        super().__init__()
        if not isinstance(mask_generator, AdaMAEMaskGenerator):
            raise ValueError(f"method=adamae needs mask.name=adamae (visible tokens drawn from the sampler), "
                             f"got {type(mask_generator).__name__}")
        if not (sampling_weight >= 0.0 and sampling_weight < float("inf")):
            raise ValueError(f"method.sampling_weight must be a finite number ≥ 0, got {sampling_weight!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"method.momentum must be in [0, 1], got {momentum}")
        self.model = model
        self.mask_generator = mask_generator
        self.sampling_weight = float(sampling_weight)
        self.momentum = momentum
        self._setup_targets(target, feature_teacher, False, 0.5)
        self.sampler = TokenSampler(model.encoder.embed_dim, model.default_grid, sampler_depth, sampler_heads,
                                    sampler_mlp_ratio, sampler_drop)
        if target == "ema_features":
            self.ema = EmaTeacher(model)

    def token_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The sampler's logits ``[B, N]`` of clip ``x``, from its detached patch embeddings."""
        with torch.no_grad():
            tokens = self.model.encoder.patch_embed(x)  # [B, N, D], no pos (the sampler has its own)
        return self.sampler(tokens, self.model.grid(x))

    def token_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``p: [B, N]`` of clip ``x`` (the probability map of Fig. 2-style figures)."""
        return self.token_logits(x).softmax(dim=-1)

    def forward(self, batch: Any, progress: float = 0.0) -> Dict[str, torch.Tensor]:
        """One AdaMAE step on ``batch["video"]: [B, C, T, H, W]``."""
        x = clip_of(batch)
        grid = (x.shape[0], *self.model.grid(x))
        log_p = self.token_logits(x).log_softmax(dim=-1)  # [B, N]
        mask = self.mask_generator(grid, scores=log_p.exp(), progress=progress, device=x.device)
        ema = None
        if self.ema is not None:
            with torch.inference_mode():
                ema = self.ema.follow(x.device).encode(x.float())
            ema = ema.clone()
        latent = self.model.encode(x, mask, num_visible=num_visible(self.mask_generator, grid))
        pred = self.model.decode(latent, mask, head="pixel", grid=grid[1:])  # [B, M, P]
        with torch.no_grad():
            target = take_tokens(self._full_target(x, ema), mask, None, count=pred.shape[1])
        rec = self._token_loss(pred, target)  # [B, M]
        loss_rec = rec.mean()
        loss_s = sampling_loss(log_p, mask, rec)
        with torch.no_grad():
            entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()
        return {"loss": loss_rec + self.sampling_weight * loss_s, "loss_rec": loss_rec.detach(),
                "loss_sampling": loss_s.detach(), "sampler_entropy": entropy}

    def on_step_end(self) -> None:
        """EMA update of the feature teacher (Eq. 1) with target=ema_features; else nothing."""
        if self.ema is not None:
            self.ema.update(self.model, self.momentum)
