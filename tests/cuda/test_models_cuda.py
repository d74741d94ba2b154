"""The model on CUDA: the same numbers as on the CPU in fp32, and bf16 autocast within its tolerance."""
import torch

from tests.cuda.helpers import CUDA_ONLY, clip, exact_fp32, small_model
from videohpm.masking import make_mask_generator

pytestmark = CUDA_ONLY


def _loss_and_grads(model, x, mask, bf16: bool):
    """Reconstruction MSE on the masked patches (VideoMAE's loss) and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        pred = model(x, mask)["pred"]
    target = model.target(x)[mask].view(pred.shape)
    loss = ((pred.float() - target) ** 2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}


def _mask(x, model):
    grid = (x.shape[0], *model.grid(x))
    return make_mask_generator("tube", mask_ratio=0.75)(grid, device=x.device, generator=torch.Generator().manual_seed(0))


def test_fp32_on_cuda_matches_the_cpu():
    cpu, gpu = small_model("cpu"), small_model("cuda")
    x = clip(device="cpu")
    loss_c, grads_c = _loss_and_grads(cpu, x, _mask(x, cpu), bf16=False)
    with exact_fp32():
        loss_g, grads_g = _loss_and_grads(gpu, x.cuda(), _mask(x, cpu).cuda(), bf16=False)
    torch.testing.assert_close(loss_g.cpu(), loss_c, rtol=1e-4, atol=1e-6)
    for name in grads_c:
        torch.testing.assert_close(grads_g[name].cpu(), grads_c[name], rtol=1e-3, atol=1e-5, msg=name)


def test_bf16_autocast_forward_backward_within_tolerance_of_fp32():
    model = small_model()
    x = clip()
    mask = _mask(x, model)
    with exact_fp32():
        loss32, grads32 = _loss_and_grads(model, x, mask, bf16=False)
    loss16, grads16 = _loss_and_grads(model, x, mask, bf16=True)
    assert abs(loss16.item() - loss32.item()) <= 2e-2 * loss32.item()
    for name, g32 in grads32.items():
        g16 = grads16[name]
        assert torch.isfinite(g16).all(), name
        if g32.norm() > 1e-6:
            cos = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0).item()
            assert cos > 0.98, f"{name}: cosine {cos:.4f} between the bf16 and fp32 gradients"
