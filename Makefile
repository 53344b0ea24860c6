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
	$(BIN)/mypy
	$(BIN)/python -m pytest

PEERS := .venv-peers/bin

# The peers (procrastinate, Celery) live in their own venv: never tasker's dependencies.
$(PEERS)/celery:
	$(PY) -m venv .venv-peers
	$(PEERS)/pip install -q 'procrastinate>=3,<4' 'celery>=5.3,<6' 'sqlalchemy>=2,<2.1' 'psycopg[binary]>=3.1,<4'

bench: setup $(PEERS)/celery
	$(BIN)/python -m bench.run

chaos: setup
	$(BIN)/python -m pytest tests/chaos -s

clean:
	rm -rf $(VENV) .venv-peers .pytest_cache *.egg-info demo-run
