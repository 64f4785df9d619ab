# The two commands a newcomer needs:  make demo   and   make test
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: install test-services setup demo test test-fast lint bench bench-smoke ui-airflow ui-mlflow clean new-model check-specs docs docs-build

install:  ## create .venv with the pinned requirements (uv if possible, else pip)
	scripts/bootstrap.sh

test-services:  ## the programs the tests run (PostgreSQL, Redis...; scripts/test_services.txt), if missing
	scripts/install_test_services.sh

setup: install  ## migrate the Airflow DB and create the project's pool (idempotent)
	$(ENV) scripts/setup_airflow.sh

demo: install  ## run the nightly DAG once, end to end, on the embedded MLflow; print a summary
	$(ENV) python scripts/demo.py

test: install test-services  ## the whole suite (what CI runs)
	$(ENV) python -m pytest

test-fast: install test-services  ## everything but the end-to-end DAG runs
	$(ENV) python -m pytest -m "not slow"

# BENCH_ARGS go to bench/pipeline.py, e.g. make bench BENCH_ARGS=--quick (10k and 100k rows only)
# or BENCH_ARGS="--sizes 100000 --modes a,b,c".
BENCH_ARGS ?=
bench: install test-services  ## benchmarks P1-P5, printed tables with ratios (~30 min; see docs/BENCHMARKS.md)
	$(ENV) python bench/parse_cost.py --runs 7
	$(ENV) python bench/pipeline.py $(BENCH_ARGS)
	$(ENV) python bench/first_model.py
	$(ENV) python bench/timeseries_features.py --assets 1000

bench-smoke: install test-services  ## what CI runs of the benchmarks: tiny sizes, tables printed, no timings asserted
	$(ENV) python -m pytest tests/test_bench_smoke.py

# NAME (the spec and DAG name), SOURCE (a .csv/.parquet file) and TARGET (its label column) are
# required; POSITIVE (default: the minority label), ESTIMATOR (random_forest, hist_gradient_boosting,
# logistic_regression; default by size) and FORCE=1 (replace an existing spec) are optional, e.g.
# make new-model NAME=ai4i SOURCE=.data/incoming/ai4i.csv TARGET="Machine failure" POSITIVE=yes
# Values reach the command through the environment, so spaces and brackets need only make's quoting.
# Raw telemetry and event logs instead (a time-series spec): TELEMETRY and FAILURES (files or folders)
# are required; MAINTENANCE, ALARMS, ASSETS, ENTITY, TIME (default: inferred) and HORIZON (default 48h)
# are optional, e.g. make new-model NAME=fleet TELEMETRY=.data/incoming/fleet/telemetry \
#   FAILURES=.data/incoming/fleet/failures.csv MAINTENANCE=.data/incoming/fleet/maintenance.csv HORIZON=48h
new-model: install  ## write include/models/<NAME>.yaml (or in $CMMS_MODELS_DIR) from a data file or raw logs; print what it inferred
	@$(ENV) python -m cmms_pm.scaffold --name "$$NAME" $${SOURCE:+--source "$$SOURCE"} \
		$${TARGET:+--target "$$TARGET"} $${POSITIVE:+--positive "$$POSITIVE"} \
		$${ESTIMATOR:+--estimator "$$ESTIMATOR"} $${TELEMETRY:+--telemetry "$$TELEMETRY"} \
		$${FAILURES:+--failures "$$FAILURES"} $${MAINTENANCE:+--maintenance "$$MAINTENANCE"} \
		$${ALARMS:+--alarms "$$ALARMS"} $${ASSETS:+--assets "$$ASSETS"} $${ENTITY:+--entity "$$ENTITY"} \
		$${TIME:+--time "$$TIME"} $${HORIZON:+--horizon "$$HORIZON"} \
		$$([ "$${FORCE:-}" = 1 ] && echo --force)

docs: install  ## the documentation site (MkDocs) on http://127.0.0.1:8000, rebuilt as docs/ changes
	$(ENV) NO_MKDOCS_2_WARNING=1 mkdocs serve --dev-addr 127.0.0.1:8000

docs-build: install  ## build the site into site/ strictly (a broken link, anchor or orphan page fails), as the tests do
	$(ENV) NO_MKDOCS_2_WARNING=1 mkdocs build --strict

lint: install
	$(ENV) ruff check dags plugins include tests scripts
	$(ENV) mypy

ui-airflow: setup  ## Airflow UI on http://127.0.0.1:8080 (user admin, password printed)
	$(ENV) airflow standalone

ui-mlflow: install  ## MLflow UI on http://127.0.0.1:5000, same embedded DB as the DAGs
	$(ENV) include/start_mlflow_server.sh

clean:  ## remove local state (Airflow home, embedded MLflow, data); keeps .venv
	rm -rf .airflow .mlflow .data

check-specs: install  ## validate every model spec (include/models or $CMMS_MODELS_DIR); exit 1 naming the broken ones
	@$(ENV) python -m cmms_pm.spec check
