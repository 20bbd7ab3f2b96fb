# The two commands of the README quickstart: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

DEMO_VENV ?= .venv-demo
# Test tools whose pins clash with ghaf's own dependencies (openapi-python-client holds
# typer and httpx back, tritonclient's gevent holds greenlet back): a venv of their own,
# so ghaf's tests run on what users get. Tests drive them in a subprocess.
TOOLS := "openapi-python-client>=0.26" "tritonclient[http]>=2.40"
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed

.PHONY: demo demo-check test lint types pytest pytest-postgres bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Not --quiet: the first install downloads scikit-learn, onnxruntime, pyarrow, duckdb
# and more, and takes a minute or two; pip's lines and progress bars show what it is
# doing meanwhile.
$(STAMP): $(BIN)/python pyproject.toml
	@echo "installing ghaf and its dependencies into $(VENV) (the first time takes a minute or two)"
	$(BIN)/python -m pip install --progress-bar on -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	@echo "installing ghaf with its test extras into $(VENV)"
	$(BIN)/python -m pip install --progress-bar on -e ".[test]"
	touch $@ $(STAMP)

$(TOOLS_STAMP): Makefile
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --progress-bar on $(TOOLS)
	touch $@

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

pytest: $(TEST_STAMP) $(TOOLS_STAMP)
	$(PYTEST)

# The whole suite again with PostgreSQL as the metadata database. Required when CI=true;
# elsewhere it is skipped with a message if no server answers on 127.0.0.1:5432.
pytest-postgres: $(TEST_STAMP) $(TOOLS_STAMP)
	$(PYTEST) --db=postgresql

test: lint types demo-check pytest pytest-postgres

bench: $(STAMP)
	$(BIN)/python bench/api_overhead.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(TOOLS_VENV) .ghaf .mypy_cache .ruff_cache .pytest_cache
