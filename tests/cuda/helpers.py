"""Shared marks and tiny models of the CUDA twins (skipped without a GPU; tools/device_check.sh runs them).

No `__init__.py` here: as a package this folder would be imported as `cuda` and hide NVIDIA's
`cuda` namespace package (`cuda.bindings`), which torch imports."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest
import torch

from videohpm.models.autoencoder import MaskedAutoencoder

#: every module here: `pytestmark = CUDA_ONLY`
CUDA_ONLY = [pytest.mark.cuda,
             pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tools/device_check.sh)")]
#: 8 frames of 64×64, tubelet 2×16×16 → 4×4×4 = 64 tokens; heads of 32 dims (SDPA's fused kernels)
SMALL = dict(img_size=64, patch_size=16, num_frames=8, tubelet_size=2, embed_dim=128, depth=2, num_heads=4,
             decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2)


def small_model(device: str = "cuda", seed: int = 0, **kw) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(**{**SMALL, **kw}).to(device)


def clip(batch: int = 4, device: str = "cuda", seed: int = 1) -> torch.Tensor:
    """[B, C, T, H, W] drawn on the CPU (the same values on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, SMALL["num_frames"], SMALL["img_size"], SMALL["img_size"], generator=g).to(device)


@contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 means fp32 inside: no TF32 in matmuls or convolutions (restored afterwards)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
