"""AdaMAE recipe (AdaMAE, CVPR 2023, §3; official engine_for_pretraining.py): the sampling objective
against a loop written from its formula, the gradient paths (the sampler learns only from L_S, the
autoencoder only from L_R), and a short training run that moves p toward the tokens that are hard
to reconstruct."""
import math
from pathlib import Path

import pytest
import torch

from videohpm.masking import make_mask_generator
from videohpm.methods import AdaMAE, build_recipe
from videohpm.methods.adamae import TokenSampler, sampling_loss
from videohpm.models import create_model

TINY = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16,
            decoder_depth=1, decoder_num_heads=2, norm_pix_loss=False)


def _recipe(seed=0, **kw):
    torch.manual_seed(seed)
    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY)
    return build_recipe("adamae", model, make_mask_generator("adamae", mask_ratio=0.75), **kw)


def _loop_loss_and_grad(logits, mask, rec):
    """L_S = mean_b[ −mean_{j∈M_b} log p_bj · e_bj ] with p = softmax(z) (a Categorical's log_prob per
    sample, as the official loop), and its gradient ∂L_S/∂z_bk = −1/(B·M) Σ_{j∈M_b} e_bj (δ_jk − p_bk)."""
    B, N = logits.shape
    total, grad = 0.0, torch.zeros(B, N, dtype=torch.float64)
    for b in range(B):
        z = [float(v) for v in logits[b]]
        zmax = max(z)
        norm = sum(math.exp(v - zmax) for v in z)
        p = [math.exp(v - zmax) / norm for v in z]
        masked = [j for j in range(N) if mask[b, j]]
        M = len(masked)
        terms = [math.log(p[j]) * float(rec[b, i]) for i, j in enumerate(masked)]
        total += -sum(terms) / M
        for k in range(N):
            grad[b, k] = -sum(float(rec[b, i]) * ((j == k) - p[k]) for i, j in enumerate(masked)) / (B * M)
    return total / B, grad


def test_sampling_objective_value_and_gradient_against_the_formula():
    g = torch.Generator().manual_seed(0)
    B, N, M = 3, 10, 7
    logits = torch.randn(B, N, generator=g, dtype=torch.float64).requires_grad_(True)
    mask = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        mask[b, torch.randperm(N, generator=g)[:M]] = True
    rec = torch.rand(B, M, generator=g, dtype=torch.float64).requires_grad_(True)
    loss = sampling_loss(logits.log_softmax(-1), mask, rec)
    ref, ref_grad = _loop_loss_and_grad(logits.detach(), mask, rec.detach())
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logits.grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert rec.grad is None  # the reconstruction error is the reward: never a gradient path


def test_total_loss_is_rec_plus_weighted_sampling_and_counts():
    r = _recipe(sampling_weight=0.5)
    x = torch.randn(2, 3, 4, 32, 32)
    out = r({"video": x})
    assert set(out) == {"loss", "loss_rec", "loss_sampling", "sampler_entropy"}
    assert out["loss"].item() == pytest.approx(out["loss_rec"].item() + 0.5 * out["loss_sampling"].item(), rel=1e-6)
    assert 0 < out["sampler_entropy"].item() <= math.log(32) + 1e-5
    p = r.token_probs(x)
    assert p.shape == (2, 32) and torch.allclose(p.sum(-1), torch.ones(2))


def _grads(r, x, seed):
    torch.manual_seed(seed)
    r.zero_grad(set_to_none=True)
    r({"video": x})["loss"].backward()
    return {n: (torch.zeros_like(p) if p.grad is None else p.grad.clone()) for n, p in r.named_parameters()}


def test_sampler_learns_only_from_the_sampling_objective():
    """L_R gives the sampler no gradient (the draw is discrete); L_S gives the encoder / decoder none
    (the sampler reads detached patch embeddings): with the same draws, the autoencoder's gradient is
    the same at λ = 0 and λ = 1, and the sampler's is zero at λ = 0, non-zero at λ = 1."""
    x = torch.randn(2, 3, 4, 32, 32)
    r = _recipe(sampling_weight=0.0)
    g0 = _grads(r, x, seed=5)
    r.sampling_weight = 1.0
    g1 = _grads(r, x, seed=5)
    sampler = [n for n in g0 if n.startswith("sampler.")]
    model = [n for n in g0 if n.startswith("model.")]
    assert sampler and model and len(sampler) + len(model) == len(g0)
    assert all(torch.count_nonzero(g0[n]) == 0 for n in sampler)
    assert all(torch.count_nonzero(g1[n]) > 0 for n in sampler)
    for n in model:
        assert torch.equal(g0[n], g1[n]), n
    assert any(torch.count_nonzero(g0[n]) > 0 for n in model)


def _moving_clip(b, g):
    """Clips whose top-left 2×2 patches (both time slices: 8 of 32 tokens) hold fresh noise every step
    (unpredictable: high error) on a constant grey background (easy)."""
    x = torch.zeros(b, 3, 4, 32, 32)
    x[:, :, :, :16, :16] = 2.0 * torch.randn(b, 3, 4, 16, 16, generator=g)
    region = torch.zeros(2, 4, 4, dtype=torch.bool)
    region[:, :2, :2] = True
    return x, region.flatten()


def test_short_training_moves_p_toward_the_high_error_region():
    r = _recipe(seed=1)  # the paper's λ = 1e-4: Adam normalises the sampler's small gradient
    opt = torch.optim.AdamW(r.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    x0, region = _moving_clip(8, g)
    r.eval()
    start = r.token_probs(x0)[:, region].sum(-1).mean().item()
    r.train()
    for _ in range(40):
        x, _ = _moving_clip(8, g)
        opt.zero_grad()
        r({"video": x})["loss"].backward()
        opt.step()
    r.eval()
    end = r.token_probs(x0)[:, region].sum(-1).mean().item()
    assert end > start + 0.15 and end > 0.5, (start, end)  # 8 of 32 tokens: a uniform p gives 0.25


def test_bad_options_raise_before_work():
    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY)
    with pytest.raises(ValueError, match="mask.name=adamae"):
        build_recipe("adamae", model, make_mask_generator("tube", mask_ratio=0.75))
    adamae = make_mask_generator("adamae", mask_ratio=0.75)
    with pytest.raises(ValueError, match="sampler_heads"):
        build_recipe("adamae", model, adamae, sampler_heads=5)
    with pytest.raises(ValueError, match="sampling_weight"):
        build_recipe("adamae", model, adamae, sampling_weight=-1.0)
    with pytest.raises(TypeError, match="decoder_mask"):
        build_recipe("adamae", model, adamae, decoder_mask=True)
    with pytest.raises(ValueError, match="sampler_depth"):
        TokenSampler(32, (2, 4, 4), depth=0)
    assert isinstance(build_recipe("adamae", model, adamae), AdaMAE)


def test_fig2_row_shows_the_sampler_probabilities_and_its_mask():
    from videohpm.evaluation.visualize import compute_visualization, panel_images

    r = _recipe()
    r.eval()
    x = torch.randn(1, 3, 4, 32, 32)
    vis = compute_visualization(r.model, x, r.mask_generator, num_loss_masks=2, sampler=r.token_probs)
    p = r.token_probs(x)[0]
    torch.testing.assert_close(torch.from_numpy(vis.token_sampling_prob), p)
    assert vis.sampling_prob.shape == (4, 32, 32) and vis.token_mask.sum() == 24  # 32 tokens, 8 visible
    assert list(panel_images(vis)) == ["input", "loss", "sampling probability", "mask", "reconstruction"]
    # the mask is the adamae draw from p with the figure's seed
    again = compute_visualization(r.model, x, r.mask_generator, num_loss_masks=2, sampler=r.token_probs)
    assert (again.token_mask == vis.token_mask).all()


def test_visualize_reads_the_sampler_from_a_recipe_checkpoint(tmp_path):
    """`tools/visualize.py` for method=adamae: the sampler comes from a checkpoint of the whole recipe
    (the run's DeepSpeed checkpoints); a model-only `model_final.pth` is refused before any clip is read."""
    from videohpm.config import load_config
    from videohpm.data.demo import make_demo_data
    from videohpm.tasks.visualize import run_visualize

    cfg = load_config("configs/test/pretrain_adamae_tiny.yaml", [])
    torch.manual_seed(0)
    recipe = build_recipe("adamae", create_model(cfg.model.name, **cfg.model.kwargs),
                          make_mask_generator("adamae", mask_ratio=0.75), sampler_heads=8)
    model_only = tmp_path / "model_final.pth"
    torch.save({"model": recipe.model.state_dict(), "weights": "model"}, model_only)
    with pytest.raises(ValueError, match="no token sampler weights"):
        run_visualize(cfg, str(model_only), str(tmp_path / "never_read.webm"), str(tmp_path / "v0"))
    ckpt = tmp_path / "recipe.pth"
    torch.save({"model": recipe.state_dict()}, ckpt)
    make_demo_data(tmp_path / "demo", seed=0, train_per_class=1, val_per_class=0, num_frames=8, size=32,
                   formats=("ssv2",), images=False)
    video = next((tmp_path / "demo").rglob("*.webm"))
    files = run_visualize(cfg, str(ckpt), str(video), str(tmp_path / "v1"), num_loss_masks=1)
    assert sorted(files) == ["animation", "png"] and all(Path(p).is_file() for p in files.values())
