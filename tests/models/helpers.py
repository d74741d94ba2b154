"""Tiny model configurations and inputs shared by the model tests (32 px, 4 frames)."""
from __future__ import annotations

import torch

TINY_VIDEO = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
                  num_heads=2, decoder_embed_dim=16, decoder_depth=2, decoder_num_heads=2)
TINY_IMAGE = dict(TINY_VIDEO, num_frames=1, tubelet_size=1)


def clip(b: int = 2, t: int = 4, hw: int = 32, seed: int = 0) -> torch.Tensor:
    """``[B, 3, T, H, W]`` standard-normal clip (as an ImageNet-normalized input would be)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, t, hw, hw, generator=g)


def random_mask(b: int, n: int, n_masked: int, seed: int = 0) -> torch.Tensor:
    """``[B, N]`` bool with exactly ``n_masked`` True per row."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(b, n, generator=g)
    ids = scores.argsort(dim=1)[:, :n_masked]
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask.scatter_(1, ids, True)
    return mask
