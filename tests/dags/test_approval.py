"""Human approval before Production, through Airflow's REST API with real users.

Uses the ``airflow_cluster`` fixture (api-server, scheduler, dag-processor on 127.0.0.1). Runs of
copies of ``pm_notify`` (tests/dag_fixtures/models/pm_notify.yaml: approver ``approver``,
notifications to the session's SMTP server and webhook receiver; one cluster slot per test, each
owning its model) are triggered with ``require_approval``; each waits in ``approve_promotion`` until
someone answers through
``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/approve_promotion/-1/hitlDetails``, or
until its timeout passes.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from support import slot, wait_until_parked

pytestmark = pytest.mark.slow

TASK = "approve_promotion"


@pytest.fixture(scope="module")
def cluster_client(airflow_cluster):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=airflow_cluster.mlflow_uri, registry_uri=airflow_cluster.mlflow_uri)


def _hitl_path(dag_id: str, run_id: str) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK}/-1/hitlDetails"


def _trigger(cluster, dag_id: str, name: str, **conf) -> str:
    body = {
        "logical_date": None,
        "conf": {"model_name": name, "experiment_name": name, "require_approval": True, **conf},
    }
    status, run = cluster.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body, user="operator")
    assert status == 200, run
    return run["dag_run_id"]


def _wait_for_state(
    cluster, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 420
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        tis = cluster.task_instances(run_id, dag_id)
        if tis.get(task_id, {}).get("state") in states:
            if "awaiting_input" in states:
                wait_until_parked(cluster, dag_id, TASK, run_id)
            return tis
        failed = {t: ti["state"] for t, ti in tis.items() if ti["state"] in ("failed", "upstream_failed")}
        assert not failed and time.monotonic() < deadline, (task_id, states, failed or tis)
        time.sleep(2)


def _finished(cluster, dag_id: str, run_id: str) -> dict[str, str]:
    try:
        (run,) = cluster.wait_for_runs({run_id}, 1, timeout=480, dag_id=dag_id)
    except TimeoutError as err:
        states = {t: ti["state"] for t, ti in cluster.task_instances(run_id, dag_id).items()}
        log = (cluster.home / "scheduler.log").read_text(errors="replace")
        lines = [line for line in log.splitlines() if run_id in line or "awaiting" in line.lower()]
        raise AssertionError(f"{err}; tasks: {states}; scheduler: {lines[-15:]}") from err
    states = {t: ti["state"] for t, ti in cluster.task_instances(run_id, dag_id).items()}
    assert run["state"] == "success", states
    return states


def _history(cluster, name: str) -> list[dict]:
    """The model's history through the model API, oldest first."""
    status, body = cluster.request("GET", f"/api/v1/ml/models/{name}/history", user="viewer")
    assert status == 200, body
    return body["events"][::-1]


def _events(receiver, name: str) -> dict[str, dict]:
    return {r.json["event"]: r.json for r in receiver.requests if r.json.get("model") == name}


def test_an_approver_approves_through_the_rest_api_and_the_version_is_promoted(
    airflow_cluster, cluster_client, http_receiver
):
    mine = slot("pm_approve")
    dag_id, name = mine.training, mine.model
    run_id = _trigger(airflow_cluster, dag_id, name)
    _wait_for_state(airflow_cluster, dag_id, run_id, TASK, {"awaiting_input"})
    assert cluster_client.get_model_version(name, "1").tags["approval_status"] == "pending"
    assert cluster_client.get_model_version(name, "1").current_stage == "Staging"

    # The request as Airflow shows it: the version, Approve/Reject, a comment field, the approver.
    status, detail = airflow_cluster.request("GET", _hitl_path(dag_id, run_id), user="viewer")
    assert status == 200, detail
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert detail["subject"] == f"Promote {name} version 1 to Production?"
    assert f"**{name} version 1**" in detail["body"] and set(detail["params"]) == {"comment"}
    assert [user["id"] for user in detail["assigned_users"]] == ["approver"]

    # The "approval needed" notice went out when the step started, with a link to the request.
    needed = _events(http_receiver, name)["approval_needed"]
    assert needed["version"] == "1" and needed["decision"] == "awaiting_approval"
    assert needed["links"]["approve"].endswith(f"/tasks/{TASK}/required_actions?map_index=-1")

    # An operator may promote by hand, but not around a pending request (API, page, promotion DAG).
    status, body = airflow_cluster.request(
        "POST", f"/api/v1/ml/models/{name}/versions/1/promote",
        {"stage": "Production", "reason": "skip the approver"}, user="operator",
    )  # fmt: skip
    assert status == 409 and "waiting for a person's approval" in body["detail"], (status, body)
    assert cluster_client.get_model_version(name, "1").current_stage == "Staging"

    answer = {"chosen_options": ["Approve"], "params_input": {"comment": "confusion matrix checked"}}
    # A viewer may read the request but not answer it; a user who is not the spec's approver neither.
    assert airflow_cluster.request("PATCH", _hitl_path(dag_id, run_id), answer, user="viewer")[0] == 403
    status, body = airflow_cluster.request("PATCH", _hitl_path(dag_id, run_id), answer, user="operator")
    assert status == 403 and "not a respondent" in str(body)
    status, body = airflow_cluster.request("PATCH", _hitl_path(dag_id, run_id), answer, user="approver")
    assert status == 200, body
    assert body["responded_by"]["id"] == "approver"
    # The answer is final.
    assert airflow_cluster.request("PATCH", _hitl_path(dag_id, run_id), answer, user="approver")[0] == 409

    states = _finished(airflow_cluster, dag_id, run_id)
    assert [states[t] for t in (TASK, "promote_model", "reject_model")] == ["success", "success", "skipped"]
    version = cluster_client.get_model_version(name, "1")
    assert version.current_stage == "Production"
    assert {k: v for k, v in version.tags.items() if k.startswith("approval_") and k != "approval_at"} == {
        "approval_status": "approved",
        "approval_by": "approver",
        "approval_comment": "confusion matrix checked",
        "approval_reason": "approved by approver: confusion matrix checked",
        "approval_requested_by": f"airflow:{dag_id}/{run_id}",
        "approval_requested_at": version.tags["approval_requested_at"],
        "approval_timeout_hours": "24",
    }
    assert version.tags["approval_at"] >= version.tags["approval_requested_at"]
    from cmms_mlflow.tracking.card_logging import read_card

    card = read_card(cluster_client, version.run_id)  # the run's report step wrote who approved and why
    assert "- Outcome: promoted" in card and "- Answered by: approver" in card
    assert "- Comment: confusion matrix checked" in card
    promoted = _events(http_receiver, name)["promoted"]
    assert promoted["approval"]["by"] == "approver" and promoted["approval"]["status"] == "approved"
    # The answer is in the model's history, with the approver and the comment, before the promotion.
    history = [(e["type"], e["actor"], e["reason"], e["to_stage"]) for e in _history(airflow_cluster, name)]
    approval = ("approval", "approver", "approved by approver: confusion matrix checked", "Staging")
    assert approval in history and history[-1][0] == "promotion" and history[-1][3] == "Production", history
    assert history.index(approval) < len(history) - 1


def test_a_rejected_version_is_archived_with_the_approvers_reason(
    airflow_cluster, cluster_client, http_receiver
):
    mine = slot("pm_refuse")
    dag_id, name = mine.training, mine.model
    run_id = _trigger(airflow_cluster, dag_id, name)
    _wait_for_state(airflow_cluster, dag_id, run_id, TASK, {"awaiting_input"})
    answer = {"chosen_options": ["Reject"], "params_input": {"comment": "too many false alarms on pumps"}}
    status, body = airflow_cluster.request("PATCH", _hitl_path(dag_id, run_id), answer, user="approver")
    assert status == 200, body

    states = _finished(airflow_cluster, dag_id, run_id)
    assert (states["promote_model"], states["reject_model"]) == ("skipped", "success")
    version = cluster_client.get_model_version(name, "1")
    assert version.current_stage == "Archived"
    reason = "rejected by approver: too many false alarms on pumps"
    assert version.tags["rejection_reason"] == reason and version.tags["approval_status"] == "rejected"
    assert not cluster_client.get_registered_model(name).aliases
    rejected = _events(http_receiver, name)["rejected"]
    assert rejected["reason"] == reason and rejected["decision"] == "reject"
    history = [(e["type"], e["actor"], e["reason"], e["to_stage"]) for e in _history(airflow_cluster, name)]
    assert history[-2:] == [
        ("approval", "approver", reason, "Staging"),
        ("rejection", f"airflow:{dag_id}/{run_id}", reason, "Archived"),
    ], history


def test_no_answer_before_the_timeout_archives_the_version_and_promotes_nothing(
    airflow_cluster, cluster_client, http_receiver
):
    mine = slot("pm_silent")
    dag_id, name = mine.training, mine.model
    run_id = _trigger(airflow_cluster, dag_id, name, approval_timeout_hours=0.001)  # 3.6 s
    states = _finished(airflow_cluster, dag_id, run_id)
    assert [states[t] for t in (TASK, "promote_model", "reject_model")] == ["success", "skipped", "success"]
    version = cluster_client.get_model_version(name, "1")
    assert version.current_stage == "Archived"
    reason = "approval timed out: no answer within 0.001 h"
    assert version.tags["rejection_reason"] == reason
    assert (version.tags["approval_status"], version.tags["approval_by"]) == ("timed_out", "")
    status, detail = airflow_cluster.request("GET", _hitl_path(dag_id, run_id), user="viewer")
    assert status == 200 and detail["responded_by_user"] is None and detail["chosen_options"] == ["Reject"]
    assert _events(http_receiver, name)["rejected"]["reason"] == reason
    (approval,) = [e for e in _history(airflow_cluster, name) if e["type"] == "approval"]
    assert (approval["actor"], approval["reason"]) == ("nobody (timed out)", reason)
