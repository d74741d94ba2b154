"""tools/benchmark.py model: the AdaMAE variant (learned token sampler) beside plain MAE and HPM."""
import pytest

from tools.lib.benchmarks import model as bench


def test_adamae_variant_reports_its_ratios_and_the_sampler_share():
    res = bench.run(bench._parser().parse_args([
        "--model", "pretrain_videomae_tiny_patch16_224", "--num-frames", "4", "--img-size", "64", "--iters", "1",
        "--mask-ratio", "0.75", "--warmup", "0", "--threads", "1", "--variants", "plain,hpm,hpm:lowres:2,adamae"]))
    for base in ("plain", "hpm", "hpm_lowres_2"):
        assert res[f"adamae_vs_{base}_time"] == pytest.approx(res["adamae_step_s"] / res[f"{base}_step_s"])
    parts = res["adamae_breakdown_s"]
    assert parts["sampler"] > 0 and parts["backward"] > 0 and set(parts) >= {"masking", "optimizer"}
    report = bench._report(res)
    assert "AdaMAE / plain:" in report and "adamae step breakdown" in report
