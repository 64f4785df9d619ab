#!/usr/bin/env bash
# Prepare an Airflow metadata DB for this project's DAGs. Idempotent; run after every upgrade.
#   source scripts/env.sh && scripts/setup_airflow.sh
set -euo pipefail
airflow db migrate
# Promotions from different DAG runs (nightly, backfills, manual) go through one slot.
airflow pools set mlflow_promotion 1 "Serializes MLflow model promotions and rejections (one at a time)"
