"""Every registered mask strategy on the GPU: masks made there, the fixed counts, the CPU's masks
from the same CPU generator."""
import pytest
import torch

from tests.cuda.helpers import CUDA_ONLY
from videohpm.masking import available_mask_generators, make_mask_generator

pytestmark = CUDA_ONLY
GRID = (2, 8, 14, 14)  # 16×224² clips, tubelet 2×16×16


@pytest.mark.parametrize("name", available_mask_generators())
def test_every_strategy_on_cuda(name):
    g = make_mask_generator(name)
    scores = torch.rand(GRID[0], 8 * 14 * 14, generator=torch.Generator().manual_seed(3))
    kw = dict(scores=scores.cuda(), progress=0.7)
    m = g(GRID, device="cuda", generator=torch.Generator("cuda").manual_seed(0), **kw)
    assert m.device.type == "cuda" and m.dtype == torch.bool and m.shape == (GRID[0], 8 * 14 * 14)
    assert m.sum(1).tolist() == [g.num_masked_per_sample(GRID)] * GRID[0]
    on_gpu = g(GRID, device="cuda", generator=torch.Generator().manual_seed(5), **kw)
    on_cpu = g(GRID, device="cpu", generator=torch.Generator().manual_seed(5), scores=scores, progress=0.7)
    assert torch.equal(on_gpu.cpu(), on_cpu)
