"""The suite's tiers, marked at collection from what each test uses (a pytest plugin, loaded by
tests/conftest.py).

- ``services``: the test needs a program started for it (PostgreSQL, Redis, an S3 server, an MLflow
  tracking server, an Airflow deployment, Chromium). A test is marked when it uses one of
  ``SERVICE_FIXTURES`` (directly or through another fixture); a module that starts one without a
  fixture says so with ``pytestmark = pytest.mark.services``.
- ``installer``: the test runs the install scripts (``pytestmark = pytest.mark.installer``).
- ``slow``: end-to-end DAG runs, marked by hand as before.
- ``fast``: everything else, and what ``make test-fast`` runs: no install, no service, no DAG run.
  A test that sets up an Airflow metadata DB (``airflow_db``, for ``dag.test()``) is not fast either.
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
        if not NOT_FAST_FIXTURES & set(names):
            item.add_marker(pytest.mark.fast)
