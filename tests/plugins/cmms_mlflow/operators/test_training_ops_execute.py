"""``execute(context)`` of plugins/cmms_mlflow/operators/training_ops.py's operators on a real MLflow:
train, register, stage, validate, promote (the session pipeline, tests/.../operators/conftest.py),
then reject and report; each again where a retry must change nothing."""

from __future__ import annotations

from cmms_mlflow.operators import (
    MlflowModelReportOperator,
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowRejectModelOperator,
    MlflowTrainModelOperator,
    MlflowTransitionModelOperator,
    MlflowValidateModelOperator,
)
from cmms_mlflow.registry import model_registry


def _validate(fresh, pipeline, *, day: int = 1):
    manifest, checks = pipeline.results["extract_data"], pipeline.results["validate_data"]
    return fresh.run(
        MlflowValidateModelOperator(
            task_id="validate_model", spec=fresh.spec.to_dict(), model_name=fresh.name, version=fresh.version,
            holdout_uri=manifest["splits"]["holdout"]["uri"],
            holdout_sha256=manifest["splits"]["holdout"]["sha256"], checks=checks,
        ),
        day,
    )  # fmt: skip


def test_train_model_logs_a_run_with_metrics_a_threshold_and_a_loadable_model(pipeline, client):
    trained = pipeline.results["train_model"]
    assert MlflowTrainModelOperator.__name__ == "MlflowTrainModelOperator"
    assert trained["model_uri"].startswith("models:/m-")
    assert 0 < trained["metrics"]["f1"] <= 1 and 0.5 < trained["metrics"]["roc_auc"] <= 1
    assert 0 < trained["threshold"] < 1
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_spec"] == "ai4i"
    assert run.data.tags["airflow.task_id"] == "train_model"
    assert run.data.params["split_strategy"] == "random"
    assert run.data.metrics["decision_threshold"] == trained["threshold"]


def test_register_and_stage_make_one_version_and_a_retry_changes_nothing(pipeline, run, client):
    name, version = pipeline.model_name, pipeline.version
    assert pipeline.results["register_model"] == {
        "name": name, "version": version, "run_id": pipeline.results["train_model"]["run_id"],
    }  # fmt: skip
    again = run(
        MlflowRegisterModelOperator(
            task_id="register_model", model_name=name, training=pipeline.results["train_model"],
            spec=pipeline.spec.to_dict(),
        )
    )  # fmt: skip
    assert again == pipeline.results["register_model"]  # the run's version, not a second one
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == [version]
    # Staged on day 1, promoted since: staging it again (a retry of stage_model) leaves it the champion.
    assert pipeline.results["stage_model"]
    run(
        MlflowTransitionModelOperator(
            task_id="stage_model", model_name=name, version=version, stage="Staging",
            from_stages=("None", "Staging"), spec=pipeline.spec.to_dict(),
        )
    )  # fmt: skip
    assert client.get_model_version(name, version).current_stage == "Production"


def test_validate_and_promote_make_the_version_the_champion_and_a_rerun_keeps_it(pipeline, run, client):
    name, version = pipeline.model_name, pipeline.version
    record = pipeline.results["validate_model"]
    assert record["decision"] == "promote" and record["challenger_version"] == version
    assert record["champion_version"] is None and record["thresholds"]["metric"] == "f1"
    assert pipeline.results["promote_model"]["decision"] == "promote"
    assert model_registry.aliases_of(client, name) == {"champion": version}
    assert client.get_model_version(name, version).current_stage == "Production"

    again = run(
        MlflowPromoteModelOperator(
            task_id="promote_model", model_name=name, validation=record, spec=pipeline.spec.to_dict()
        )
    )
    assert again["version"] == version and again["decision"] == "promote"
    assert model_registry.aliases_of(client, name) == {"champion": version}


def test_reject_archives_the_challenger_with_the_reason(pipeline, fresh_model, client):
    record = {**_validate(fresh_model, pipeline), "decision": "reject", "reason": "F1 below the gate (test)"}
    outcome = fresh_model.run(
        MlflowRejectModelOperator(
            task_id="reject_model",
            model_name=fresh_model.name,
            validation=record,
            spec=fresh_model.spec.to_dict(),
        )
    )
    assert outcome["decision"] == "reject"
    mv = client.get_model_version(fresh_model.name, fresh_model.version)
    assert mv.current_stage == "Archived"
    assert mv.tags["rejection_reason"] == "F1 below the gate (test)"
    assert model_registry.aliases_of(client, fresh_model.name) == {}


def test_model_report_summarizes_what_the_run_did(pipeline, run):
    summary = run(
        MlflowModelReportOperator(
            task_id="report", model_name=pipeline.model_name, validation=pipeline.results["validate_model"]
        )
    )
    assert summary["decision"] == "promoted" and summary["stage"] == "Production"
    assert summary["version"] == pipeline.version and summary["aliases"] == ["champion"]
    assert summary["current_champion_version"] == pipeline.version
    assert f"{pipeline.model_name}" in summary["text"]
