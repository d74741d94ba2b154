"""The device check: one prepared run on a GPU machine that measures what users run, in one call.

Steps, each a subprocess with its own time limit inside one overall budget, each appending its
output to ``device_check.log`` and its result to ``device_check.json`` (rewritten after every step,
so a run cut short still leaves what it measured):

1. ``environment``: torch, CUDA, the card, its memory;
2. ``tests``: the suite's ``cuda``-marked tests (``tests/cuda``), JUnit counts and failures;
3. ``benchmark``: ``tools/benchmark.py model`` at ViT-B/16, 16×224², bf16, batch sized to the
   card: HF VideoMAE, plain, HPM (full and cheap teachers), with / without decoder masking;
   clips/s, step time, MFU against a bf16 GEMM timed in the same run, peak memory;
4. ``train``: ``tools/train.py`` under the DeepSpeed launcher, ZeRO-2, on generated clips (real
   mp4 files decoded by the project's loader), with the loader's ``data_wait_frac``;
5. ``compile``: the plain step with and without ``torch.compile``, if the budget leaves time.

``--device cpu --tiny`` runs the same steps at toy sizes (the CI dry run; no GPU, no launcher).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("environment", "tests", "benchmark", "train", "compile")
#: benchmark variants: the peers, plain and HPM with the full and the cheap teachers, ± decoder masking
VARIANTS = "hf,plain,plain_decmask,hpm,hpm_decmask,hpm:lowres:2,hpm:subset:0.25,hpm_decmask:lowres:2"
#: the targets for a GPU run (recorded, not asserted): key → (benchmark key, bound, "min" | "max")
TARGETS = {"plain_clips_per_s_per_gpu": ("plain_clips_per_s", 300.0, "min"),
           "plain_mfu": ("plain_mfu", 0.30, "min"),
           "hpm_cheap_teacher_vs_plain_time": ("hpm_lowres_2_vs_plain_time", 1.5, "max")}


@dataclass
class Check:
    """One run of the device check: where it writes, what it may spend, what it found."""

    device: str
    tiny: bool
    out: Path
    budget_s: float
    python: str = sys.executable
    steps: Sequence[str] = STEPS
    keep_log: bool = False
    #: generated clips and the training run's folder (checkpoints): not under ``out``, whose files
    #: a device call sends back
    work: Path = ROOT / "outputs" / "device_check_work"
    start: float = field(default_factory=time.perf_counter)
    result: Dict[str, Any] = field(default_factory=dict)


    @property
    def log(self) -> Path:
        return self.out / "device_check.log"

    @property
    def json_path(self) -> Path:
        return self.out / "device_check.json"

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def env(self) -> Dict[str, str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                   PYTHONUNBUFFERED="1")
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU dry run never touches a GPU, even where there is one
        return env

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.json_path.write_text(json.dumps(self.result, indent=1, sort_keys=True) + "\n")

    def sh(self, cmd: List[str], timeout: float, name: str) -> Dict[str, Any]:
        """Runs ``cmd`` (stdout + stderr into the log) within ``timeout`` s and the budget."""
        timeout = max(1.0, min(timeout, self.left_s()))
        t0 = time.perf_counter()
        with self.log.open("a") as log:
            log.write(f"\n===== {name}: {' '.join(cmd)}  (limit {timeout:.0f}s)\n")
            log.flush()
            try:
                proc = subprocess.run(cmd, cwd=ROOT, env=self.env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout)
                rc, text = proc.returncode, proc.stdout
            except subprocess.TimeoutExpired as e:
                rc = "timeout"
                text = (e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout) or ""
            log.write(text)
            log.write(f"\n===== {name}: rc={rc} in {time.perf_counter() - t0:.1f}s\n")
        return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "output": text}


def last_json(text: str) -> Optional[Dict[str, Any]]:
    """The last line of ``text`` that parses as a JSON object (the tools' ``--json`` line)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def step_environment(c: Check) -> Dict[str, Any]:
    code = ("import json, platform, torch\n"
            "d = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,\n"
            "     'cuda_available': torch.cuda.is_available(), 'cpus': __import__('os').cpu_count()}\n"
            "if torch.cuda.is_available():\n"
            "    p = torch.cuda.get_device_properties(0)\n"
            "    d.update(device_name=p.name, device_count=torch.cuda.device_count(), capability=f'{p.major}.{p.minor}',\n"
            "             memory_gib=p.total_memory / 2**30, bf16=torch.cuda.is_bf16_supported())\n"
            "print(json.dumps(d))\n")
    r = c.sh([c.python, "-c", code], 120, "environment")
    info = last_json(r["output"]) or {}
    if c.device == "cuda" and not info.get("cuda_available"):
        raise RuntimeError(f"--device cuda but torch sees no GPU: {info or r['output'][-500:]}")
    return {"rc": r["rc"], "seconds": r["seconds"], **info}


def junit_counts(path: Path) -> Dict[str, Any]:
    """Counts and the failed tests' ids (``file::name``) of a pytest ``--junitxml`` report."""
    cases = ET.parse(path).getroot().iter("testcase")
    out: Dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
    for case in cases:
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            out["failed"] += 1
            out["failures"].append(f"{case.get('classname')}::{case.get('name')}")
        elif "skipped" in tags:
            out["skipped"] += 1
        else:
            out["passed"] += 1
    return out


def step_tests(c: Check) -> Dict[str, Any]:
    xml = c.out / "cuda_tests.xml"
    cmd = [c.python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={xml}",
           "-o", "addopts=", "tests/cuda"]
    r = c.sh(cmd, 180, "tests")
    counts = junit_counts(xml) if xml.exists() else {}
    return {"rc": r["rc"], "seconds": r["seconds"], **counts}


def batch_for_memory(gib: float) -> int:
    """Clips per step for ViT-B/16 at 16×224² (bf16) by the card's memory: VideoMAE's 32 per 32 GB
    card, doubled on 80 GB cards."""
    return 64 if gib >= 70 else 32 if gib >= 30 else 16 if gib >= 15 else 8


def benchmark_args(c: Check) -> List[str]:
    if c.tiny:
        return ["--model", "pretrain_videomae_tiny_patch16_224", "--num-frames", "4", "--img-size", "32",
                "--batch-size", "2", "--warmup", "1", "--iters", "1", "--threads", "1", "--peak-gemm-size", "256"]
    batch = batch_for_memory(c.result.get("steps", {}).get("environment", {}).get("memory_gib", 0.0))
    return ["--model", "pretrain_videomae_base_patch16_224", "--num-frames", "16", "--img-size", "224",
            "--batch-size", str(batch), "--warmup", "3", "--iters", "8"]


def step_benchmark(c: Check) -> Dict[str, Any]:
    cmd = [c.python, "tools/benchmark.py", "model", "--device", c.device, "--precision", "bf16", "--mfu", "--json",
           "--variants", VARIANTS, *benchmark_args(c)]
    r = c.sh(cmd, 240, "benchmark")
    res = last_json(r["output"])
    if res is None:
        return {"rc": r["rc"], "seconds": r["seconds"], "error": r["output"][-1500:]}
    res.pop("kernels", None)  # CPU kernel choices: in the log
    return {"rc": r["rc"], "seconds": r["seconds"], **res}


def step_compile(c: Check) -> Dict[str, Any]:
    if c.device == "cpu":
        return {"skipped": "CPU dry run (compiling takes minutes on a CPU)"}
    if c.left_s() < 150:
        return {"skipped": f"{c.left_s():.0f}s of the budget left"}
    cmd = [c.python, "tools/benchmark.py", "model", "--device", c.device, "--precision", "bf16", "--json",
           "--variants", "plain,plain_compiled", *benchmark_args(c)]
    r = c.sh(cmd, c.left_s() - 10, "compile")
    res = last_json(r["output"]) or {}
    keys = ("plain_step_s", "plain_compiled_step_s", "plain_compiled_compile_s", "plain_clips_per_s",
            "plain_compiled_clips_per_s")
    out = {k: res[k] for k in keys if k in res}
    if "plain_step_s" in out and "plain_compiled_step_s" in out:
        out["compiled_speedup"] = out["plain_step_s"] / out["plain_compiled_step_s"]
    return {"rc": r["rc"], "seconds": r["seconds"], **out}


def make_clips(c: Check) -> Dict[str, str]:
    """Generated clips as real H.264 files (the demo set's renderer and encoder, K400 layout) and a
    training list that repeats them, long enough for the run's steps in one epoch."""
    size, per_class, frames = (32, 1, 16) if c.tiny else (256, 4, 32)
    root = c.work / "clips"
    code = ("import sys; from videohpm.data.demo import make_demo_data\n"
            f"d = make_demo_data({str(root)!r}, train_per_class={per_class}, val_per_class=1, test_per_class=0, num_frames={frames},"
            f" size={size}, formats=('k400',), images=False)\n"
            "print(d.lists['k400']['train']); print(d.video_dirs['k400'])\n")
    r = c.sh([c.python, "-c", code], 180, "clips")
    if r["rc"] != 0:
        raise RuntimeError(f"generating clips failed:\n{r['output'][-1500:]}")
    train_list, video_dir = r["output"].strip().splitlines()[-2:]
    steps, batch = train_shape(c)
    lines = [ln for ln in Path(train_list).read_text().splitlines() if ln.strip()]
    repeated = root / "train_repeated.csv"
    repeated.write_text("".join(f"{lines[i % len(lines)]}\n" for i in range(steps * batch)))
    return {"train": str(repeated), "root": video_dir}


def train_shape(c: Check) -> tuple:
    """(optimizer steps, clips per step) of the training run."""
    return (3, 2) if c.tiny else (200, 32)


def train_command(c: Check, clips: Dict[str, str]) -> List[str]:
    steps, batch = train_shape(c)
    workers = 0 if c.tiny else max(2, min(12, (os.cpu_count() or 4) - 2))
    config = "configs/test/pretrain_hpm_tiny.yaml" if c.tiny else "configs/pretrain/ssv2_vit_b_hpm.yaml"
    overrides = [f"data.train={clips['train']}", f"data.data_root={clips['root']}", f"data.num_workers={workers}",
                 f"data.persistent_workers={workers > 0}", f"train.batch_size={batch}", "train.accum_steps=1",
                 "train.epochs=1", f"train.max_steps={steps}", "optim.warmup_epochs=0",
                 f"train.output_dir={c.work / 'train'}", "train.save_every=0", "train.save_every_steps=0",
                 f"train.log_every={1 if c.tiny else 20}", "train.tensorboard=false", "train.progress_bar=false",
                 f"train.precision={'bf16' if c.device == 'cuda' else 'fp32'}",
                 "deepspeed.config=configs/deepspeed/zero2.json"]
    tool = ["tools/train.py", "--config", config, *overrides]
    if c.device == "cpu":
        return [c.python, *tool]  # one process: the CPU dry run checks the tool and the config, not NCCL
    return [c.python, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port", "29571", *tool]


def read_train_log(path: Path) -> Dict[str, Any]:
    """The run's last step record and its epoch record (``data_wait_frac``, clips/s, memory)."""
    records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    keys = ("step", "loss", "clips_per_s", "data_wait_frac", "data_wait_s", "compute_s", "peak_mem_mb")
    out: Dict[str, Any] = {"log_points": len(steps)}
    if steps:
        out["last_step"] = {k: steps[-1][k] for k in keys if k in steps[-1]}
        out["clips_per_s_after_warmup"] = [s.get("clips_per_s") for s in steps[1:]] or None
    if epochs:
        out["epoch"] = {k: v for k, v in epochs[-1].items() if isinstance(v, (int, float, str))}
        out["data_wait_frac"] = epochs[-1].get("data_wait_frac")
    return out


def step_train(c: Check) -> Dict[str, Any]:
    for sub in ("clips", "train"):  # a fresh clip set and run folder every time
        shutil.rmtree(c.work / sub, ignore_errors=True)
    clips = make_clips(c)
    r = c.sh(train_command(c, clips), 240, "train")
    log = c.work / "train" / "log.jsonl"
    if log.exists():
        shutil.copy(log, c.out / "train_log.jsonl")
    return {"rc": r["rc"], "seconds": r["seconds"], "steps_batch": list(train_shape(c)), **read_train_log(log)}


def targets(bench: Dict[str, Any], tests: Dict[str, Any], gpu: bool = True) -> Dict[str, Any]:
    """The GPU targets, recorded against what this run measured (``met`` is None where not measured,
    and for every speed target when ``gpu`` is False: toy sizes on a CPU say nothing about them)."""
    out: Dict[str, Any] = {}
    for name, (key, bound, kind) in TARGETS.items():
        value = bench.get(key)
        met = None if value is None or not gpu else (value >= bound if kind == "min" else value <= bound)
        out[name] = {"value": value, "target": bound, "kind": kind, "met": met}
    sync = [f for f in tests.get("failures", []) if "sync" in f]
    ran = tests.get("passed", 0) + tests.get("failed", 0) > 0
    out["no_host_device_sync_in_step"] = {"met": (not sync) if ran else None,
                                          "how": "tests/cuda/test_no_sync.py: training steps under "
                                                 "torch.cuda.set_sync_debug_mode('error')"}
    return out


def run_check(c: Check) -> int:
    """Runs the steps in order, saving the JSON after each; exit code 0 only if every step passed."""
    c.out.mkdir(parents=True, exist_ok=True)
    if not c.keep_log:
        c.log.write_text("")
    c.result.update(device=c.device, tiny=c.tiny, budget_s=c.budget_s, steps={})
    funcs = {"environment": step_environment, "tests": step_tests, "benchmark": step_benchmark,
             "train": step_train, "compile": step_compile}
    failed = []
    for name in c.steps:
        print(f"[device check] {name} ({c.left_s():.0f}s of the budget left)", flush=True)
        if c.left_s() < 5:
            c.result["steps"][name] = {"skipped": "budget spent"}
            continue
        try:
            c.result["steps"][name] = res = funcs[name](c)
        except Exception as e:  # a broken step is recorded; the others still run
            c.result["steps"][name] = res = {"rc": "error", "error": f"{type(e).__name__}: {e}"}
        if res.get("rc") not in (0, None) or res.get("failed"):
            failed.append(name)
        c.save()
    steps = c.result["steps"]
    c.result["targets"] = targets(steps.get("benchmark", {}), steps.get("tests", {}),
                                  gpu=c.device == "cuda" and not c.tiny)
    c.result["failed_steps"] = failed
    c.save()
    print(f"[device check] {'failed: ' + ', '.join(failed) if failed else 'all steps passed'}; "
          f"{c.json_path}, {c.log}", flush=True)
    return 1 if failed else 0
