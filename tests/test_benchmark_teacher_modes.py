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
