#!/usr/bin/env bash
# The path users without AVX-512 take, on purpose, on any CI machine: the ISA caps make
# oneDNN, ATen and MKL behave as on an AVX2 + FMA CPU (no AVX-512, no AVX512-BF16, no AMX).
# Runs the CPU-kernel tests, the bf16-teacher fallback tests and a few real training steps of the
# tiny configs (configs/test/*) through tools/train.py — the HPM one also with
# teacher_precision=bf16 and ≥ 512 teacher tokens with the oneDNN kernels forced on, the
# combination that crashed there. About a minute on an idle 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}  # as the Makefile
echo "== emulated AVX2-only CPU: $($PY -c 'from videohpm.kernels import chosen_kernels; k = chosen_kernels(); print(k["cpu"]["aten"], "| fp32:", k["fp32"], "| bf16:", k["bf16"])')"
$PY -m pytest -q -p no:cacheprovider tests/kernels/test_cpu.py tests/test_hardware.py \
    "tests/methods/test_hpm.py::test_bf16_teacher_runs_in_fp32_where_bf16_is_only_emulated" \
    "tests/methods/test_hpm.py::test_bf16_teacher_runs_in_bf16_and_ranks_like_the_fp32_teacher"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$PY .ci/avx2_train_steps.py "$tmp" > "$tmp/train.log" 2>&1 || { tail -40 "$tmp/train.log"; exit 1; }
grep -E "^== |^note:" "$tmp/train.log"
grep -m1 "videohpm CPU kernels" "$tmp/train.log"
grep -m1 "bf16 would only be emulated" "$tmp/train.log"
echo "== emulated AVX2-only CPU: all passed"
