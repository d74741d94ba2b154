"""Training-step speed: Hugging Face VideoMAE vs our plain MAE vs our HPM, side by side.

    python tools/benchmark.py model [--json] [--batch-size 2] [--num-frames 16] [--img-size 224]
                                    [--mask-ratio 0.9] [--threads 2] [--warmup 2] [--iters 5] ...

One *training step* = mask generation + forward + backward + AdamW step (+ HPM's EMA update), on
identical architectures, sizes and target (ViT-S/16, decoder 4×192, tubelet 2, normalized pixels,
90 % masking): ``hf`` (``transformers.VideoMAEForPreTraining``, SDPA, our weights and tube masks),
``plain`` (the ``mae`` recipe), ``hpm`` (paper-faithful: the EMA teacher predicts the loss of all N
tokens every step, easy-to-hard masks at progress 0.5, relative loss Eq. 5, EMA Eq. 1), their
``*_decmask`` (VideoMAE V2 decoder masking), ``*_compiled`` and kernel variants, ``hpm:<mode>``
(a cheaper teacher, reported as ``hpm_<mode>`` with ``:`` → ``_``) and ``adamae`` (AdaMAE's
sampler); ``--help`` lists them all. Every ratio of the report is one row of `ratio_table`.

The variants run round-robin (one step each, in turn) so that a machine shared with other jobs
slows them alike; warm-up steps are excluded and the median of the timed steps is reported, HPM's
and AdaMAE's broken down into their phases. The ``hf`` peer needs ``transformers`` (a dev extra):
this module is an application (``tools/lib``), so the installed library never needs it.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

from videohpm.models import create_model, export_state_dict, hf_config_from_model
from videohpm.kernels import cpu as cpu_kernels


VARIANTS = ("hf", "plain_aten", "plain_onednn", "plain", "plain_decmask", "plain_compiled", "hpm", "hpm_decmask",
            "hpm_teacher_bf16", "hpm_compiled", "adamae")
#: the cheap teacher mode in the default run (the fastest of docs/BENCHMARKS.md "HPM teacher modes")
BEST_TEACHER_MODE = "lowres:2"


def _mode_variant(name: str) -> Optional[tuple]:
    """``hpm:<mode>`` / ``hpm_decmask:<mode>`` → (reported name, base, mode), else None."""
    base, sep, mode = name.partition(":")
    if not sep or base not in ("hpm", "hpm_decmask"):
        return None
    from videohpm.methods.hpm import parse_teacher_mode

    try:
        mode = str(parse_teacher_mode(mode))
    except ValueError as e:
        raise SystemExit(f"--variants {name}: {e}") from None
    return f"{base}_{mode.replace(':', '_')}", base, mode


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/benchmark.py model", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="pretrain_videomae_small_patch16_224", help="registry name (video)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--mask-ratio", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    p.add_argument("--iters", type=int, default=5, help="timed steps per variant (median reported)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default=f"hf,plain,hpm,hpm:{BEST_TEACHER_MODE}",
                   help="comma list of: hf, plain, hpm, plain_aten (ours with F.linear + SDPA kernels), "
                        "plain_onednn (ours with the oneDNN fp32 kernels forced on), "
                        "plain_compiled, hpm_compiled (transformer stacks through torch.compile), "
                        "hpm_teacher_bf16 (method.teacher_precision=bf16; `hpm` pins fp32), "
                        "plain_decmask, hpm_decmask (VideoMAE V2 running-cell decoder masking), "
                        "hpm:<mode>, hpm_decmask:<mode> (method.kwargs.teacher_mode=<mode>, e.g. hpm:subset:0.25), "
                        "adamae (AdaMAE's learned token sampler)")
    p.add_argument("--cpu-kernels", choices=cpu_kernels.SETTINGS, default="auto",
                   help="our fp32 CPU linear/attention kernels (videohpm.kernels.set_cpu_kernels; "
                        "default auto: the faster of oneDNN and ATen, timed per shape, as in training)")
    p.add_argument("--progress", type=float, default=0.5, help="training progress for HPM's α_t")
    p.add_argument("--decoder-mask-ratio", type=float, default=0.5,
                   help="running-cell decoder mask ratio of the *_decmask variants (VideoMAE V2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: every variant's forward under bf16 autocast and HPM's teacher in bf16 "
                        "(train.precision=bf16 semantics, for GPUs); fp32 weights and optimizer either way")
    p.add_argument("--flops", action="store_true",
                   help="also count each variant's training-step FLOPs (torch.utils.flop_counter, one extra "
                        "untimed step each) and report GFLOP per step, the achieved GFLOP/s and HPM / plain in FLOPs")
    p.add_argument("--mfu", action="store_true",
                   help="implies --flops: also time a square GEMM in the run's precision on the device (the "
                        "measured peak) and report each variant's model FLOP utilization = GFLOP/s / that peak")
    p.add_argument("--peak-gemm-size", type=int, default=0,
                   help="side of the --mfu GEMM (default: 8192 on CUDA, 1024 on CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    return p


class _Timer:
    """Accumulates wall time per phase; synchronizes CUDA so phases are attributed correctly."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: Dict[str, float] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t

    def wrap(self, fn: Callable, name: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)
        return timed


class _TimedMaskGenerator:
    """Forwards everything to the wrapped generator; times ``__call__``."""

    def __init__(self, gen: Any, timer: _Timer):
        self._gen = gen
        self._call = timer.wrap(gen.__call__, "masking")

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gen, name)


class _Variant:
    """One model + optimizer + a ``step()`` that records its phase times."""

    def __init__(self, name: str, forward: Callable[[], torch.Tensor], params: List[torch.nn.Parameter],
                 device: torch.device, on_step_end: Callable[[], None] = lambda: None,
                 kernels: str = "onednn"):
        self.name = name
        self.forward = forward
        self.on_step_end = on_step_end
        self.kernels = kernels
        # The same optimizer for every variant; the fused kernel keeps its (model-independent)
        # cost small so the ratios reflect the models.
        kw: Dict[str, Any] = dict(lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
        try:
            self.opt = torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            self.opt = torch.optim.AdamW(params, **kw)
        self.timer = _Timer(device)
        self.precision = "fp32"  # run(): --precision
        self.steps: List[float] = []
        self.cpu: List[float] = []  # process CPU time per step (all threads)
        self.first_step: Optional[float] = None
        self.phases: List[Dict[str, float]] = []
        self.peak_mem: List[float] = []  # CUDA: bytes allocated at the step's peak
        self.step_mem: List[float] = []  # CUDA: that peak minus what was allocated before the step

    def step(self, record: bool) -> None:
        cpu_kernels.set_cpu_kernels(self.kernels)
        timer = self.timer
        timer.totals = {}
        timer.sync()
        cuda = timer.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(timer.device)
            mem0 = torch.cuda.memory_allocated(timer.device)
        t0 = time.perf_counter()
        c0 = time.process_time()
        with timer.phase("forward"), torch.autocast(self.timer.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            loss = self.forward()
        with timer.phase("backward"):
            loss.backward()
        with timer.phase("optimizer"):
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        with timer.phase("ema"):
            self.on_step_end()
        timer.sync()
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
        if self.first_step is None:
            self.first_step = total
        if record:
            self.steps.append(total)
            self.cpu.append(cpu)
            self.phases.append(dict(timer.totals))
            if cuda:
                self.peak_mem.append(torch.cuda.max_memory_allocated(timer.device))
                self.step_mem.append(self.peak_mem[-1] - mem0)

    def median(self) -> float:
        return statistics.median(self.steps)

    def median_phases(self) -> Dict[str, float]:
        keys = self.phases[0].keys() if self.phases else ()
        return {k: statistics.median(p.get(k, 0.0) for p in self.phases) for k in keys}


def step_gflop(v: _Variant) -> float:
    """GFLOP (2 per multiply-add) of one forward + backward of ``v``, counted by
    ``torch.utils.flop_counter`` on the plain ops (ATen GEMMs and, on CPU, SDPA's math backend:
    our custom kernels and CPU flash attention are opaque to it; the CUDA flash / efficient / cuDNN
    attention kernels it counts as they are); untimed, no optimizer step, gradients dropped afterwards."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    previous = cpu_kernels.cpu_kernels()
    cpu_kernels.set_cpu_kernels("aten")
    math_only = sdpa_kernel(SDPBackend.MATH) if v.timer.device.type == "cpu" else nullcontext()
    try:
        with math_only, FlopCounterMode(display=False) as counter:
            with torch.autocast(v.timer.device.type, dtype=torch.bfloat16, enabled=v.precision == "bf16"):
                loss = v.forward()
            loss.backward()
    finally:
        cpu_kernels.set_cpu_kernels(previous)
        v.opt.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def gemm_peak_gflops(device: torch.device, dtype: torch.dtype, n: int, iters: int = 20) -> float:
    """The device's measured matrix-multiply peak: GFLOP/s of an ``n``×``n``×``n`` ``torch.mm`` in
    ``dtype`` (2·n³ FLOPs each), best of 3 timings of ``iters`` back-to-back products after a warm-up."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * iters / best / 1e9


def _variant_names(args: argparse.Namespace) -> tuple:
    """``--variants`` → (the names, {``hpm:<mode>`` entry: (reported name, base, mode)}), checked."""
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    modes = {n: _mode_variant(n) for n in names if _mode_variant(n) is not None}  # hpm:<teacher mode>
    unknown = sorted(set(names) - set(VARIANTS) - set(modes))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    return names, modes


def _decmask(args: argparse.Namespace, name: str) -> Dict[str, Any]:
    """The recipe keywords of a ``*_decmask`` variant (VideoMAE V2 decoder masking), else none."""
    return dict(decoder_mask=True, decoder_mask_ratio=args.decoder_mask_ratio) if name.endswith("_decmask") else {}


def _build_hf(args: argparse.Namespace, device: torch.device, plain_model: torch.nn.Module, x: torch.Tensor,
              tube: Any) -> _Variant:
    from transformers import VideoMAEForPreTraining

    hf = VideoMAEForPreTraining(hf_config_from_model(plain_model, attn_implementation="sdpa"))
    hf.load_state_dict(export_state_dict(plain_model, "hf"), strict=True)
    hf = hf.to(device).train()
    x_hf = x.permute(0, 2, 1, 3, 4).contiguous()  # HF's [B, T, C, H, W], prepared by its loader
    grid = (args.batch_size, *plain_model.grid(x))

    def hf_forward() -> torch.Tensor:
        mask = tube(grid, device=device)
        return hf(pixel_values=x_hf, bool_masked_pos=mask).loss

    return _Variant("hf", hf_forward, list(hf.parameters()), device, kernels=args.cpu_kernels)


def _build_plain(args: argparse.Namespace, device: torch.device, names: List[str], plain_model: torch.nn.Module,
                 batch: Dict[str, torch.Tensor], tube: Any) -> List[_Variant]:
    """The ``mae`` recipe variants, each a copy of ``plain_model``'s weights."""
    from videohpm.methods import build_recipe

    plain_like = {"plain": (args.cpu_kernels, False), "plain_aten": ("aten", False), "plain_onednn": ("onednn", False),
                  "plain_compiled": (args.cpu_kernels, True), "plain_decmask": (args.cpu_kernels, False)}
    variants = []
    for name, (backend, compiled) in plain_like.items():
        if name not in names:
            continue
        model = create_model(args.model, torch_compile=compiled, img_size=args.img_size,
                             num_frames=args.num_frames).to(device)
        model.load_state_dict(plain_model.state_dict())
        recipe = build_recipe("mae", model, tube, **_decmask(args, name)).train()
        variants.append(_Variant(name, lambda r=recipe: r(batch, 0.0)["loss"], list(recipe.parameters()), device,
                                 kernels=backend))
    return variants


def _build_hpm(args: argparse.Namespace, device: torch.device, names: List[str], modes: Dict[str, tuple],
               batch: Dict[str, torch.Tensor]) -> List[_Variant]:
    """The ``hpm`` recipe variants (full teacher, bf16 teacher, compiled, decoder masking, teacher
    modes), their teacher and masking timed as phases of the step."""
    from videohpm.masking import make_mask_generator
    from videohpm.methods import build_recipe

    # (--variants entry, reported name, compiled, bf16 teacher, teacher_mode)
    hpm_like = [("hpm", "hpm", False, False, "full"), ("hpm_teacher_bf16", "hpm_teacher_bf16", False, True, "full"),
                ("hpm_compiled", "hpm_compiled", True, False, "full"), ("hpm_decmask", "hpm_decmask", False, False, "full")]
    hpm_like += [(key, reported, False, False, mode) for key, (reported, _, mode) in modes.items()]
    variants = []
    for key, name, compiled, teacher_bf16, mode in hpm_like:
        if key not in names:
            continue
        torch.manual_seed(args.seed)
        model = create_model(args.model, loss_predictor=True, torch_compile=compiled, img_size=args.img_size,
                             num_frames=args.num_frames).to(device)
        recipe = build_recipe("hpm", model, make_mask_generator("hpm", mask_ratio=args.mask_ratio),
                              loss_pred="relative",
                              teacher_precision="bf16" if teacher_bf16 or args.precision == "bf16" else "fp32",
                              teacher_mode=mode, **_decmask(args, modes[key][1] if key in modes else name)).train()
        v = _Variant(name, lambda r=recipe: r(batch, args.progress)["loss"], list(recipe.parameters()), device,
                     on_step_end=recipe.on_step_end, kernels=args.cpu_kernels)
        if key in modes:
            v.teacher_mode = mode
        teacher = recipe.teacher
        teacher.encode = v.timer.wrap(teacher.encode, "teacher_encoder")
        teacher.decode = v.timer.wrap(teacher.decode, "teacher_loss_predictor")
        recipe.mask_generator = _TimedMaskGenerator(recipe.mask_generator, v.timer)
        variants.append(v)
    return variants


def _build_adamae(args: argparse.Namespace, device: torch.device, plain_model: torch.nn.Module,
                  batch: Dict[str, torch.Tensor]) -> _Variant:
    """The ``adamae`` recipe on ``plain_model``'s weights, its sampler and masking timed as phases."""
    from videohpm.masking import make_mask_generator
    from videohpm.methods import build_recipe

    torch.manual_seed(args.seed)
    model = create_model(args.model, img_size=args.img_size, num_frames=args.num_frames).to(device)
    model.load_state_dict(plain_model.state_dict())
    recipe = build_recipe("adamae", model, make_mask_generator("adamae", mask_ratio=args.mask_ratio)).to(device)
    v = _Variant("adamae", lambda r=recipe: r(batch, 0.0)["loss"], list(recipe.parameters()), device,
                 kernels=args.cpu_kernels)
    recipe.sampler.forward = v.timer.wrap(recipe.sampler.forward, "sampler")
    recipe.mask_generator = _TimedMaskGenerator(recipe.mask_generator, v.timer)
    return v


def _build(args: argparse.Namespace, device: torch.device) -> List[_Variant]:
    """Every variant of ``--variants`` on one shared random clip, in the report's order."""
    from videohpm.masking import make_mask_generator

    names, modes = _variant_names(args)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, args.num_frames, args.img_size, args.img_size, generator=g).to(device)
    batch = {"video": x}
    torch.manual_seed(args.seed)
    plain_model = create_model(args.model, img_size=args.img_size, num_frames=args.num_frames).to(device)
    tube = make_mask_generator("tube", mask_ratio=args.mask_ratio)
    variants: List[_Variant] = []
    if "hf" in names:
        variants.append(_build_hf(args, device, plain_model, x, tube))
    variants += _build_plain(args, device, names, plain_model, batch, tube)
    variants += _build_hpm(args, device, names, modes, batch)
    if "adamae" in names:
        variants.append(_build_adamae(args, device, plain_model, batch))
    order = {name: i for i, name in enumerate((*VARIANTS, *(m[0] for m in modes.values())))}
    return sorted(variants, key=lambda v: order[v.name])


def _add_mfu_and_memory(res: Dict[str, Any], args: argparse.Namespace, variants: List[_Variant],
                        gflop: Dict[str, float]) -> None:
    """``--mfu``: the measured GEMM peak and each variant's MFU; on CUDA the device's name and each
    variant's peak memory (absolute, and above what was allocated before its step)."""
    device = torch.device(args.device)
    if device.type == "cuda":
        res["device_name"] = torch.cuda.get_device_name(device)
    for v in variants:
        if v.peak_mem:
            res[f"{v.name}_peak_mem_mib"] = max(v.peak_mem) / 2**20
            res[f"{v.name}_step_mem_mib"] = max(v.step_mem) / 2**20
    if not args.mfu:
        return
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = gemm_peak_gflops(device, dtype, args.peak_gemm_size or (8192 if device.type == "cuda" else 1024))
    res["gemm_peak_gflops"] = peak  # the MFU denominator, measured in this run
    for v in variants:
        res[f"{v.name}_mfu"] = gflop[v.name] / res[f"{v.name}_step_s"] / peak


#: The report's fixed ratios: (result key, numerator key, denominator key), each set when both keys
#: are in the result. ``X_vs_Y_time`` = X's step / Y's (how much slower X is); ``X_vs_hf`` = HF's
#: step / X's (how much faster than HF); ``_min``: the fastest step of each; ``_cpu``: process CPU time.
RATIOS: Tuple[Tuple[str, str, str], ...] = (
    ("plain_compiled_vs_hf", "hf_step_s", "plain_compiled_step_s"),
    ("hpm_compiled_vs_hf", "hf_step_s", "hpm_compiled_step_s"),
    ("hpm_teacher_bf16_vs_plain_time", "hpm_teacher_bf16_step_s", "plain_step_s"),
    ("hpm_vs_plain_time_compiled", "hpm_compiled_step_s", "plain_compiled_step_s"),
    ("plain_vs_hf", "hf_step_s", "plain_step_s"),
    ("plain_vs_hf_min", "hf_step_min_s", "plain_step_min_s"),
    ("plain_vs_hf_cpu", "hf_cpu_s", "plain_cpu_s"),
    ("plain_aten_vs_hf", "hf_step_s", "plain_aten_step_s"),
    ("plain_onednn_vs_hf", "hf_step_s", "plain_onednn_step_s"),
    ("plain_decmask_vs_plain_time", "plain_decmask_step_s", "plain_step_s"),  # decoder masking's saving
    ("hpm_decmask_vs_hpm_time", "hpm_decmask_step_s", "hpm_step_s"),
    ("hpm_vs_plain_time", "hpm_step_s", "plain_step_s"),
    ("hpm_vs_plain_time_min", "hpm_step_min_s", "plain_step_min_s"),
    ("hpm_vs_plain_time_cpu", "hpm_cpu_s", "plain_cpu_s"),
    ("hpm_vs_plain_flops", "hpm_step_gflop", "plain_step_gflop"),
)


def ratio_table(teacher_modes: List[str]) -> List[Tuple[str, str, str]]:
    """Every ratio of a run whose ``hpm:<mode>`` variants are reported as ``teacher_modes``: each
    mode against plain, its full-teacher base (and plain_decmask for a decoder-masked one), then
    `RATIOS`, then AdaMAE against plain, HPM and each mode."""
    rows: List[Tuple[str, str, str]] = []
    for name in teacher_modes:
        base = "hpm_decmask" if name.startswith("hpm_decmask_") else "hpm"
        rows += [(f"{name}_vs_plain_time", f"{name}_step_s", "plain_step_s"),
                 (f"{name}_vs_plain_time_cpu", f"{name}_cpu_s", "plain_cpu_s"),
                 (f"{name}_vs_{base}_time", f"{name}_step_s", f"{base}_step_s")]
        if base == "hpm_decmask":
            rows.append((f"{name}_vs_plain_decmask_time", f"{name}_step_s", "plain_decmask_step_s"))
    rows += RATIOS
    rows += [(f"adamae_vs_{base}_time", "adamae_step_s", f"{base}_step_s") for base in ("plain", "hpm", *teacher_modes)]
    return rows


def _step_stats(res: Dict[str, Any], variants: List[_Variant], batch_size: int, gflop: Dict[str, float]) -> None:
    """Each variant's median, fastest and CPU step time, throughput, FLOPs and compile cost."""
    for v in variants:
        med = v.median()
        res[f"{v.name}_step_s"] = med
        res[f"{v.name}_step_s_all"] = [round(s, 4) for s in v.steps]
        res[f"{v.name}_clips_per_s"] = batch_size / med
        res[f"{v.name}_step_min_s"] = min(v.steps)
        res[f"{v.name}_cpu_s"] = statistics.median(v.cpu)
        if v.name in gflop:
            res[f"{v.name}_step_gflop"] = gflop[v.name]
            res[f"{v.name}_gflop_per_s"] = gflop[v.name] / med
        if v.name.endswith("_compiled"):  # one-time cost: first step minus a steady-state step
            res[f"{v.name}_compile_s"] = v.first_step - med


def _breakdowns(res: Dict[str, Any], variants: List[_Variant]) -> None:
    """The median step of AdaMAE and of every HPM variant, split into its timed phases."""
    if "adamae_step_s" in res:
        ph = next(v for v in variants if v.name == "adamae").median_phases()
        res["adamae_breakdown_s"] = {"sampler": ph.get("sampler", 0.0), "masking": ph.get("masking", 0.0),
                                     "rest_forward": ph.get("forward", 0.0) - ph.get("sampler", 0.0) - ph.get("masking", 0.0),
                                     "backward": ph.get("backward", 0.0), "optimizer": ph.get("optimizer", 0.0)}
    for hpm in (v for v in variants if v.name.startswith("hpm")):
        ph = hpm.median_phases()
        inner = ph.get("teacher_encoder", 0.0) + ph.get("teacher_loss_predictor", 0.0) + ph.get("masking", 0.0)
        res[f"{hpm.name}_breakdown_s"] = {
            "teacher_encoder": ph.get("teacher_encoder", 0.0),
            "teacher_loss_predictor": ph.get("teacher_loss_predictor", 0.0),
            "masking": ph.get("masking", 0.0),
            "student_forward": ph.get("forward", 0.0) - inner,
            "student_backward": ph.get("backward", 0.0),
            "optimizer": ph.get("optimizer", 0.0),
            "ema": ph.get("ema", 0.0),
        }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    variants = _build(args, device)
    for v in variants:
        v.precision = args.precision
    t_build = time.perf_counter()
    for i in range(args.warmup + args.iters):
        for v in variants:  # round robin: background load hits every variant alike
            v.step(record=i >= args.warmup)
    cpu_kernels.set_cpu_kernels(args.cpu_kernels)
    wall = time.perf_counter() - t_build
    gflop = {v.name: step_gflop(v) for v in variants} if args.flops or args.mfu else {}
    kernels = cpu_kernels.chosen_kernels()
    capability = kernels.pop("cpu")

    res: Dict[str, Any] = {
        "config": dict(model=args.model, batch_size=args.batch_size, num_frames=args.num_frames,
                       img_size=args.img_size, mask_ratio=args.mask_ratio, threads=args.threads,
                       precision=args.precision,
                       warmup=args.warmup, iters=args.iters, device=str(device), cpu_kernels=args.cpu_kernels,
                       torch=torch.__version__, machine=platform.processor() or platform.machine()),
        "wall_s": wall,
        # what the CPU offers under the ISA caps in the environment, and what the default chose
        "cpu_capability": capability,
        "kernels": kernels,
    }
    _step_stats(res, variants, args.batch_size, gflop)
    _add_mfu_and_memory(res, args, variants, gflop)
    modes = {v.name: str(v.teacher_mode) for v in variants if getattr(v, "teacher_mode", None) is not None}
    if modes:
        res["teacher_modes"] = modes  # reported name -> method.kwargs.teacher_mode
    for key, numerator, denominator in ratio_table(list(modes)):
        if numerator in res and denominator in res:
            res[key] = res[numerator] / res[denominator]
    _breakdowns(res, variants)
    return res


def _mfu_and_memory_lines(res: Dict[str, Any]) -> List[str]:
    names = (*VARIANTS, *res.get("teacher_modes", {}))
    mfu = [f"{name} {100 * res[f'{name}_mfu']:.1f}%" for name in names if f"{name}_mfu" in res]
    mem = [f"{name} {res[f'{name}_peak_mem_mib']:.0f} MiB (step {res[f'{name}_step_mem_mib']:.0f})"
           for name in names if f"{name}_peak_mem_mib" in res]
    lines = []
    if mfu:
        lines.append(f"MFU (vs the measured GEMM peak {res['gemm_peak_gflops'] / 1e3:.1f} TFLOP/s): " + "; ".join(mfu))
    if mem:
        lines.append("peak memory allocated (all variants resident; the step's own share): " + "; ".join(mem))
    return lines


def _report(res: Dict[str, Any]) -> str:
    c = res["config"]
    lines = [
        f"model={c['model']} batch={c['batch_size']} clip={c['num_frames']}x{c['img_size']}^2 "
        f"mask={c['mask_ratio']} threads={c['threads']} device={c['device']} cpu_kernels={c['cpu_kernels']} "
        f"torch={c['torch']} (median of {c['iters']} timed steps after {c['warmup']} warm-up, round robin)",
        f"CPU: ATen {res['cpu_capability']['aten']}, AVX-512 for oneDNN {res['cpu_capability']['onednn_avx512']}, "
        f"native bf16 {res['cpu_capability']['bf16_fast']}, AMX {res['cpu_capability']['amx']}"
        f"{', caps ' + str(res['cpu_capability']['caps']) if res['cpu_capability']['caps'] else ''}; "
        f"default kernels: fp32 {res['kernels']['fp32']}, bf16 {res['kernels']['bf16']}",
        f"{'variant':<16}{'step s':>9}{'clips/s':>10}{'min s':>9}{'cpu s':>9}   all steps (s)",
    ]
    for name in (*VARIANTS, *res.get("teacher_modes", {})):
        if f"{name}_step_s" in res:
            extra = f"   (compile: {res[f'{name}_compile_s']:.1f}s once)" if f"{name}_compile_s" in res else ""
            lines.append(f"{name:<16}{res[f'{name}_step_s']:>9.3f}{res[f'{name}_clips_per_s']:>10.3f}"
                         f"{res[f'{name}_step_min_s']:>9.3f}{res[f'{name}_cpu_s']:>9.3f}   "
                         f"{res[f'{name}_step_s_all']}{extra}")
    for key, text in (("plain_vs_hf", "plain vs HF: {:.2f}x faster"),
                      ("plain_vs_hf_min", "plain vs HF on the fastest step of each: {:.2f}x"),
                      ("plain_vs_hf_cpu", "plain vs HF on process CPU time: {:.2f}x"),
                      ("plain_aten_vs_hf", "plain with F.linear + SDPA (no oneDNN kernels) vs HF: {:.2f}x"),
                      ("plain_onednn_vs_hf", "plain with the oneDNN kernels forced on vs HF: {:.2f}x"),
                      ("plain_compiled_vs_hf", "plain compiled vs HF: {:.2f}x faster"),
                      ("hpm_vs_plain_time", "HPM step time / plain step time: {:.2f}x"),
                      ("hpm_vs_plain_time_min", "HPM / plain on the fastest step of each: {:.2f}x"),
                      ("hpm_vs_plain_time_cpu", "HPM / plain on process CPU time: {:.2f}x"),
                      ("hpm_vs_plain_flops", "HPM / plain in FLOPs per step: {:.2f}x"),
                      ("hpm_teacher_bf16_vs_plain_time", "HPM with a bf16-autocast teacher / plain: {:.2f}x"),
                      ("hpm_vs_plain_time_compiled", "HPM / plain, both compiled: {:.2f}x"),
                      ("plain_decmask_vs_plain_time", "plain with decoder masking / plain: {:.2f}x"),
                      ("hpm_decmask_vs_hpm_time", "HPM with decoder masking / HPM: {:.2f}x")):
        if key in res:
            lines.append(text.format(res[key]))
    for name, mode in res.get("teacher_modes", {}).items():
        for key, other in ((f"{name}_vs_plain_time", "plain"), (f"{name}_vs_hpm_time", "hpm (full teacher)"),
                           (f"{name}_vs_hpm_decmask_time", "hpm_decmask (full teacher)"),
                           (f"{name}_vs_plain_decmask_time", "plain_decmask")):
            if key in res:
                lines.append(f"{name} (teacher_mode={mode}) / {other}: {res[key]:.2f}x")
    flops = [f"{name} {res[f'{name}_step_gflop']:.1f} GFLOP, {res[f'{name}_gflop_per_s']:.0f} GFLOP/s"
             for name in (*VARIANTS, *res.get("teacher_modes", {})) if f"{name}_step_gflop" in res]
    if flops:
        lines.append("FLOPs per training step (forward + backward), achieved rate: " + "; ".join(flops))
    lines += _mfu_and_memory_lines(res)
    for key, value in res.items():
        if key.startswith("adamae_vs_") and key.endswith("_time"):
            lines.append(f"AdaMAE / {key[len('adamae_vs_'):-len('_time')]}: {value:.2f}x")
    for name in ("hpm", "hpm_decmask", "hpm_teacher_bf16", "hpm_compiled", *res.get("teacher_modes", {}), "adamae"):
        if f"{name}_breakdown_s" in res:
            total = res[f"{name}_step_s"]
            parts = ", ".join(f"{k} {v:.3f}s ({100 * v / total:.0f}%)" for k, v in res[f"{name}_breakdown_s"].items())
            lines.append(f"{name} step breakdown (medians): {parts}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    res = run(args)
    print(_report(res), flush=True)
    if args.json:
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
