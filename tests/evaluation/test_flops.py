"""fvcore's count of a 1-block ViT against the hand formula (multiply-adds, fvcore's convention)."""
import pytest

from .helpers import tiny_classifier
from videohpm.evaluation.flops import CostSummary, count_flops, count_parameters, format_table, format_views


def hand_flops_one_block_vit(C, T, H, W, t, p, D, K, mlp_ratio=4):
    """Multiply-adds of: tubelet embedding, one pre-norm block, mean pool + fc_norm, head.

    fvcore counts each multiply-add of conv/linear/matmul once, a LayerNorm as 5 ops per element
    (with affine), and ignores element-wise ops (add, GELU, softmax, mean)."""
    N = (T // t) * (H // p) * (W // p)
    embed = N * D * (C * t * p * p)
    qkv = N * D * 3 * D
    attn = N * N * D + N * N * D  # q·kᵀ and attn·v over all heads
    proj = N * D * D
    mlp = 2 * N * D * (mlp_ratio * D)
    norms = 2 * 5 * N * D + 5 * D  # norm1, norm2 on tokens; fc_norm on the pooled feature
    head = D * K
    return embed + qkv + attn + proj + mlp + norms + head


def test_fvcore_count_matches_hand_formula():
    model = tiny_classifier(num_classes=5, depth=1)  # D=32, 2 heads, 4×32×32 clip, tubelet 2, patch 16
    got = count_flops(model, (1, 3, 4, 32, 32))
    assert got == hand_flops_one_block_vit(3, 4, 32, 32, 2, 16, 32, 5)
    # attention is counted (the fused SDPA op has a handle): it grows as N² with more frames
    got8 = count_flops(model, (1, 3, 8, 32, 32))
    assert got8 == hand_flops_one_block_vit(3, 8, 32, 32, 2, 16, 32, 5)


def test_parameters_and_table_cell():
    model = tiny_classifier(num_classes=5, depth=1)
    D, K, P = 32, 5, 3 * 2 * 16 * 16
    block = (D * 3 * D + 2 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D) + 4 * D  # qkv+q/v bias, proj, mlp, 2 LN
    expected = (P * D + D) + block + 2 * D + (D * K + K)  # embed, block, fc_norm, head
    assert count_parameters(model) == expected
    assert format_views(180.49, 2, 3) == "180×2×3"
    row = CostSummary("ViT-B", 16, 180.49, 5, 3, 87.0, 81.6, 95.1)
    assert row.gflops_cell == "180×5×3" and row.total_gflops == pytest.approx(180.49 * 15)
    assert "| ViT-B | 16 | 180×5×3 | 87.0 | 81.60 | 95.10 |" in format_table([row])


@pytest.mark.slow
def test_vit_base_matches_paper_180_gflops():
    """HPM journal version, Table 13: ViT-B, 16×224², 180 GFLOPs per view, 87 M parameters."""
    from videohpm.models import create_model

    model = create_model("vit_base_patch16_224", num_classes=174)
    assert count_flops(model, (1, 3, 16, 224, 224)) / 1e9 == pytest.approx(180, abs=1)
    assert count_parameters(model) / 1e6 == pytest.approx(87, abs=1)
