"""model_promotion under ``dag.test()``: manual promotions, then a one-click rollback.

The versions are registrations without a model behind them: this DAG only moves registry state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_DIR / "dags")).get_dag("model_promotion")


def _register(client, name: str) -> str:
    from cmms_mlflow import registry

    found = client.get_experiment_by_name("promotion-dag-tests")
    experiment_id = found.experiment_id if found else client.create_experiment("promotion-dag-tests")
    run = client.create_run(experiment_id)
    return str(
        registry.register_version(
            client, name=name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            description="test version", tags={},
        ).version
    )  # fmt: skip


def _run(dag, minute: int, **conf):
    """One run with a complete conf (dag.test keeps keys between calls otherwise)."""
    full = {"version": "previous", "stage": "Production", "reason": "test"} | conf
    return dag.test(logical_date=datetime(2026, 11, 26, 10, minute, tzinfo=UTC), run_conf=full)


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _registry(client, name):
    versions = {str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    return versions, {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def test_rollback_after_two_promotions_restores_the_previous_champion(dag, mlflow_conn, client, model_name):
    from cmms_mlflow import registry

    v1, v2 = _register(client, model_name), _register(client, model_name)
    first = _run(dag, 1, model_name=model_name, version=v1, reason="first model goes live")
    assert str(first.state) == "success", _states(first)
    second = _run(dag, 2, model_name=model_name, version=v2, reason="v2 has better recall")
    assert str(second.state) == "success", _states(second)
    assert _registry(client, model_name) == (
        {v1: "Archived", v2: "Production"},
        {"champion": v2, "previous_champion": v1},
    )

    rollback = _run(dag, 3, model_name=model_name, version="previous", reason="v2 floods the planners")
    assert str(rollback.state) == "success", _states(rollback)
    assert _registry(client, model_name) == (
        {v1: "Production", v2: "Archived"},
        {"champion": v1, "previous_champion": v2},
    )
    registry.check_invariants(client, model_name)
    tags = client.get_model_version(model_name, v1).tags
    assert tags["promotion_kind"] == "rollback"
    assert tags["promotion_reason"] == "v2 floods the planners"
    assert tags["replaced_version"] == v2
    assert tags["promoted_at"] == rollback.run_after.isoformat()
    assert tags["promoted_by"].endswith(f"via airflow:model_promotion/{rollback.run_id}")
    assert client.get_model_version(model_name, v2).tags["replaced_by_version"] == v1
    assert client.get_model_version(model_name, v2).tags["promotion_kind"] == "manual"
    # The tags above say only what happened last; the history keeps every event.
    from cmms_mlflow import history

    events = history.read(client, model_name)
    assert [(e["type"], e["version"], e["champion_before"], e["reason"]) for e in events] == [
        ("rollback", v1, v2, "v2 floods the planners"),
        ("promotion", v2, v1, "v2 has better recall"),
        ("promotion", v1, None, "first model goes live"),
    ]
    assert [e["airflow"]["run_id"] for e in events] == [rollback.run_id, second.run_id, first.run_id]
    assert [e["seq"] for e in events] == [3, 2, 1]


def test_archiving_the_champion_fails_the_run_and_changes_nothing(dag, mlflow_conn, client, model_name):
    v1 = _register(client, model_name)
    assert str(_run(dag, 4, model_name=model_name, version=v1).state) == "success"
    refused = _run(dag, 5, model_name=model_name, version=v1, stage="Archived", reason="retire it")
    assert str(refused.state) == "failed"
    assert _states(refused)["change_stage"] == "failed"
    assert _registry(client, model_name) == ({v1: "Production"}, {"champion": v1})
