# From a fresh clone: `make test` and `make run` need nothing but python3 (>= 3.11).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= var/demo
SCALE ?= default

.PHONY: venv test check format seed legacy run schema clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

## the whole suite: static checks, then every test
test: check
	$(BIN)/pytest

## ruff (lint and format) and mypy --strict on the product code
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## generate the demo estate (once; `make seed SCALE=large` for benchmarks)
seed: $(STAMP)
	$(BIN)/commerce-gateway seed --if-absent --data-dir $(DATA_DIR) --scale $(SCALE)

## start the simulated legacy systems in the foreground (Ctrl-C stops them)
legacy: seed
	$(BIN)/commerce-gateway legacy --data-dir $(DATA_DIR)

## seed once, start the simulated estate, serve the gateway on http://127.0.0.1:$${PORT:-8000}/graphql
run: seed
	$(BIN)/commerce-gateway serve --demo --data-dir $(DATA_DIR)

## write schema.graphql from the code
schema: $(STAMP)
	$(BIN)/commerce-gateway schema export

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
