"""Notification events and human approval as pure functions; the spec and form fields behind them."""

from __future__ import annotations

import pytest

from cmms_pm.approval import (
    APPROVAL_STEP,
    APPROVE,
    PROMOTE_STEP,
    REJECT,
    REJECT_STEP,
    approval_outcome,
    approval_tags,
    next_step,
    requested_by,
    requesting_run,
)
from cmms_pm.exceptions import SpecError
from cmms_pm.notifications import (
    APPROVAL_NEEDED,
    PROMOTED,
    REJECTED,
    TASK_FAILED,
    html_body,
    model_event,
    strip_credentials,
    subject,
)
from cmms_pm.params import approval_required, run_config, training_params
from cmms_pm.spec import ModelSpec, build_spec

AIRFLOW = {"dag_id": "pm_training", "run_id": "manual__1", "task_id": "promote_model", "try_number": 1}


def _event(kind=PROMOTED, **overrides):
    values = {
        "model": "pm_rf",
        "version": "3",
        "reason": "challenger F1 0.9100 meets threshold 0.8000",
        "airflow": AIRFLOW,
        "occurred_at": "2026-03-01T03:00:00+00:00",
        "record": {
            "challenger_metrics": {"f1": 0.91},
            "champion_metrics": None,
            "champion_version": None,
            "thresholds": {"metric": "f1", "threshold": 0.8, "min_improvement": 0.0},
        },
    }
    return model_event(kind, **(values | overrides))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg2://pipeline:s3cr%40t@db:5432/mlflow failed",
         "postgresql+psycopg2://***@db:5432/mlflow failed"),
        ("GET https://user:pw@hooks.example.com/x", "GET https://***@hooks.example.com/x"),
        ("login failed: password=hunter2; retry", "login failed: password=***; retry"),
        ("header Authorization: Bearer abc.def", "header Authorization: ***"),
        ("token: xyz and api_key=k1", "token: *** and api_key=***"),
        ("F1 0.91 meets threshold 0.80", "F1 0.91 meets threshold 0.80"),
    ],
)  # fmt: skip
def test_credentials_are_stripped_from_texts(text, expected):
    assert strip_credentials(text) == expected


def test_texts_are_cut_to_a_bounded_length():
    assert len(strip_credentials("x" * 5000)) == 1000


def test_an_event_carries_model_version_decision_reason_metrics_links_and_run():
    event = _event(links={"mlflow": "http://u:p@mlflow:5000/#/models/pm_rf/versions/3"})
    assert event["schema"] == "cmms.model_event/1" and event["event"] == PROMOTED
    assert (event["model"], event["version"], event["decision"]) == ("pm_rf", "3", "promote")
    assert event["metrics"]["challenger"] == {"f1": 0.91} and event["metrics"]["threshold"] == 0.8
    assert event["links"] == {"mlflow": "http://***@mlflow:5000/#/models/pm_rf/versions/3"}
    assert event["airflow"] == {k: str(v) for k, v in AIRFLOW.items()}
    assert {_event(kind)["decision"] for kind in (REJECTED, APPROVAL_NEEDED)} == {
        "reject",
        "awaiting_approval",
    }
    assert _event(TASK_FAILED)["decision"] is None


def test_a_retried_task_resends_the_same_event_id_and_another_kind_gets_another():
    first = _event()
    retried = _event(airflow=AIRFLOW | {"try_number": 2}, occurred_at="later")
    assert first["event_id"] == retried["event_id"] != _event(REJECTED)["event_id"]


def test_an_unknown_event_kind_is_refused():
    with pytest.raises(ValueError, match="'deployed' is not one of"):
        _event("deployed")


def test_the_subject_is_one_line_whatever_the_reason_holds():
    event = _event(REJECTED, reason="bad\r\nBcc: attacker@example.com\nmore")
    assert "\n" not in subject(event) and "\r" not in subject(event)
    assert subject(event).startswith("[cmms] pm_rf v3 rejected: bad Bcc:")
    assert subject(_event(APPROVAL_NEEDED)) == "[cmms] Approval needed: promote pm_rf v3 to Production?"
    assert (
        subject(_event(TASK_FAILED, version=None)) == "[cmms] Task failed: pm_training.promote_model (pm_rf)"
    )


def test_the_mail_body_escapes_every_value():
    body = html_body(_event(REJECTED, reason="<img src=x onerror=alert(1)>", links={"x": "javascript:'<"}))
    assert "<img" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "0.9100" in body and "pm_rf" in body


@pytest.mark.parametrize(
    ("decision", "required", "step"),
    [("promote", False, PROMOTE_STEP), ("promote", True, APPROVAL_STEP), ("reject", True, REJECT_STEP),
     ("reject", False, REJECT_STEP)],
)  # fmt: skip
def test_only_a_validated_version_is_shown_to_a_person(decision, required, step):
    assert next_step(decision, required) == step


def test_an_answer_says_who_decided_and_why():
    user = {"id": "approver", "name": "approver"}
    approved = approval_outcome(chosen=[APPROVE], user=user, comment=" looks good ", timed_out=False,
                                timeout_hours=24, responded_at="2026-03-01T04:00:00+00:00")  # fmt: skip
    assert approved["status"] == "approved" and approved["reason"] == "approved by approver: looks good"
    assert approval_tags(approved) == {
        "approval_status": "approved",
        "approval_by": "approver",
        "approval_comment": "looks good",
        "approval_at": "2026-03-01T04:00:00+00:00",
        "approval_reason": "approved by approver: looks good",
    }
    rejected = approval_outcome(chosen=[REJECT], user=user, comment="", timed_out=False, timeout_hours=24,
                                responded_at=None)  # fmt: skip
    assert (rejected["status"], rejected["reason"]) == ("rejected", "rejected by approver")


def test_no_answer_is_never_an_approval():
    for chosen in ([REJECT], [APPROVE]):
        outcome = approval_outcome(chosen=chosen, user=None, comment="", timed_out=True, timeout_hours=0.5,
                                   responded_at=None)  # fmt: skip
        assert outcome["status"] == "timed_out"
        assert outcome["reason"] == "approval timed out: no answer within 0.5 h"


SPEC = {
    "name": "pumps",
    "registered_model": "pumps_rf",
    "source": {"kind": "synthetic"},
    "target": {"column": "failed", "positive": 1},
    "features": {"numeric": ["temperature"]},
}


@pytest.mark.parametrize("run_id", ["manual__2026-03-01T02:00:00+00:00", "backfill/odd/run", "ui_1"])
def test_a_request_names_the_airflow_run_that_asks_and_the_page_reads_it_back(run_id):
    tag = requested_by("pm_notify_training", run_id)
    assert tag == f"airflow:pm_notify_training/{run_id}"
    assert requesting_run(tag) == ("pm_notify_training", run_id)


@pytest.mark.parametrize("tag", [None, "", "alice", "airflow:", "airflow:dag_only", "airflow:/run"])
def test_a_request_tag_without_a_run_names_none(tag):
    assert requesting_run(tag) is None


def test_notifications_and_approval_default_to_off():
    spec = build_spec(SPEC)
    assert spec.notifications == {
        "email_conn_id": None,
        "email_to": [],
        "email_from": None,
        "webhook_conn_id": None,
        "events": ["promoted", "rejected", "approval_needed", "task_failed", "retrain_requested"],
    }
    assert spec.approval == {"required": False, "timeout_hours": 24, "approvers": []}


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("notifications", {"email_to": ["ops@cmms.example\nBcc: x@evil.io"]}, "notifications.email_to.0"),
        ("notifications", {"email_to": ["a@b.example, c@d.example"]}, "notifications.email_to.0"),
        ("notifications", {"email_conn_id": "smtp_ops"}, "notifications.email_conn_id: set, but"),
        ("notifications", {"webhook_conn_id": "bad id\n"}, "notifications.webhook_conn_id"),
        ("notifications", {"events": ["deployed"]}, "notifications.events.0"),
        ("approval", {"approvers": ["alice\n"]}, "approval.approvers.0"),
        ("approval", {"timeout_hours": 0}, "approval.timeout_hours"),
    ],
)  # fmt: skip
def test_bad_notification_and_approval_settings_are_refused_naming_the_field(section, value, message):
    with pytest.raises(SpecError, match=message):
        build_spec(SPEC | {section: value})


def test_a_run_can_ask_for_approval_but_never_skip_one_its_spec_requires():
    optional = build_spec(SPEC)
    required = build_spec(SPEC | {"approval": {"required": True, "timeout_hours": 2}})
    assert not approval_required(optional, {}) and approval_required(optional, {"require_approval": True})
    assert approval_required(required, {"require_approval": False})
    form = training_params(required)
    assert form["require_approval"]["enum"] == [True] and form["approval_timeout_hours"]["default"] == 2
    assert "enum" not in training_params(optional)["require_approval"]
    config = run_config(ModelSpec.from_dict(required.to_dict()), {"require_approval": False})
    assert config.require_approval is True and config.approval_timeout_hours == 2
