# Two commands matter: `make demo` (set up + run the platform on local defaults) and
# `make test` (set up + lint + tests). Everything else is a building block.
PY_SYSTEM ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= .demo

.PHONY: help setup lint typecheck test test-fast demo proto bench-backfill bench-engine bench-emulator bench-extraction bench-latency bench-dbt-overhead bench-scale-statements bench-scale clean

help:
	@echo "make demo    set up the environment and run the platform on local defaults"
	@echo "make test    set up the environment, lint, and run every test"

$(PY):
	$(PY_SYSTEM) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/sqlfluff lint dbt

# The type check (config in pyproject.toml), part of `lint`: ~1 min cold, seconds once
# .mypy_cache holds the unchanged modules.
typecheck: setup
	$(VENV)/bin/mypy sync_engine resources sfdc_assets sensors sfdc_emulator scripts bench

test: lint
	$(PY) -m pytest -n 2 --dist loadfile

test-fast: setup
	$(PY) -m pytest -x -q -m "not slow"

demo: setup
	$(PY) scripts/demo.py --dir $(DEMO_DIR)

# Regenerate the Pub/Sub gRPC code from resources/salesforce/pubsub_api/pubsub_api.proto (committed).
proto: setup
	$(PY) -m resources.salesforce.pubsub_api.generate

bench-emulator: setup
	$(PY) -m bench.emulator

bench-extraction: setup
	$(PY) -m bench.extraction

bench-latency: setup
	$(PY) -m bench.latency

bench-engine: setup
	$(PY) -m bench.engine

bench-dbt-overhead: setup
	$(PY) -m bench.dbt_overhead

# Rows scanned per recurring statement at 1M vs 10M rows (~5 min), then the statements
# per run on the Snowflake path through fakesnow, then the statements per dbt refresh (dbt-snowflake
# on fakesnow, ~1 min); all write docs/performance.md.
bench-scale-statements: setup
	$(PY) -m bench.scale_statements
	$(PY) -m bench.snowflake_statements
	$(PY) -m bench.dbt_snowflake_statements
	$(PY) -m bench.lookup_indexes

# The platform on an org of production shape under production rates (bench/scale.py:
# ~40 min of bootstrap, 20 min of traffic, up to 30 min of drain), after the statements.
bench-scale: bench-scale-statements
	$(PY) -m bench.scale

# Also measures Postgres run storage when BENCH_POSTGRES_URL names a server (docs/operations.md).
# BENCH_TASKS: the Task rows (default 1M; the issue's second size is 10000000).
bench-backfill: setup
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	$(PY) -m bench.backfill --tasks $(or $(BENCH_TASKS),1000000) $(if $(BENCH_POSTGRES_URL),--postgres-url $(BENCH_POSTGRES_URL))

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache .mypy_cache
