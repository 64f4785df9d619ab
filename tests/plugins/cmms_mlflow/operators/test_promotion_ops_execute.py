"""``execute(context)`` of plugins/cmms_mlflow/operators/promotion_ops.py's operators (the
``model_promotion`` DAG) on a real MLflow: resolve a version, then a person's promotion of it."""

from __future__ import annotations

import pytest

from cmms_mlflow.exceptions import PromotionConflictError
from cmms_mlflow.operators import MlflowChangeStageOperator, MlflowResolveVersionOperator
from cmms_mlflow.registry import model_registry


def test_a_person_promotes_a_resolved_version_and_a_retry_changes_nothing(fresh_model, client):
    name, run = fresh_model.name, fresh_model.run
    resolved = run(MlflowResolveVersionOperator(task_id="resolve_version", model_name=name, version=" 1 "))
    assert resolved == {"version": "1", "requested": "1", "champion": None}

    change = MlflowChangeStageOperator(
        task_id="change_stage", model_name=name, resolved=resolved, stage="Production", reason="ready (test)"
    )
    outcome = run(change)
    assert (outcome["stage"], outcome["previous_stage"], outcome["kind"]) == (
        "Production",
        "Staging",
        "manual",
    )
    assert outcome["champion_before"] is None and not outcome["unchanged"]
    assert outcome["actor"] == f"tester via airflow:{fresh_model.spec.training_dag_id}/manual__2026-07-01"
    assert model_registry.aliases_of(client, name) == {"champion": "1"}
    assert client.get_model_version(name, "1").tags["promotion_reason"] == "ready (test)"

    # A retry of the same step (same resolved record, same task): nothing moves again.
    assert run(change)["unchanged"]
    # Nothing was replaced, so there is no "previous" champion to roll back to.
    with pytest.raises(PromotionConflictError):
        run(MlflowResolveVersionOperator(task_id="resolve_version", model_name=name, version="previous"))
