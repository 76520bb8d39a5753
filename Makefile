# `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test quick bench lint format clean

$(STAMP): pyproject.toml constraints.txt plugins/uqeval-torch/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,cluster]" -e "plugins/uqeval-torch[examples]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/uqeval demo --out demo-output

# Everything, on two processes (pytest-xdist): the suite's torch training and end-to-end
# runs take about 22 minutes this way on 2 cores, against about 35 one after the other.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2

# The quick loop: no torch, no end-to-end runs, no command line in a subprocess, on every core.
quick: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not cli" -n auto

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_decompose.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_score.py

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache .hypothesis
