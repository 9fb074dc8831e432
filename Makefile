# `make serve` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HTTP_ADDR ?= :8080
DATA_DIR ?= trickle.data

.PHONY: serve test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime install, redone when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Runtime + test extras, redone when pyproject.toml changes.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

serve: $(VENV)/.installed
	$(BIN)/trickle serve --server --data-dir $(DATA_DIR) --http-addr $(HTTP_ADDR)

test: $(VENV)/.installed-test
	$(BIN)/ruff check trickle tests examples benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check trickle tests examples benchmarks
	$(BIN)/ruff format --check trickle tests examples benchmarks

bench: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/scheduler.py --jobs 10000 --every 10 --duration 30
	$(BIN)/python benchmarks/api.py --jobs 10000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
