# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-pythons lint bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[console,embedded,tracing,dev]'
	touch $(STAMP)

venv: $(STAMP)

## Set up and run the main job on the embedded default (no Docker, no external Redis).
demo: $(STAMP)
	$(BIN)/python -m mimir.core.demo

## Set up and run every test (installs Debian packages and starts services when run as root).
test: $(STAMP) lint
	bash scripts/system-deps.sh
	$(BIN)/python -m pytest

## The fast suite only (no Docker, no bundle build, no wheel install).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not docker and not bundle and not wheel"

## The core, queue, worker and server tests on Python 3.12 and 3.13 (scripts/test-pythons.sh).
PYTHONS ?= 3.12 3.13
test-pythons:
	bash scripts/test-pythons.sh $(PYTHONS)

## ruff (lint and format), mypy on every package, the import-linter layer contracts.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	bash scripts/mypy.sh $(BIN)/mypy
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
