import pytest
import torch

from videohpm.masking import MaskGenerator, available_mask_generators, make_mask_generator

from .helpers import IMAGE, VIDEO, assert_valid_mask, gen

ALL = ["random", "tube", "frame", "hpm", "importance"]


def test_registry_lists_every_strategy():
    assert set(ALL) <= set(available_mask_generators())


def test_unknown_name_raises_naming_it():
    with pytest.raises(ValueError, match="'blockwise'"):
        make_mask_generator("blockwise")


@pytest.mark.parametrize("name", ALL)
def test_unknown_option_raises_naming_it(name):
    with pytest.raises(TypeError, match="mask_ration"):
        make_mask_generator(name, mask_ration=0.9)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_mask_ratio_out_of_range(name, ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        make_mask_generator(name, mask_ratio=ratio)


@pytest.mark.parametrize("grid", [(2, 8, 14), (0, 8, 14, 14), (2, 8, 14, 2.5), "abcd"])
def test_bad_grid_raises(grid):
    g = make_mask_generator("random", mask_ratio=0.5)
    with pytest.raises(ValueError, match="grid"):
        g(grid)


@pytest.mark.parametrize("name", ALL)
def test_deterministic_with_generator_and_device(name):
    g = make_mask_generator(name, mask_ratio=0.75)
    assert isinstance(g, MaskGenerator)
    scores = torch.rand(VIDEO[0], 8 * 14 * 14, generator=gen(123))
    kw = dict(scores=scores, progress=0.7, device="cpu")
    a = g(VIDEO, generator=gen(0), **kw)
    b = g(VIDEO, generator=gen(0), **kw)
    c = g(VIDEO, generator=gen(1), **kw)
    assert a.device == torch.device("cpu")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert_valid_mask(a, VIDEO, g.num_masked_per_sample(VIDEO))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_runs_on_cuda(name):
    g = make_mask_generator(name, mask_ratio=0.9)
    scores = torch.rand(VIDEO[0], 8 * 14 * 14, device="cuda")
    m = g(VIDEO, scores=scores, progress=1.0, generator=torch.Generator("cuda").manual_seed(0))
    assert m.device.type == "cuda"
    assert_valid_mask(m.cpu(), VIDEO, g.num_masked_per_sample(VIDEO))
    # a CPU generator gives the same mask as on CPU (noise drawn on CPU, then copied)
    m_cpu_gen = g(VIDEO, scores=scores, progress=1.0, device="cuda", generator=gen(5))
    m_cpu = g(VIDEO, scores=scores.cpu(), progress=1.0, device="cpu", generator=gen(5))
    assert torch.equal(m_cpu_gen.cpu(), m_cpu)


@pytest.mark.parametrize("name", ALL)
def test_image_grid(name):
    g = make_mask_generator(name, mask_ratio=0.75)
    scores = torch.rand(IMAGE[0], 196, generator=gen(3))
    m = g(IMAGE, scores=scores, progress=0.5, generator=gen(0))
    assert_valid_mask(m, IMAGE, 147)
