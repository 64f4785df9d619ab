"""Shared fixtures of the plugin tests."""

from __future__ import annotations

import pytest

INTERVAL = ("2026-03-31T02:00:00+00:00", "2026-04-01T02:00:00+00:00")


@pytest.fixture(scope="session")
def small_batch(tmp_path_factory, shipped_spec) -> dict:
    """Manifest of a written 2 000-row synthetic batch (train/validation/holdout Parquet)."""
    from cmms_pm.batch import prepare_batch

    return prepare_batch(
        spec=shipped_spec,
        frame=None,
        source="synthetic",
        n_samples=2000,
        target_column="failure_within_7d",
        interval_start=INTERVAL[0],
        interval_end=INTERVAL[1],
        out_uri=str(tmp_path_factory.mktemp("small-batch")),
    )


@pytest.fixture
def register(client):
    """``register(name, run=None) -> version``: register a version of ``name`` from ``run`` (a new run
    in the experiment 'registry-tests' if None) through ``registry.register_version``."""
    from cmms_mlflow.registry import model_registry

    def _register(name: str, run=None) -> str:
        if run is None:
            experiment = client.get_experiment_by_name("registry-tests")
            experiment_id = (
                experiment.experiment_id if experiment else client.create_experiment("registry-tests")
            )
            run = client.create_run(experiment_id)
        version = model_registry.register_version(
            client,
            name=name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            description="test version",
            tags={"data_version": "test"},
        )
        return str(version.version)

    return _register


@pytest.fixture(scope="session")
def registry_lock_uri(postgres_server) -> str:
    """An Airflow connection URI to a database of the suite's PostgreSQL, for the cross-host lock (as
    production points ``cmms_registry_lock`` at the Airflow metadata database every host shares)."""
    postgres_server.create_database("cmms_registry_locks")
    return f"postgres://postgres@127.0.0.1:{postgres_server.port}/cmms_registry_locks"


@pytest.fixture
def cross_host_lock(monkeypatch, registry_lock_uri) -> str:
    """Every registry writer of this test (and the processes it starts) takes the advisory lock."""
    monkeypatch.setenv("AIRFLOW_CONN_CMMS_REGISTRY_LOCK", registry_lock_uri)
    monkeypatch.setenv("CMMS_REGISTRY_LOCK", "postgres")
    return registry_lock_uri
