# The two commands of the README quickstart: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

DEMO_VENV ?= .venv-demo

.PHONY: demo demo-check test lint types pytest pytest-postgres bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/ghaf demo

# The README's first command, proven from a venv that holds only what `make demo`
# installs (never the test extras), on a fresh platform home: a dependency that only the
# test extras bring fails here instead of on a new user's machine.
demo-check:
	GHAF_HOME="$$(mktemp -d)" $(MAKE) --no-print-directory VENV=$(DEMO_VENV) demo

lint: $(TEST_STAMP)
	$(BIN)/ruff check ghaf tests bench
	$(BIN)/ruff format --check ghaf tests bench
	$(BIN)/lint-imports

types: $(TEST_STAMP)
	$(BIN)/mypy ghaf

# One test worker per core (pytest-xdist): each worker starts its own platform.
PYTEST := $(BIN)/pytest -q -n auto

pytest: $(TEST_STAMP)
	$(PYTEST)

# The whole suite again with PostgreSQL as the metadata database. Required when CI=true;
# elsewhere it is skipped with a message if no server answers on 127.0.0.1:5432.
pytest-postgres: $(TEST_STAMP)
	$(PYTEST) --db=postgresql

test: lint types demo-check pytest pytest-postgres

bench: $(STAMP)
	$(BIN)/python bench/api_overhead.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) .ghaf .mypy_cache .ruff_cache .pytest_cache
