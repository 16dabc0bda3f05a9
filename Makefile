# Two commands for a new user: `make demo` and `make test`. Each creates .venv when missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= var/demo
PORT ?= 3000
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
# pytest-xdist workers: the suite is mostly one busy core (a train, a server) at a time, so two workers use
# CI's two cores; tests of one module stay on one worker (their module fixtures are built once)
WORKERS ?= 2
XDIST := -n $(WORKERS) --dist loadscope

.PHONY: demo test test-fast bench lint mlflow clean install

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/personalise demo --data $(DATA) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow and not realdata and not server and not spark"

bench: $(STAMP)
	$(BIN)/python bench/run.py --out bench/RESULTS.md

lint: $(STAMP)
	$(BIN)/ruff check features models training serving tests personalise_cli.py batch_cli.py triggers_cli.py bench tools
	$(BIN)/mypy features models training serving personalise_cli.py batch_cli.py triggers_cli.py
	$(BIN)/python tools/long_functions.py

mlflow: $(STAMP)
	$(BIN)/mlflow server --host 127.0.0.1 --port 5000 \
	  --backend-store-uri sqlite:///$(abspath $(DATA))/mlflow/mlflow.db \
	  --default-artifact-root $(abspath $(DATA))/mlflow/artifacts

clean:
	rm -rf var .pytest_cache
