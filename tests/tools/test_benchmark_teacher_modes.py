"""tools/benchmark.py model: a variant per HPM teacher mode (`hpm:<mode>`), its ratio and breakdown."""
import pytest

from tools.lib.benchmarks import model as bench


def test_teacher_mode_variants_report_ratio_and_breakdown():
    res = bench.run(bench._parser().parse_args([
        "--model", "pretrain_videomae_tiny_patch16_224", "--num-frames", "4", "--img-size", "64", "--iters", "1",
        "--mask-ratio", "0.75", "--progress", "1.0",
        "--warmup", "0", "--threads", "1", "--variants", "plain,hpm,hpm:lowres:2,hpm_decmask:subset:0.5"]))
    assert res["teacher_modes"] == {"hpm_lowres_2": "lowres:2", "hpm_decmask_subset_0.5": "subset:0.5"}
    for name in res["teacher_modes"]:
        assert res[f"{name}_vs_plain_time"] == pytest.approx(res[f"{name}_step_s"] / res["plain_step_s"])
        assert set(res[f"{name}_breakdown_s"]) >= {"teacher_encoder", "teacher_loss_predictor", "student_backward"}
        assert res[f"{name}_breakdown_s"]["teacher_encoder"] > 0
    assert "hpm_lowres_2_vs_hpm_time" in res
    assert f"hpm:{bench.BEST_TEACHER_MODE}" in bench._parser().parse_args([]).variants.split(",")
    report = bench._report(res)
    assert "hpm_lowres_2 (teacher_mode=lowres:2) / plain" in report and "hpm_lowres_2 step breakdown" in report


def test_bad_teacher_mode_variant_names_the_key():
    with pytest.raises(SystemExit, match="method.kwargs.teacher_mode"):
        bench._mode_variant("hpm:lowres:0.5")


def test_step_flops_match_a_count_by_hand():
    """`--flops`: the plain MAE step's FLOPs equal a count from the layer shapes — every linear's
    weight × the tokens it sees, attention 2·n²·D per block and sample; backward twice the
    forward, except the patch embedding (no input gradient) — and HPM's ratio is reported."""
    args = bench._parser().parse_args([
        "--model", "pretrain_videomae_tiny_patch16_224", "--num-frames", "4", "--img-size", "64", "--iters", "1",
        "--mask-ratio", "0.75", "--warmup", "0", "--threads", "1", "--batch-size", "2", "--variants", "plain,hpm",
        "--flops"])
    res = bench.run(args)
    from videohpm.models import create_model

    m = create_model(args.model, img_size=64, num_frames=4)
    b, n = 2, 2 * 4 * 4  # tubelets 2 frames, 16 px: a 2 × 4 × 4 token grid
    vis = n - int(n * 0.75)

    def block_macs(blocks, tokens):
        per = sum(p.numel() for name, p in blocks.named_parameters() if p.dim() == 2)
        width = blocks[0].attn.proj.weight.shape[0]
        return b * tokens * per + len(blocks) * 2 * b * tokens ** 2 * width

    patch = b * vis * m.encoder.patch_embed.proj.weight[0].numel() * m.embed_dim
    fwd = (patch + block_macs(m.encoder.blocks, vis) + b * vis * m.decoder.embed.weight.numel()
           + block_macs(m.decoder.blocks, n) + b * (n - vis) * m.decoder.head.weight.numel())
    assert res["plain_step_gflop"] == pytest.approx(2 * (3 * fwd - patch) / 1e9, rel=1e-6)
    assert res["plain_gflop_per_s"] == pytest.approx(res["plain_step_gflop"] / res["plain_step_s"])
    assert res["hpm_vs_plain_flops"] == pytest.approx(res["hpm_step_gflop"] / res["plain_step_gflop"])
    assert res["hpm_vs_plain_flops"] > 1.5  # teacher over all tokens + the second decoder
    assert "HPM / plain in FLOPs per step" in bench._report(res)
