# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m unidb.demo

# lint-imports first: the layer contract in pyproject.toml ([tool.importlinter]).
test: $(STAMP)
	$(BIN)/lint-imports --no-logo && $(BIN)/python -m pytest -q -x --timeout=900

# Benchmark-only peers (faiss, hnswlib, bm25s) live in the `bench` extra.
$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(VENV)/.bench

bench: $(VENV)/.bench
	@echo "run e.g. $(BIN)/python bench/ingest_exact.py"

clean:
	rm -rf $(VENV) build *.egg-info
