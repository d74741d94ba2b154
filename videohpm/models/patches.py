"""Pure tensor helpers on patches and masks (no module state; safe to import from anywhere).

Conventions (docs/ARCHITECTURE.md): clips ``x: [B, C, T, H, W]``; token grid ``(T/t, H/p, W/p)``
flattened time-major; patch vectors ordered ``(t p p c)`` like VideoMAE and HF VideoMAE; masks
``[B, N]`` bool with ``True`` = masked, the same count in every sample.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from videohpm.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "patchify",
    "unpatchify",
    "pixel_target",
    "mask_split",
]


def _grid(x: torch.Tensor, t: int, p: int) -> tuple[int, int, int]:
    if x.dim() != 5:
        raise ValueError(f"expected x: [B, C, T, H, W], got {tuple(x.shape)}")
    _, _, T, H, W = x.shape
    if T % t or H % p or W % p:
        raise ValueError(f"(T, H, W) = ({T}, {H}, {W}) not divisible by (t, p, p) = ({t}, {p}, {p})")
    return T // t, H // p, W // p


def patchify(x: torch.Tensor, t: int, p: int) -> torch.Tensor:
    """Cut a clip into tubelet patch vectors.

    Args:
        x: ``[B, C, T, H, W]``.
        t, p: tubelet (temporal) and spatial patch size.
    Returns:
        ``[B, N, t·p·p·C]`` with ``N = (T/t)(H/p)(W/p)`` time-major and each vector ordered
        ``(t p p c)`` (channel fastest), as VideoMAE's ``b c (t p0) (h p1) (w p2) -> b (t h w)
        (p0 p1 p2 c)``.
    """
    gt, gh, gw = _grid(x, t, p)
    b, c = x.shape[:2]
    x = x.reshape(b, c, gt, t, gh, p, gw, p).permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, gt * gh * gw, t * p * p * c)


def unpatchify(patches: torch.Tensor, grid: Sequence[int], t: int, p: int, C: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, N, t·p·p·C]`` -> ``[B, C, T'·t, H'·p, W'·p]``."""
    gt, gh, gw = (int(g) for g in grid)
    b, n, d = patches.shape
    if n != gt * gh * gw or d != t * p * p * C:
        raise ValueError(
            f"patches {tuple(patches.shape)} do not match grid {tuple(grid)} with t={t}, p={p}, C={C}"
        )
    x = patches.reshape(b, gt, gh, gw, t, p, p, C).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, C, gt * t, gh * p, gw * p)


def pixel_target(
    x: torch.Tensor,
    t: int,
    p: int,
    normalize: bool = True,
    mean: Optional[Sequence[float]] = IMAGENET_MEAN,
    std: Optional[Sequence[float]] = IMAGENET_STD,
    eps: float = 1e-6,
    per_patch: Optional[bool] = None,
) -> torch.Tensor:
    """The pixel reconstruction target ``T(x)`` (HPM Eq. 3) of VideoMAE (video) and MAE (images).

    The model input is normalized with ``mean``/``std`` (ImageNet by default); VideoMAE first
    undoes that normalization so the target lives in ``[0, 1]`` pixel space, then, with
    ``normalize``:

    - video (VideoMAE): every patch is standardized *per channel* over its ``t·p·p`` voxels,
      ``(v - mean) / (sqrt(var_unbiased) + eps)``;
    - images (``T = 1`` with ``t = 1``; the formula of MAE's ``forward_loss``): every patch is
      standardized *jointly* over all its ``p·p·C`` values, ``(v - mean) / sqrt(var_unbiased + eps)``.

    ``mean``/``std`` = None skips the un-normalization: inputs already in pixel space, non-RGB
    inputs, or MAE's and the official HPM image code's own target, which patchifies the
    *normalised* input (``MaskedAutoencoder(target_unnormalize=False)``; with ``normalize`` the
    two differ, since the per-patch standardisation is not invariant to a per-channel affine map).

    Args:
        x: ``[B, C, T, H, W]`` model input.
        per_patch: force the joint (MAE) standardization (True) or the per-channel (VideoMAE)
            one (False); None picks by the input, joint exactly when ``T = t = 1``.
    Returns:
        ``[B, N, t·p·p·C]`` float32 (computed without grad), ordered like :func:`patchify`.
    """
    with torch.no_grad():
        x = x.float()
        c = x.shape[1]
        if (mean is None) != (std is None):
            raise ValueError("pixel_target: give both mean and std, or neither")
        if mean is not None:
            if len(mean) != c or len(std) != c:
                raise ValueError(f"pixel_target: mean/std have {len(mean)}/{len(std)} entries for {c} channels")
            m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1, 1)
            s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, c, 1, 1, 1)
            x = x * s + m
        patches = patchify(x, t, p)  # [B, N, t·p·p·C]
        if not normalize:
            return patches
        b, n, _ = patches.shape
        if per_patch is None:
            per_patch = t == 1 and x.shape[2] == 1
        if per_patch:
            mu = patches.mean(dim=-1, keepdim=True)
            var = patches.var(dim=-1, unbiased=True, keepdim=True)
            return (patches - mu) / (var + eps).sqrt()
        v = patches.view(b, n, t * p * p, c)
        mu = v.mean(dim=2, keepdim=True)
        sd = v.var(dim=2, unbiased=True, keepdim=True).sqrt()
        return ((v - mu) / (sd + eps)).view(b, n, t * p * p * c)


def mask_split(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a mask into ascending visible / masked token indices.

    Args:
        mask: ``[B, N]`` bool, ``True`` = masked; every row must mask the same number of tokens.
    Returns:
        ``(ids_keep [B, N_vis], ids_masked [B, N_mask])``, each ascending — so gathering with them
        equals ``x[~mask].view(B, -1, D)`` / ``x[mask].view(B, -1, D)`` (VideoMAE's order).

    Costs one device→host sync (the per-row counts decide the output shapes).
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool [B, N] tensor, got {mask.dtype} {tuple(mask.shape)}")
    counts = mask.sum(dim=1).tolist()
    if len(set(counts)) > 1:
        raise ValueError(f"every sample must mask the same number of tokens, got per-sample counts {counts}")
    n_mask = counts[0] if counts else 0
    n = mask.shape[1]
    # Stable sort of 0 (visible) before 1 (masked) keeps ascending index order within each part.
    ids = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    return ids[:, : n - n_mask], ids[:, n - n_mask:]
