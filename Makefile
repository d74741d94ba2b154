# videohpm — the two commands of the README.
#   make test   sets up .venv (if missing) and runs the test suite
#   make demo   sets up .venv (if missing) and runs the demo job on the bundled data set
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# DeepSpeed JIT-builds its CPU comm op (shm): `setup` builds it once into the venv's own cache, the
# one every entry point uses (videohpm.distributed.extension_cache_dir), not the shared
# ~/.cache/torch_extensions, where another ninja (system vs venv) takes the build log as invalid.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions
# ... built by one ninja: the venv's (the system's older one rejects its build log and rebuilds)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: test test-all demo demo-ablation benchmark-ssl setup clean device-wheels device-check

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel setuptools
	$(PIP) install -e '.[dev]'
	$(PY) -c 'from videohpm.distributed import build_comm_op; build_comm_op()'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_ARGS)

demo-ablation: $(STAMP)
	$(PY) tools/ablation.py $(ABLATION_ARGS)

# the data-efficiency benchmark (docs/EVIDENCE.md): ≤ 2 h on 2 cores
benchmark-ssl: $(STAMP)
	$(PY) tools/ssl_benchmark.py $(SSL_ARGS)

# the wheels a bare GPU machine lacks (Python 3.12, manylinux x86_64), for `make device-check` there;
# needs PyPI; checks that they and the working tree fit one device call (docs/BENCHMARKS.md "GPU")
device-wheels: $(STAMP)
	$(PY) tools/device_check.py wheels --dest device_wheels

# on the GPU machine (no network): install from device_wheels/, run the check, JSON + log under $$OUT
device-check:
	bash tools/device_check.sh $(DEVICE_CHECK_ARGS)

clean:
	rm -rf $(VENV) outputs
