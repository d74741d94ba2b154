"""No host-device sync in a training step.

On a GPU, the steps run under `torch.cuda.set_sync_debug_mode("error")`, which raises on any
synchronizing call (`.item()`, a data-dependent shape, a blocking copy to the host). On any
machine (CI), the same steps run under a dispatch mode that records the ATen ops which must read
a device value on the host: `nonzero`, boolean-mask indexing, `masked_select`, `unique`,
`_local_scalar_dense` (`.item()`), `repeat_interleave` without an output size.

The step is the recipe's forward under bf16 autocast, the backward, the EMA update and the
logger's on-device loss sums (plus the fused AdamW step on the GPU); one warm-up step runs first
(lazy initialisation may sync once per process).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.cuda.helpers import clip, small_model
from videohpm.engine.metrics import StepAverager
from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe
from videohpm.objectives.reconstruction import select_masked

RECIPES = {
    "mae": lambda dev: build_recipe("mae", small_model(dev), make_mask_generator("tube", mask_ratio=0.75)),
    "mae_decmask": lambda dev: build_recipe("mae", small_model(dev), make_mask_generator("tube", mask_ratio=0.75),
                                            decoder_mask=True, decoder_mask_ratio=0.5),
    "hpm": lambda dev: build_recipe("hpm", small_model(dev, loss_predictor=True),
                                    make_mask_generator("hpm", mask_ratio=0.75), teacher_precision="bf16"),
    "hpm_lowres_2": lambda dev: build_recipe("hpm", small_model(dev, loss_predictor=True),
                                             make_mask_generator("hpm", mask_ratio=0.75), teacher_mode="lowres:2"),
    "adamae": lambda dev: build_recipe("adamae", small_model(dev), make_mask_generator("adamae", mask_ratio=0.75)),
    "ccmim": lambda dev: build_recipe("ccmim", small_model(dev, cls_token=True),
                                      make_mask_generator("importance", mask_ratio=0.75, per_frame=True), proj_dim=8),
}
SYNCING_OPS = {"nonzero", "masked_select", "unique", "_unique2", "unique_dim", "unique_consecutive",
               "_local_scalar_dense", "masked_scatter", "repeat_interleave"}


def _step(recipe, avg, batch, opt=None):
    with torch.autocast(batch["video"].device.type, dtype=torch.bfloat16):
        out = recipe(batch, 0.5)
    out["loss"].backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    recipe.on_step_end()
    avg.add({k: v.detach() for k, v in out.items()})


class SyncingOps(TorchDispatchMode):
    """Records the ATen ops that read a device value on the host (module doc)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        indices = args[1] if name in ("index", "index_put", "index_put_") else ()  # x[mask]: a bool index
        bool_index = any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices)
        if name in SYNCING_OPS or bool_index:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_step_has_no_op_that_reads_the_device_on_the_host(name):
    recipe = RECIPES[name]("cpu").train()
    avg = StepAverager()
    batch = {"video": clip(device="cpu")}
    _step(recipe, avg, batch)  # warm-up
    with SyncingOps() as ops:
        _step(recipe, avg, batch)
    assert ops.seen == []


def test_select_masked_by_count_equals_boolean_indexing():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 4, generator=g)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    for b in range(3):
        mask[b, torch.randperm(10, generator=g)[:6]] = True
    assert torch.equal(select_masked(x, mask, count=6), x[mask].view(3, 6, 4))


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tools/device_check.sh)")
def test_step_has_no_host_device_sync(name):
    recipe = RECIPES[name]("cuda").cuda().train()
    opt = torch.optim.AdamW(recipe.parameters(), lr=1e-4, fused=True)
    avg = StepAverager()
    batch = {"video": clip()}
    _step(recipe, avg, batch, opt)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            _step(recipe, avg, batch, opt)
    finally:
        torch.cuda.set_sync_debug_mode("default")
