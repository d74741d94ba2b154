"""Multi-view testing on the GPU (pinned batches, bf16 autocast) gives the CPU's predictions."""
import numpy as np
import torch

from tests.cuda.helpers import CUDA_ONLY, exact_fp32
from tests.evaluation.helpers import SyntheticViews, tiny_classifier
from videohpm.evaluation.multiview import evaluate_multiview

pytestmark = CUDA_ONLY


def test_multiview_on_cuda_matches_the_cpu():
    ds = SyntheticViews(6, views=4, num_classes=5, broken=[2])
    kw = dict(batch_size=2, num_crops=2, keep_view_logits=True)
    cpu_preds, cpu_metrics = evaluate_multiview(tiny_classifier(), ds, **kw)
    with exact_fp32():
        gpu_preds, gpu_metrics = evaluate_multiview(tiny_classifier().cuda(), ds, device=torch.device("cuda"), **kw)
    assert gpu_preds.video_ids == cpu_preds.video_ids
    np.testing.assert_allclose(gpu_preds.probs, cpu_preds.probs, atol=1e-4)
    assert gpu_metrics["num_broken"] == cpu_metrics["num_broken"] == 1
    assert gpu_metrics["top1"] == cpu_metrics["top1"]
    bf16_preds, _ = evaluate_multiview(tiny_classifier().cuda(), ds, device=torch.device("cuda"),
                                       amp_dtype=torch.bfloat16, **kw)
    np.testing.assert_allclose(bf16_preds.probs, cpu_preds.probs, atol=2e-2)
