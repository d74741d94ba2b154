"""The engine on the GPU: the pinned loader, and a ZeRO run killed and resumed (checkpoints on CUDA)."""
import torch

from tests.cuda.helpers import CUDA_ONLY
from tests.engine.conftest import PRETRAIN_CFG, data_overrides, demo, read_log, run_train, step_losses  # noqa: F401
from videohpm.engine.data import build_loader

pytestmark = CUDA_ONLY


class Clips(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return {"video": torch.full((3, 4, 8, 8), float(i)), "index": i}


def test_pin_memory_loader_feeds_the_gpu():
    loader = build_loader(Clips(), batch_size=2, sampler=None, num_workers=2, drop_last=False, pin_memory=True)
    seen = []
    for batch in loader:
        assert batch["video"].is_pinned()
        video = batch["video"].to("cuda", non_blocking=True)
        seen += video[:, 0, 0, 0, 0].cpu().tolist()
    assert seen == [float(i) for i in range(6)]


def test_zero2_checkpoint_resume_on_cuda_continues_the_run(demo, tmp_path):
    common = ["--config", str(PRETRAIN_CFG), *data_overrides(demo), "train.epochs=1", "train.log_every=1",
              "train.save_every_steps=2", "train.precision=bf16", "data.num_workers=0",
              "deepspeed.config=configs/deepspeed/zero2.json"]
    ref = tmp_path / "ref"
    run_train(common + [f"train.output_dir={ref}"])
    expected = step_losses(ref)
    assert sorted(expected) == list(range(1, 9))  # 16 videos / batch 2
    out = tmp_path / "cut"
    run_train(common + [f"train.output_dir={out}", "train.max_steps=4"])
    assert max(step_losses(out)) == 4
    run_train(common + [f"train.output_dir={out}", "train.resume=auto"])
    resumed = [r for r in read_log(out) if r.get("type") == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == 4
    got = step_losses(out)
    assert sorted(got) == sorted(expected)
    for step in range(5, 9):  # the same data, masks and state; GPU kernels may differ in the last bits
        assert abs(got[step] - expected[step]) <= 1e-2 * abs(expected[step]), (step, got[step], expected[step])
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in state["model"].values())
