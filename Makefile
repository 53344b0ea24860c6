# One command each: `make demo` (embedded default, nothing to start) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench chaos clean

$(BIN)/tasker: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/tasker

setup: $(BIN)/tasker

demo: setup
	$(BIN)/python -m tasker.demo

test: setup
	$(BIN)/ruff check tasker tests bench
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info demo-run
