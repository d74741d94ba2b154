# videohpm — the two commands of the README.
#   make test   sets up .venv (if missing) and runs the test suite
#   make demo   sets up .venv (if missing) and runs the demo job on the bundled data set
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# DeepSpeed JIT-builds its CPU comm op (shm) on the first multi-rank run: build it in the project's
# own cache, not the shared ~/.cache/torch_extensions, where another ninja (system vs venv) treats
# the build log as invalid and rebuilds it every time (issue 12).
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions
# ... built by one ninja: the venv's (the system's older one rejects its build log and rebuilds)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: test test-all demo demo-ablation benchmark-ssl setup clean

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel setuptools
	$(PIP) install -e '.[dev]'
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

clean:
	rm -rf $(VENV) outputs
