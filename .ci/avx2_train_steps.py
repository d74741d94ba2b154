"""A few real training steps of every tiny config (configs/test/*) through tools/train.py, in one
process (one interpreter start), on the tiny demo data. Run by .ci/avx2_emulated.sh under the
AVX2 ISA caps; exits non-zero on the first failing run.

    python .ci/avx2_train_steps.py WORKDIR
"""
import importlib.util
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import videohpm.data  # noqa: E402,F401  (PyAV before decord, see videohpm/data/video.py)
from videohpm.data import make_demo_data  # noqa: E402


def main(work: Path) -> int:
    info = make_demo_data(work / "data", tiny=True, formats=("ssv2",), images=False)
    lists, root = info.lists["ssv2"], info.video_dirs["ssv2"]
    data = [f"data.train={lists['train']}", f"data.val={lists['val']}", f"data.data_root={root}"]
    quick = ["train.epochs=1", "train.save_every=0", "train.tensorboard=false", "train.progress_bar=false"]
    spec = importlib.util.spec_from_file_location("_ci_train", REPO / "tools" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    runs = [
        ("pretrain_hpm_tiny", ["--config", "configs/test/pretrain_hpm_tiny.yaml", *data, *quick]),
        ("pretrain_ccmim_tiny", ["--config", "configs/test/pretrain_ccmim_tiny.yaml", *data, *quick]),
        ("pretrain_adamae_tiny", ["--config", "configs/test/pretrain_adamae_tiny.yaml", *data, *quick]),
        ("finetune_tiny", ["--config", "configs/test/finetune_tiny.yaml", *data, *quick,
                           f"model.pretrained={work / 'pretrain_hpm_tiny' / 'model_final.pth'}"]),
        # a bf16 teacher over 2 × 16 × 16 = 512 tokens (the long-attention path, once a crash on AVX2)
        ("pretrain_hpm_tiny_bf16_teacher", ["--config", "configs/test/pretrain_hpm_tiny.yaml", *data, *quick,
                                            "train.max_steps=2", "method.kwargs.teacher_precision=bf16",
                                            "model.kwargs.img_size=128", "data.input_size=128"]),
    ]
    for extra in sorted((REPO / "configs" / "test").glob("*.yaml")):
        if not any(f"configs/test/{extra.name}" in args for _, args in runs):
            print(f"note: {extra.name} is not run here (add it to .ci/avx2_train_steps.py)", flush=True)
    from videohpm.kernels import cpu as cpu_kernels

    for name, args in runs:
        t0 = time.time()
        # the bf16 run forces the oneDNN kernels on, as VIDEOHPM_CPU_KERNELS=onednn would
        cpu_kernels.set_cpu_kernels("onednn" if name.endswith("bf16_teacher") else "auto")
        rc = train.main([*args, f"train.output_dir={work / name}"])
        print(f"== {name}: exit {rc}, {time.time() - t0:.1f} s", flush=True)
        if rc:
            return int(rc)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(Path(sys.argv[1])))
