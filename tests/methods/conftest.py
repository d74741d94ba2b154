import pytest
import torch

from videohpm.models.autoencoder import MaskedAutoencoder

TINY = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
            num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


@pytest.fixture
def tiny_model():
    def make(**kw):
        torch.manual_seed(0)
        return MaskedAutoencoder(**{**TINY, **kw})
    return make


@pytest.fixture
def clip():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 4, 32, 32, generator=g)  # [B, C, T, H, W]; grid 2×4×4 = 32 tokens
