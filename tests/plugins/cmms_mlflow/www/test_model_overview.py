"""What the Models page reads (cmms_mlflow.www.model_overview) against a real MLflow on SQLite."""

from __future__ import annotations

import pytest

from cmms_mlflow.hooks.mlflow_hook import MlflowHook
from cmms_mlflow.registry import model_registry


@pytest.fixture
def hook(mlflow_conn):
    return MlflowHook()


RUN_ID = "manual__2026-03-02T02:00:00+00:00"
TRAINING_RUN = {"dag_id": "pm_training", "run_id": RUN_ID, "task_id": "promote_model"}


def _change(client, tmp_path, name, version, stage, *, actor, reason, at, airflow=None):
    from cmms_mlflow.registry.promotion import change_stage

    return change_stage(
        client, name=name, version=version, stage=stage, lock_dir=tmp_path, actor=actor, reason=reason,
        at=at, airflow=airflow,
    )  # fmt: skip


def test_summary_names_champion_challenger_previous_champion_and_decisions_from_the_history(
    client, register, model_name, hook, tmp_path
):
    from cmms_mlflow.www.model_overview import model_summary

    v1, v2, v3 = register(model_name), register(model_name), register(model_name)
    _change(client, tmp_path, model_name, v1, "Production", actor="alice via /api/v1/ml",
            reason="no champion yet", at="2026-03-01T02:00:00+00:00")  # fmt: skip
    model_registry.set_tags(client, model_name, v1, {"validation_status": "passed", "validation_f1": "0.9"})
    _change(client, tmp_path, model_name, v2, "Production", actor=f"airflow:pm_training/{RUN_ID}",
            reason="F1 0.93 >= 0.8", at="2026-03-02T02:05:00+00:00", airflow=TRAINING_RUN)  # fmt: skip
    model_registry.set_tags(client, model_name, v3, {"validation_status": "rejected", "validation_f1": "0.2"})
    _change(client, tmp_path, model_name, v3, "Staging", actor="bob via /api/v1/ml",
            reason="F1 0.2 < 0.8 <script>", at="2026-03-03T02:00:00+00:00")  # fmt: skip

    summary = model_summary(client, hook, model_name)

    assert summary["champion"]["version"] == v2 and summary["champion"]["aliases"] == ["champion"]
    assert summary["challenger"]["version"] == v3 and summary["lastCandidate"] is None
    assert summary["previousChampion"] == v1
    # Every event of the history, newest first: what, who, when, from -> to, why, the Airflow run.
    decisions = [
        (d["version"], d["decision"], d["fromStage"], d["toStage"], d["championBefore"], d["championAfter"],
         d["by"], d["at"], d["reason"])
        for d in summary["decisions"]
    ]  # fmt: skip
    assert decisions == [
        (v3, "moved", "None", "Staging", v2, v2, "bob via /api/v1/ml", "2026-03-03T02:00:00+00:00",
         "F1 0.2 < 0.8 <script>"),
        (v2, "promoted", "None", "Production", v1, v2, f"airflow:pm_training/{RUN_ID}",
         "2026-03-02T02:05:00+00:00", "F1 0.93 >= 0.8"),
        (v1, "promoted", "None", "Production", None, v1, "alice via /api/v1/ml", "2026-03-01T02:00:00+00:00",
         "no champion yet"),
    ]  # fmt: skip
    by_version = {d["version"]: d for d in summary["decisions"]}
    assert by_version[v2]["links"]["airflowRun"].endswith(
        "/dags/pm_training/runs/manual__2026-03-02T02%3A00%3A00%2B00%3A00"
    )
    assert by_version[v1]["links"]["airflowRun"] is None  # an API request has no Airflow run
    assert [d["seq"] for d in summary["decisions"]] == [3, 2, 1]
    assert summary["pendingApprovals"] == []
    assert summary["champion"]["links"]["mlflowVersion"].endswith(f"/#/models/{model_name}/versions/{v2}")


def test_the_row_shows_as_many_decisions_as_asked_newest_first(client, register, model_name, hook, tmp_path):
    from cmms_mlflow.www.model_overview import model_summary

    v1, v2 = register(model_name), register(model_name)
    for i, stage in enumerate(("Staging", "Archived", "Staging", "Production")):
        _change(client, tmp_path, model_name, v1 if stage != "Production" else v2, stage, actor="carol",
                reason=f"step {i}", at=f"2026-03-0{i + 1}T00:00:00+00:00")  # fmt: skip

    summary = model_summary(client, hook, model_name, limit=2)

    assert [(d["reason"], d["toStage"]) for d in summary["decisions"]] == [
        ("step 3", "Production"),
        ("step 2", "Staging"),
    ]


def test_pending_approvals_are_the_versions_tagged_pending_with_airflows_page_to_answer(
    client, register, model_name, hook, tmp_path
):
    from cmms_mlflow.www.model_overview import model_summary
    from cmms_pm.approval import approval_outcome

    v1, v2, v3 = register(model_name), register(model_name), register(model_name)
    _change(
        client,
        tmp_path,
        model_name,
        v1,
        "Production",
        actor="alice",
        reason="first",
        at="2026-03-01T02:00:00+00:00",
    )
    asked = {
        "approval_status": "pending",
        "approval_requested_at": "2026-03-02T02:10:00+00:00",
        "approval_timeout_hours": "24",
        "approval_requested_by": f"airflow:pm_notify_training/{RUN_ID}",
        "decision_reason": "F1 0.93 >= 0.8 and +0.02 over the champion",
        "validation_f1": "0.93",
        "champion_f1": "0.91",
    }
    model_registry.set_tags(client, model_name, v2, asked)
    model_registry.set_tags(
        client, model_name, v3, {**asked, "approval_status": "approved"}
    )  # answered before

    summary = model_summary(
        client, hook, model_name, approvers=["approver"], training_dag_id="pm_notify_training"
    )

    (pending,) = summary["pendingApprovals"]
    links = pending.pop("links")
    assert pending == {
        "version": v2,
        "stage": "None",
        "requestedAt": "2026-03-02T02:10:00+00:00",
        "requestedBy": f"airflow:pm_notify_training/{RUN_ID}",
        "timeoutHours": 24.0,
        "expiresAt": "2026-03-03T02:10:00+00:00",
        "approvers": ["approver"],
        "reason": "F1 0.93 >= 0.8 and +0.02 over the champion",
        "holdoutF1": 0.93,
        "championF1": 0.91,
        "dagId": "pm_notify_training",
        "runId": RUN_ID,
        "taskId": "approve_promotion",
        "mapIndex": -1,
    }
    # The page MlflowApprovalOperator's notification links to (HITLOperator.generate_link_to_ui).
    run_path = "/dags/pm_notify_training/runs/manual__2026-03-02T02%3A00%3A00%2B00%3A00"
    assert links["requiredActions"].endswith(
        f"{run_path}/tasks/approve_promotion/required_actions?map_index=-1"
    )
    assert links["airflowRun"].endswith(run_path)

    # The answer, as the DAG's approval step records it (under the lock): no longer pending, and
    # the decision is the newest event, with the approver and the comment.
    outcome = approval_outcome(chosen=["Approve"], user={"id": "approver", "name": "approver"},
                               comment="looks right", timed_out=False, timeout_hours=24,
                               responded_at="2026-03-02T03:00:00+00:00")  # fmt: skip
    model_registry.record_approval(client, model_name, v2, outcome=outcome, lock_dir=tmp_path, key="answer1",
                             airflow={**TRAINING_RUN, "dag_id": "pm_notify_training",
                                      "task_id": "approve_promotion"})  # fmt: skip

    summary = model_summary(
        client, hook, model_name, approvers=["approver"], training_dag_id="pm_notify_training"
    )

    assert summary["pendingApprovals"] == []
    newest = summary["decisions"][0]
    assert (newest["type"], newest["version"], newest["by"], newest["at"], newest["reason"]) == (
        "approval",
        v2,
        "approver",
        "2026-03-02T03:00:00+00:00",
        "approved by approver: looks right",
    )
    assert newest["links"]["airflowRun"].endswith(run_path)


def test_links_are_built_from_ids_on_airflows_address_never_taken_from_tags(
    client, register, model_name, hook, tmp_path
):
    """Whoever can write a version's tags must not choose where the page sends Airflow's window."""
    from cmms_mlflow.www.model_overview import model_summary

    v1, v2, v3, v4 = (register(model_name) for _ in range(4))
    ids = {"airflow.dag_id": "pm_training", "airflow.run_id": RUN_ID}
    model_registry.set_tags(client, model_name, v1, {**ids, "airflow.run_url": "https://evil.example/phish"})
    _change(client, tmp_path, model_name, v1, "Production", actor="a", reason="r", at="t")
    model_registry.set_tags(
        client, model_name, v2, {"airflow.dag_id": "pm_training", "airflow.run_id": "x?y=//evil"}
    )
    forged = {"approval_status": "pending", "approval_requested_at": "2026-03-02T02:10:00+00:00"}
    model_registry.set_tags(
        client, model_name, v3, {**forged, "approval_requested_by": f"airflow:other_training/{RUN_ID}"}
    )
    model_registry.set_tags(
        client, model_name, v4, {**forged, "approval_requested_by": "airflow:pm_training/../../x"}
    )

    summary = model_summary(client, hook, model_name, training_dag_id="pm_training")

    link = summary["champion"]["links"]["airflowRun"]
    assert "evil" not in link and link.endswith(
        "/dags/pm_training/runs/manual__2026-03-02T02%3A00%3A00%2B00%3A00"
    )
    from cmms_mlflow.www.model_overview import version_view

    view = version_view(client, hook, client.get_model_version(model_name, v2), {})
    assert view["links"]["airflowRun"] is None  # a run id of no Airflow shape: no link at all
    pending = {p["version"]: p for p in summary["pendingApprovals"]}
    for version in (v3, v4):  # another DAG's run, or no run id Airflow could have made
        assert (pending[version]["dagId"], pending[version]["runId"]) == (None, None), pending[version]
        assert pending[version]["links"] == {"requiredActions": None, "airflowRun": None}
        assert pending[version]["requestedBy"].startswith("airflow:")  # still shown, as text


def test_a_version_page_lists_that_versions_history_only(client, register, model_name, hook, tmp_path):
    from cmms_mlflow.www.model_overview import version_detail

    v1, v2 = register(model_name), register(model_name)
    _change(
        client,
        tmp_path,
        model_name,
        v1,
        "Production",
        actor="alice",
        reason="first",
        at="2026-03-01T00:00:00+00:00",
    )
    _change(
        client,
        tmp_path,
        model_name,
        v2,
        "Staging",
        actor="bob",
        reason="shadow",
        at="2026-03-02T00:00:00+00:00",
    )
    _change(
        client,
        tmp_path,
        model_name,
        v2,
        "Production",
        actor="bob",
        reason="better",
        at="2026-03-03T00:00:00+00:00",
    )

    detail = version_detail(client, hook, model_name, v2)

    assert [(d["toStage"], d["reason"]) for d in detail["history"]] == [
        ("Production", "better"),
        ("Staging", "shadow"),
    ]
    assert detail["champion"] == v2 and detail["previousChampion"] == v1


def test_a_model_the_registry_does_not_know_has_no_champion(client, model_name, hook):
    from cmms_mlflow.www.model_overview import model_summary

    summary = model_summary(client, hook, model_name)
    assert (summary["registered"], summary["champion"], summary["decisions"]) == (False, None, [])


def test_plots_are_the_runs_own_png_artifacts_by_id(client, tmp_path):
    from cmms_mlflow.www.model_overview import plot_paths, read_artifact

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


def test_a_version_page_carries_its_model_card_as_text_and_its_threshold(client, register, model_name, hook):
    from cmms_mlflow.tracking.card_logging import log_card
    from cmms_mlflow.www import model_overview
    from cmms_mlflow.www.model_overview import version_detail

    experiment = client.get_experiment_by_name("registry-tests")
    run = client.create_run(
        experiment.experiment_id if experiment else client.create_experiment("registry-tests")
    )
    hostile = "<script>alert('x')</script>"
    log_card(client, run.info.run_id, {"model_name": model_name, "features": {"categorical": [hostile]}})
    version = register(model_name, run=client.get_run(run.info.run_id))
    model_registry.set_tags(client, model_name, version, {"decision_threshold": "0.3125"})

    view = version_detail(client, hook, model_name, version)
    assert view["modelCard"].startswith(f"# Model card: `{model_name}`")
    assert f"`{hostile}`" in view["modelCard"]  # text: the page shows it through textContent
    assert view["decisionThreshold"] == 0.3125
    no_card = register(model_name)
    assert version_detail(client, hook, model_name, no_card)["modelCard"] is None
    assert version_detail(client, hook, model_name, no_card)["decisionThreshold"] is None

    # A card artifact of any size is cut to what the page shows.
    client.log_text(run.info.run_id, "x" * (model_overview.MODEL_CARD_MAX_BYTES + 10), "model_card.md")
    cut = version_detail(client, hook, model_name, version)["modelCard"]
    assert len(cut.encode()) < model_overview.MODEL_CARD_MAX_BYTES + 100 and cut.endswith(
        "the card is larger]"
    )
