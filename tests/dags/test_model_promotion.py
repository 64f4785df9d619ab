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
    from cmms_mlflow.registry import model_registry

    found = client.get_experiment_by_name("promotion-dag-tests")
    experiment_id = found.experiment_id if found else client.create_experiment("promotion-dag-tests")
    run = client.create_run(experiment_id)
    return str(
        model_registry.register_version(
            client, name=name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            description="test version", tags={},
        ).version
    )  # fmt: skip


def _run(dag, minute: int, **conf):
    """One run with a complete conf (dag.test keeps keys between calls otherwise)."""
    full = {"version": "previous", "stage": "Production", "reason": "test", "override_approval": False} | conf
    return dag.test(logical_date=datetime(2026, 11, 26, 10, minute, tzinfo=UTC), run_conf=full)


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _registry(client, name):
    versions = {str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    return versions, {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def test_rollback_after_two_promotions_restores_the_previous_champion(dag, mlflow_conn, client, model_name):
    from cmms_mlflow.registry import model_registry

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
    model_registry.check_invariants(client, model_name)
    tags = client.get_model_version(model_name, v1).tags
    assert tags["promotion_kind"] == "rollback"
    assert tags["promotion_reason"] == "v2 floods the planners"
    assert tags["replaced_version"] == v2
    assert tags["promoted_at"] == rollback.run_after.isoformat()
    assert tags["promoted_by"].endswith(f"via airflow:model_promotion/{rollback.run_id}")
    assert client.get_model_version(model_name, v2).tags["replaced_by_version"] == v1
    assert client.get_model_version(model_name, v2).tags["promotion_kind"] == "manual"
    # The tags above say only what happened last; the history keeps every event.
    from cmms_mlflow.registry import history

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


def _gated_spec(folder: Path, shipped_spec, model_name: str, approvers: list[str]) -> None:
    """A spec that owns ``model_name`` and requires approval, the only spec the run sees."""
    import yaml

    raw = {k: v for k, v in shipped_spec.to_dict().items() if k != "__path__"}
    raw.update(name="pm_gated", registered_model=model_name)
    raw["approval"] = {"required": True, "approvers": approvers, "timeout_hours": 24}
    folder.mkdir(exist_ok=True)
    (folder / "pm_gated.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _try_numbers(dag_run) -> dict[str, int]:
    return {ti.task_id: ti.try_number for ti in dag_run.get_task_instances()}


def test_a_model_whose_spec_requires_approval_is_promoted_here_only_by_an_approver(
    dag, mlflow_conn, client, model_name, shipped_spec, tmp_path, monkeypatch, capfd
):
    """The issue's bypass, through this DAG: anyone who may trigger it moved a gated model to Production,
    even a version its approver had rejected."""
    from cmms_mlflow.registry import history, model_registry

    models = tmp_path / "models"
    monkeypatch.setenv("CMMS_MODELS_DIR", str(models))
    v1, v2 = _register(client, model_name), _register(client, model_name)

    # dag.test()'s triggering user is "dag_test": not one of the spec's approvers.
    _gated_spec(models, shipped_spec, model_name, approvers=["jdoe"])
    capfd.readouterr()
    refused = _run(dag, 10, model_name=model_name, version=v1, reason="go live without jdoe")
    assert str(refused.state) == "failed" and _states(refused)["change_stage"] == "failed"
    assert _try_numbers(refused)["change_stage"] == 1  # not retried: a retry cannot make them an approver
    logged = capfd.readouterr()
    assert "ApprovalAuthorityError" in logged.out + logged.err
    assert "spec 'pm_gated' requires approval" in logged.out + logged.err
    assert _registry(client, model_name) == ({v1: "None", v2: "None"}, {})

    # The approver promotes; a version the approval step rejected needs their explicit override.
    _gated_spec(models, shipped_spec, model_name, approvers=["jdoe", "dag_test"])
    assert str(_run(dag, 11, model_name=model_name, version=v1, reason="approved by hand").state) == "success"
    model_registry.set_tags(client, model_name, v2, {"approval_status": "rejected", "approval_by": "jdoe"})
    refused = _run(dag, 12, model_name=model_name, version=v2, reason="promote the rejected one")
    assert str(refused.state) == "failed" and _try_numbers(refused)["change_stage"] == 1
    assert _registry(client, model_name)[1] == {"champion": v1}
    overridden = _run(
        dag,
        13,
        model_name=model_name,
        version=v2,
        reason="recall re-checked on May data",
        override_approval=True,
    )
    assert str(overridden.state) == "success", _states(overridden)
    assert _registry(client, model_name)[1] == {"champion": v2, "previous_champion": v1}
    tags = client.get_model_version(model_name, v2).tags
    assert (tags["approval_status"], tags["approval_override"]) == ("rejected", "rejected")
    assert tags["approval_override_by"].startswith("dag_test via airflow:model_promotion/")
    assert tags["approval_override_reason"] == "recall re-checked on May data"
    (event,) = history.read(client, model_name, limit=1)
    assert event["override"]["of"] == "rejected" and event["override"]["approval_by"] == "jdoe"
