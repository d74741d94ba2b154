"""Shared checks for mask tests."""
import torch

VIDEO = (2, 8, 14, 14)  # 16×224×224 clip, tubelet 2×16×16
IMAGE = (3, 1, 14, 14)  # 224×224 image, patch 16
ODD = (3, 3, 5, 7)  # odd token grid


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def per_slice_counts(mask: torch.Tensor, grid) -> torch.Tensor:
    """[B, T'] number of masked tokens in each time slice (time-major layout)."""
    B, T, H, W = grid
    return mask.view(B, T, H * W).sum(-1)


def assert_valid_mask(mask: torch.Tensor, grid, masked_per_sample: int) -> None:
    B, T, H, W = grid
    assert mask.dtype == torch.bool
    assert tuple(mask.shape) == (B, T * H * W)
    assert mask.sum(1).tolist() == [masked_per_sample] * B
    # the contract: visible tokens gather into a dense [B, N_vis, D] tensor
    x = torch.arange(B * T * H * W, dtype=torch.float32).view(B, T * H * W, 1)
    vis = x[~mask].view(B, -1, 1)
    assert vis.shape[1] == T * H * W - masked_per_sample
