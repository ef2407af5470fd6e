# tianyan — `make help` lists the targets. `make demo` runs the demo, `make test` the tests;
# each does all the set-up on a fresh machine: .venv, Python packages, Kafka jars,
# PostgreSQL with TimescaleDB, the schema and the topics.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TIANYAN := $(BIN)/tianyan

.PHONY: help venv stack setup demo lint test test-fast chaos down clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "tianyan needs Python 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed ## Create .venv and install tianyan with its pinned dependencies

stack: venv ## Start the local Kafka and TimescaleDB (installs them the first time)
	$(TIANYAN) stack up

setup: stack ## Start the stack, apply migrations, create the topics
	$(TIANYAN) db migrate
	$(TIANYAN) topics ensure

demo: setup ## Run the demo: the whole pipeline on a simulated slice of the city
	$(TIANYAN) demo

lint: venv ## ruff (lint and format), mypy, and the import floors (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The tests run in two processes (pytest-xdist), a module's tests in one of them; then, alone,
# those marked exclusive (they stop or reconfigure a service the others share).
PARALLEL := -n 2 --dist loadscope

test: setup lint ## Everything CI runs: set-up, lint, type checks, the tests on the real stack
	$(BIN)/pytest $(PARALLEL) -m "not exclusive"
	$(BIN)/pytest -m exclusive

test-fast: setup lint ## The inner loop: the tests not marked slow (no outages, no whole pipelines)
	$(BIN)/pytest $(PARALLEL) -m "not slow and not exclusive"
	$(BIN)/pytest -m "exclusive and not slow"

chaos: setup ## Fault injection at full length: a 6-minute broker outage, a receiver failing 11 minutes
	TIANYAN_CHAOS_FULL=1 $(BIN)/pytest --timeout=1800 tests/test_chaos.py

down: venv ## Stop the local stack (data kept under var/)
	$(TIANYAN) stack down

clean: down ## Stop the stack and delete var/ (all local data) and .venv
	rm -rf var $(VENV)
