# Two entry points: `make demo` (the main job) and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first and pinned: a bare `torch` requirement resolved first would pull GBs of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
OUT ?= results/planted

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test bench install browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,cluster]"
	touch $(STAMP)

install: $(STAMP)

# the main job: install (or train) the model organisms, then diagnose every planted task.
# PAD and CAD read their prompts from the capture; few-shot and chain-of-thought run new
# inputs (4-9x the task's tokens) and are left to `diagnose run TASK` (STRATEGY=... here)
STRATEGY ?= pad,cad
demo: $(STAMP)
	$(PY) -m diagnose.cli organisms build
	$(PY) -m diagnose.cli run --suite planted --strategy $(STRATEGY) --out $(OUT)

# Debian's chromium for the report screenshot test (skipped, with a reason, when absent)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "chromium not installed: the report screenshot test will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest -q --durations=15 tests

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m experiments.bench.score_bench

clean:
	rm -rf $(VENV) results
