#!/usr/bin/env bash
# The device check in one command, for a bare GPU machine without network (make device-check):
# installs what the machine lacks from device_wheels/ (made here by `make device-wheels`), then
# runs tools/device_check.py run, which writes device_check.json and device_check.log under $OUT.
#
#   bash tools/device_check.sh                    # GPU: install, then every step (--budget-s 400)
#   bash tools/device_check.sh --device cpu --tiny   # the CPU dry run: installs nothing
#
# Any other arguments go to `tools/device_check.py run`. PYTHON picks the interpreter (python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-outputs/device_check}
install=1
prev=""
for a in "$@"; do
    if [[ "$a" == "--device=cpu" || ( "$prev" == "--device" && "$a" == "cpu" ) ]]; then install=0; fi
    if [[ "$prev" == "--out" ]]; then OUT_DIR=$a; fi
    prev=$a
done
args=("$@")
if ((install)); then
    mkdir -p "$OUT_DIR"
    log="$OUT_DIR/device_check.log"
    if [[ ! -f device_wheels/requirements.txt ]]; then
        echo "device_wheels/requirements.txt is missing: run 'make device-wheels' where PyPI is reachable" >&2
        exit 2
    fi
    echo "===== install: device_wheels/ (no network)" | tee "$log"
    export PIP_BREAK_SYSTEM_PACKAGES=1  # a system interpreter (PEP 668) is the machine's only one
    # resolved against what the machine has (its torch, numpy, ...); if that fails (a dependency
    # the machine lacks and the set does not hold), every wheel of the set without resolving
    if ! "$PY" -m pip install --no-index --find-links device_wheels -r device_wheels/requirements.txt >>"$log" 2>&1; then
        echo "===== install: resolving failed; installing every wheel of device_wheels/ with --no-deps" | tee -a "$log"
        "$PY" -m pip install --no-index --no-deps device_wheels/*.whl >>"$log" 2>&1 \
            || { tail -30 "$log" >&2; echo "installing device_wheels/ failed (log: $log)" >&2; exit 1; }
    fi
    # the steps find the checkout on PYTHONPATH anyway: an editable install that fails is only noted
    "$PY" -m pip install --no-index --find-links device_wheels --no-deps --no-build-isolation -e . >>"$log" 2>&1 \
        || echo "===== install: the editable install of the project failed; running from the checkout" | tee -a "$log"
    args+=(--keep-log)
fi
exec "$PY" tools/device_check.py run --out "$OUT_DIR" "${args[@]}"
