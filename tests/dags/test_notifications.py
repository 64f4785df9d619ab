"""Notifications end to end: a real training DAG (``dag.test()``) tells a real SMTP server and a real
HTTP receiver on 127.0.0.1 what it did — a promotion, a rejection, a failed task.

The spec is tests/dag_fixtures/models/pm_notify.yaml (the shipped model with ``notifications``);
its connections ``cmms_smtp`` and ``cmms_webhook`` carry the sentinel password (SMTP login,
bearer token), and no mail or webhook body may contain it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from receivers import leaks
from support import xcom_value

PROJECT_DIR = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT_DIR / "tests" / "dag_fixtures"
DAG_ID = "pm_notify_training"
RECIPIENTS = ["ml-team@cmms.example", "reliability@cmms.example"]

pytestmark = pytest.mark.slow


@pytest.fixture
def name() -> str:
    return f"pm_notify_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dag(airflow_db, name):
    """pm_notify's training DAG, built by the DAG factory for the spec owning this test's model."""
    from support import training_dag_owning

    from cmms_pm.spec import load_spec

    return training_dag_owning(load_spec(FIXTURES / "models" / "pm_notify.yaml"), name)


def _run(dag, day: int, **conf):
    return dag.test(logical_date=datetime(2026, 6, day, 3, tzinfo=UTC), run_conf=dag.params.dump() | conf)


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _one_each(conns, kind: str):
    """The one mail and the one webhook request of an event kind, received since the last clear."""
    mails = [m for m in conns.smtp.wait_for(1) if kind.replace("_", " ") in m.subject.lower()]
    requests = [r for r in conns.http.wait_for(1) if r.json["event"] == kind]
    assert len(mails) == 1 and len(requests) == 1, (
        [m.subject for m in conns.smtp.messages], [r.json["event"] for r in conns.http.requests],
    )  # fmt: skip
    return mails[0], requests[0]


def test_promotion_rejection_and_a_failed_task_are_announced_by_mail_and_webhook(
    dag, name, mlflow_conn, client, notify_conns
):
    base = {"model_name": name, "experiment_name": name}
    seen_mails, seen_requests = [], []

    # 1. No champion yet: promoted.
    first = _run(dag, 1, **base)
    assert str(first.state) == "success", _states(first)
    mail, request = _one_each(notify_conns, "promoted")
    event = request.json
    assert event["event"] == "promoted" and event["decision"] == "promote" and event["schema"]
    assert (event["model"], event["version"], event["spec"]) == (name, "1", "pm_notify")
    assert event["reason"] == client.get_model_version(name, "1").tags["promotion_reason"]
    assert event["metrics"]["metric"] == "f1" and event["metrics"]["challenger"]["f1"] >= 0.8
    assert event["metrics"]["champion"] is None
    assert event["links"]["mlflow"].endswith(f"/#/models/{name}/versions/1")
    assert event["links"]["airflow_run"].endswith(f"/dags/{DAG_ID}/runs/{quote(first.run_id, safe='')}")
    assert event["airflow"] | {"try_number": None} == {
        "dag_id": DAG_ID, "run_id": first.run_id, "task_id": "promote_model", "try_number": None,
        "run_type": "manual", "logical_date": "2026-06-01T03:00:00+00:00",
    }  # fmt: skip
    assert sorted(mail.rcpt_tos) == RECIPIENTS and mail.mail_from == "airflow@cmms.example"
    assert mail.subject == f"[cmms] {name} v1 promoted to Production"
    assert event["reason"] in mail.text and event["links"]["mlflow"] in mail.text
    seen_mails.append(mail), seen_requests.append(request)

    # 2. A one-stump forest: rejected, with the reason the registry keeps.
    notify_conns.smtp.clear(), notify_conns.http.clear()
    second = _run(dag, 2, **base, n_estimators=1, max_depth=1)
    assert str(second.state) == "success", _states(second)
    assert _states(second)["approve_promotion"] == "skipped"  # no approval asked: none needed
    mail, request = _one_each(notify_conns, "rejected")
    event = request.json
    assert (event["version"], event["decision"]) == ("2", "reject")
    assert event["reason"] == client.get_model_version(name, "2").tags["rejection_reason"]
    assert event["metrics"]["champion_version"] == "1" and event["metrics"]["champion"]["f1"] >= 0.8
    assert mail.subject.startswith(f"[cmms] {name} v2 rejected: challenger F1")
    seen_mails.append(mail), seen_requests.append(request)

    # 3. A data source that does not exist, named after the sentinel (so the error message carries
    #    a secret): extract_data fails for good, and only that final failure is announced.
    notify_conns.smtp.clear(), notify_conns.http.clear()
    third = _run(dag, 3, **base, data_source=f"incoming/{notify_conns.sentinel}.csv")
    assert str(third.state) == "failed"
    assert _states(third)["extract_data"] == "failed", _states(third)
    mail, request = _one_each(notify_conns, "task_failed")
    event = request.json
    assert event["airflow"]["task_id"] == "extract_data" and event["decision"] is None
    assert event["model"] == name and event["version"] is None
    assert event["error"]["type"] == "BadDataError" and "does not exist" in event["error"]["message"]
    assert "***" in event["error"]["message"]  # the sentinel in the path, masked
    assert event["links"]["airflow_task"].startswith(event["links"]["airflow_run"] + "/tasks/extract_data")
    assert mail.subject == f"[cmms] Task failed: {DAG_ID}.extract_data ({name})"
    assert len(notify_conns.http.requests) == 1 and len(notify_conns.smtp.messages) == 1
    seen_mails.append(mail), seen_requests.append(request)

    # No message carries the connections' password; the token did travel, in its header only, and
    # the SMTP server saw the login: the search would have found the sentinel had it leaked.
    assert leaks(notify_conns.sentinel, mails=seen_mails, requests=seen_requests) == []
    assert {r.headers["Authorization"] for r in seen_requests} == {f"Bearer {notify_conns.sentinel}"}
    assert ("cmms-notifier", notify_conns.sentinel) in notify_conns.smtp.logins
    # Each step recorded what its channels did.
    assert xcom_value(first, "promote_model", "notifications") == {
        "email:cmms_smtp": "sent", "webhook:cmms_webhook": "sent",
    }  # fmt: skip
