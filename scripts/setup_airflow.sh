#!/usr/bin/env bash
# Prepare an Airflow metadata DB for this project's DAGs. Idempotent; run after every upgrade
# and after adding a model spec (each model gets its own one-slot promotion pool).
#   source scripts/env.sh && scripts/setup_airflow.sh
set -euo pipefail
airflow db migrate
pools="$(mktemp)"
trap 'rm -f "$pools"' EXIT
# Pools from the specs (python -m cmms_pm.spec pools); a broken spec still gets the others' pools.
python -m cmms_pm.spec pools > "$pools" || true
airflow pools import "$pools"
