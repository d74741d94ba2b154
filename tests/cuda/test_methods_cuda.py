"""HPM on the GPU (HPM journal Eq. 1–8): the bf16 step, the EMA teacher kept in fp32 and run in bf16."""
import pytest
import torch

from tests.cuda.helpers import CUDA_ONLY, clip, small_model
from videohpm.masking import make_mask_generator
from videohpm.methods import build_recipe

pytestmark = CUDA_ONLY


def hpm(teacher_precision="bf16", **kw):
    model = small_model(loss_predictor=True)
    gen = make_mask_generator("hpm", mask_ratio=0.75, alpha_0=0.0, alpha_T=0.5)
    return build_recipe("hpm", model, gen, loss_pred="relative", teacher_precision=teacher_precision, **kw).cuda()


@pytest.mark.parametrize("mode", ["full", "lowres:2", "subset:0.25"])
def test_hpm_step_in_bf16_on_cuda(mode):
    recipe = hpm(teacher_mode=mode)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = recipe({"video": clip()}, progress=0.5)
    assert out["loss"].device.type == "cuda" and torch.isfinite(out["loss"])
    out["loss"].backward()
    no_grad = {"model.loss_predictor.head.bias"}  # Eq. 5 sees only differences of predicted losses
    missing = [n for n, p in recipe.named_parameters() if n not in no_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in recipe.teacher.parameters())


def test_ema_update_matches_eq1_on_cuda():
    recipe = hpm(momentum=0.9)
    with torch.no_grad():
        for p in recipe.model.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in recipe.teacher.state_dict().items()}
    student = {k: v.clone() for k, v in recipe.model.state_dict().items()}
    recipe.on_step_end()
    for k, v in recipe.teacher.state_dict().items():
        assert v.device.type == "cuda" and v.dtype == before[k].dtype
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * student[k])


def test_bf16_teacher_ranks_patches_as_the_fp32_teacher():
    """The teacher only ranks patches (§3.4): its bf16 scores keep the fp32 scores' order."""
    x = clip()
    scores = {}
    for precision in ("fp32", "bf16"):
        recipe = hpm(teacher_precision=precision)
        with torch.no_grad():  # a trained-looking teacher: not the student's copy at init
            for p in recipe.teacher.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).cuda())
        scores[precision] = recipe.teacher_scores(x)
    a, b = scores["fp32"], scores["bf16"]
    assert a.dtype == b.dtype == torch.float32
    rank = lambda s: s.argsort(1).argsort(1).float()
    corr = torch.nn.functional.cosine_similarity(rank(a) - rank(a).mean(1, keepdim=True),
                                                 rank(b) - rank(b).mean(1, keepdim=True), dim=1)
    assert corr.min().item() > 0.95, corr
