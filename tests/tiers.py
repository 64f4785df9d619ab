"""The suite's tiers, marked at collection from what each test uses (a pytest plugin, loaded by
tests/conftest.py).

- ``services``: the test needs a program started for it (PostgreSQL, Redis, an S3 server, an MLflow
  tracking server, an Airflow deployment, Chromium). A test is marked when it uses one of
  ``SERVICE_FIXTURES`` (directly or through another fixture); a module that starts one without a
  fixture says so with ``pytestmark = pytest.mark.services``.
- ``installer``: the test runs the install scripts (``pytestmark = pytest.mark.installer``).
- ``slow``: end-to-end DAG runs, marked by hand as before.
- ``fast``: what ``make test-fast`` runs: no install, no service, no DAG run. Not fast either: a test
  that sets up an Airflow metadata DB (``airflow_db``, for ``dag.test()``), and the modules of
  ``HEAVY_MODULES`` (seconds of training each); the operators' ``execute`` tests are fast by design.
"""

from __future__ import annotations

import pytest

#: Fixtures that start a program (or need one started): their users are ``services`` tests.
SERVICE_FIXTURES = {
    "postgres_server": "PostgreSQL (initdb + pg_ctl)",
    "start_airflow": "an Airflow deployment (api-server, scheduler, dag-processor)",
    "airflow_cluster": "the scheduler tests' Airflow deployment",
    "s3_server": "moto's S3 server",
    "s3_endpoint": "moto's S3 server",
    "moto_s3": "moto's S3 server",
    "redis_url": "redis-server",
    "mlflow_server_started": "include/start_mlflow_server.sh",
    "browser": "Chromium",
}
#: Fixtures that are not services but cost a migration (``airflow db migrate``) or a DAG run.
NOT_FAST_FIXTURES = {"airflow_db"}
#: Modules (by file name, which survives a move between folders) that need no service but whose tests
#: take more than ~5 s together: they train many models, start processes or parse every DAG. Seconds:
#: their total in one run on the 2-core CI machine under load (2026-12-07). The fast tier keeps only
#: cheap tests, so that `make test-fast` stays well under a minute; `make test` runs these too.
HEAVY_MODULES = {
    "test_cmms_pm_training.py": 208,
    "test_model_loading.py": 135,
    "test_bench_smoke.py": 108,
    "test_cmms_pm_calibration.py": 108,
    "test_cmms_pm_timeseries.py": 104,
    "test_decision_operators.py": 97,
    "test_pruning.py": 92,
    "test_operator_runs.py": 82,  # their fast counterparts: tests/plugins/cmms_mlflow/operators/
    "test_cmms_pm_boosting.py": 52,
    "test_registry_concurrency.py": 52,
    "test_serving_cache.py": 50,
    "test_cmms_pm_explain.py": 46,
    "test_plugin.py": 32,
    "test_tuning_study.py": 29,
    "test_dag_integrity.py": 27,
    "test_promotion.py": 25,
    "test_registry_scaling.py": 15,
    "test_serving.py": 15,
    "test_model_overview.py": 14,
    "test_mlflow_server.py": 13,
    "test_cmms_pm_scaffold.py": 12,
    "test_docs.py": 11,
    "test_source_access.py": 10,
    "test_routes.py": 9,
    "test_locks.py": 8,
    "test_training_run.py": 8,
    "test_types.py": 13,  # a cold mypy run (CPU seconds; ~1 s warm): `make lint` runs mypy too
    "test_cmms_pm_plots.py": 5,
    "test_kubernetes.py": 4,
}
TIER_MARKERS = ("services", "installer", "slow")


def service_of(fixturenames) -> str | None:
    """The first service fixture among ``fixturenames`` (None if the test uses none)."""
    return next((name for name in fixturenames if name in SERVICE_FIXTURES), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if service_of(names) and item.get_closest_marker("services") is None:
            item.add_marker(pytest.mark.services)
        if any(item.get_closest_marker(marker) for marker in TIER_MARKERS):
            continue
        if not NOT_FAST_FIXTURES & set(names) and item.path.name not in HEAVY_MODULES:
            item.add_marker(pytest.mark.fast)
