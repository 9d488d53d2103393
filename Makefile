# tagrelay: `make run` runs the whole pipeline locally, `make test` passes the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test unit integration lint bench bench-quick clean dev-tools

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/tagrelay run

# Two workers (each test file stays on one; each worker starts its own local stack): the suite
# mostly waits on emulators and processes, so two halve the wall time on 2 cores.
test: $(STAMP) lint
	$(BIN)/pytest -q -n 2 --dist loadfile

unit: $(STAMP)
	$(BIN)/pytest -q -n 2 tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

# Checkers from Debian's packages: shellcheck for deploy.sh (apt-get update first on a fresh image).
dev-tools:
	@command -v shellcheck >/dev/null || apt-get install -y shellcheck || (apt-get update && apt-get install -y shellcheck)

lint: $(STAMP) dev-tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	shellcheck deploy.sh

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .tagrelay outbox .mypy_cache .pytest_cache .ruff_cache
