"""What the Models page reads (cmms_mlflow.model_overview) against a real MLflow on SQLite."""

from __future__ import annotations

import pytest

from cmms_mlflow import registry
from cmms_mlflow.hooks import MlflowHook


@pytest.fixture
def hook(mlflow_conn):
    return MlflowHook()


def test_summary_names_champion_challenger_previous_champion_and_decisions(
    client, register, model_name, hook
):
    from cmms_mlflow.model_overview import model_summary

    v1, v2, v3 = register(model_name), register(model_name), register(model_name)
    registry.transition(client, model_name, v1, "Production")
    registry.set_tags(client, model_name, v1, {"validation_status": "passed", "validation_f1": "0.9",
                                               "promoted_at": "2026-03-01T02:00:00+00:00",
                                               "promotion_reason": "no champion yet"})  # fmt: skip
    registry.transition(client, model_name, v2, "Production")  # v1 becomes previous_champion
    registry.set_tags(client, model_name, v3, {"validation_status": "rejected", "validation_f1": "0.2",
                                               "rejection_reason": "F1 0.2 < 0.8 <script>"})  # fmt: skip
    registry.transition(client, model_name, v3, "Staging")

    summary = model_summary(client, hook, model_name)

    assert summary["champion"]["version"] == v2 and summary["champion"]["aliases"] == ["champion"]
    assert summary["challenger"]["version"] == v3 and summary["lastCandidate"] is None
    assert summary["previousChampion"] == v1
    decisions = {d["version"]: d for d in summary["decisions"]}
    assert decisions[v3]["decision"] == "rejected" and decisions[v3]["reason"] == "F1 0.2 < 0.8 <script>"
    assert decisions[v1]["decision"] == "promoted" and decisions[v1]["challengerF1"] == 0.9
    assert summary["pendingApprovals"] is None  # not available yet: the page says so
    assert summary["champion"]["links"]["mlflowVersion"].endswith(f"/#/models/{model_name}/versions/{v2}")


def test_a_model_the_registry_does_not_know_has_no_champion(client, model_name, hook):
    from cmms_mlflow.model_overview import model_summary

    summary = model_summary(client, hook, model_name)
    assert (summary["registered"], summary["champion"], summary["decisions"]) == (False, None, [])


def test_plots_are_the_runs_own_png_artifacts_by_id(client, tmp_path):
    from cmms_mlflow.model_overview import plot_paths, read_artifact

    experiment = client.get_experiment_by_name("plots") or client.create_experiment("plots")
    experiment_id = experiment if isinstance(experiment, str) else experiment.experiment_id
    run = client.create_run(experiment_id).info.run_id
    for name in ("roc_curve.png", "notes.txt", "Bad-Name.png"):
        (tmp_path / name).write_bytes(b"\x89PNG fake " + name.encode())
    client.log_artifact(run, str(tmp_path / "roc_curve.png"), "evaluation")
    client.log_artifact(run, str(tmp_path / "notes.txt"), "evaluation")
    client.log_artifact(run, str(tmp_path / "Bad-Name.png"), "evaluation")
    (tmp_path / "drift.png").write_bytes(b"\x89PNG drift")
    client.log_artifact(run, str(tmp_path / "drift.png"), "data_checks")

    paths = plot_paths(client, run)

    assert paths == {"evaluation.roc_curve": "evaluation/roc_curve.png", "drift": "data_checks/drift.png"}
    assert read_artifact(client, run, paths["drift"]) == b"\x89PNG drift"
