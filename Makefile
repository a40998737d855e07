# Parley: `make run` starts the service, `make test` runs the suite.
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
METRICS_DIR ?= $(CURDIR)/.metrics
# The harness's packages go into the same .venv, installed only for `make bench`.
BENCH_INSTALLED := $(VENV)/.bench-installed-$(shell cat requirements.txt requirements-dev.txt requirements-bench.txt | cksum | cut -d' ' -f1)
BENCH_ARGS ?=

.PHONY: help install migrate run test bench bench-targets soak lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(INSTALLED): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

install: $(INSTALLED) ## Create the virtual environment and install the pinned packages

migrate: install ## Apply database migrations to DATABASE_URL (default: SQLite file parley.db)
	$(BIN)/alembic upgrade head

run: migrate ## Serve on 127.0.0.1:$PORT (8000) with the workers; DATABASE_URL, REDIS_URL, WEB_CONCURRENCY override
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	trap 'kill 0' EXIT; \
	$(BIN)/python -m workers inbox-pruner & \
	if [ -n "$$REDIS_URL" ]; then $(BIN)/python -m workers presence-sweeper & fi; \
	PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: install ## Run the test suite (SQLite, and PostgreSQL + Redis when reachable)
	$(BIN)/python -m pytest

$(BENCH_INSTALLED): $(INSTALLED) requirements-bench.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	rm -f $(VENV)/.bench-installed-* && touch $@

bench: $(BENCH_INSTALLED) ## Compare short and long polling on PostgreSQL + Redis (BENCH_ARGS="--quick"; bench/README.md)
	$(BIN)/python -m bench compare $(BENCH_ARGS)

bench-targets: $(BENCH_INSTALLED) ## Measure the performance bar on PostgreSQL + Redis (BENCH_ARGS="--quick"; ~6 min)
	$(BIN)/python -m bench targets $(BENCH_ARGS)

SOAK_SCALE ?= 40
soak: install ## Long load and worker-kill run behind haproxy (SOAK_SCALE x the CI traffic; ~5 min at 40)
	SOAK_SCALE=$(SOAK_SCALE) $(BIN)/python -m pytest -p no:cacheprovider -rA \
		tests/faults/test_load.py tests/faults/test_worker_crash.py

lint: install ## Check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Reformat the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) $(METRICS_DIR) parley.db parley.db-wal parley.db-shm
