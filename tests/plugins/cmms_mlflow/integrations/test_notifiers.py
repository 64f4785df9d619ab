"""The notifiers against real servers on 127.0.0.1: aiosmtpd (with a login) and an HTTP receiver.

Both connections carry the sentinel password (SMTP login, webhook bearer token); no message
may contain it. ``leaks`` searches every mail (headers, raw and decoded body) and every webhook
body for it.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from receivers import Request, leaks

from cmms_pm.notifications import PROMOTED, REJECTED, model_event

AIRFLOW = {"dag_id": "pm_training", "run_id": "manual__1", "task_id": "promote_model", "try_number": 1}
RECORD = {
    "challenger_version": "3",
    "challenger_metrics": {"f1": 0.91, "roc_auc": 0.97},
    "champion_version": "2",
    "champion_metrics": {"f1": 0.88, "roc_auc": 0.95},
    "thresholds": {"metric": "f1", "threshold": 0.8, "min_improvement": 0.0},
    "reason": "challenger F1 0.9100 beats champion F1 0.8800",
}


def _event(kind: str = PROMOTED, reason: str = RECORD["reason"]) -> dict:
    return model_event(
        kind,
        model="pm_rf",
        version="3",
        spec="pm",
        reason=reason,
        record=RECORD,
        links={"mlflow": "http://127.0.0.1:5000/#/models/pm_rf/versions/3"},
        airflow=AIRFLOW,
        occurred_at="2026-03-01T03:00:00+00:00",
    )


def _notifier(conns, **overrides):
    from cmms_mlflow.integrations.notifiers import ModelEventNotifier

    settings = {
        "spec_name": "pm",
        "email_to": ["ml-team@cmms.example"],
        "email_conn_id": conns.email_conn_id,
        "webhook_conn_id": conns.webhook_conn_id,
    }
    return ModelEventNotifier(**(settings | overrides))


def test_an_event_goes_out_by_mail_and_webhook_without_the_connections_password(notify_conns):
    event = _event()
    results = _notifier(notify_conns).send(event, {})

    assert results == {"email:cmms_smtp": "sent", "webhook:cmms_webhook": "sent"}
    (mail,) = notify_conns.smtp.wait_for(1)
    assert mail.rcpt_tos == ["ml-team@cmms.example"] and mail.mail_from == "airflow@cmms.example"
    assert mail.subject == "[cmms] pm_rf v3 promoted to Production"
    assert "challenger F1 0.9100 beats champion F1 0.8800" in mail.text and "0.9100" in mail.text
    # The SMTP connection's login was used: the server saw the sentinel password, the mail does not.
    assert notify_conns.smtp.logins == [("cmms-notifier", notify_conns.sentinel)]

    (request,) = notify_conns.http.wait_for(1)
    assert (request.method, request.path) == ("POST", "/hooks/cmms")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Bearer {notify_conns.sentinel}"
    assert request.json == event
    assert leaks(notify_conns.sentinel, mails=[mail], requests=[request]) == []


def test_the_leak_check_finds_a_secret_in_a_mail_or_a_webhook_body(notify_conns):
    """The check above can fail: a message that carries the secret is reported, decoded or not."""
    import smtplib

    secret = notify_conns.sentinel
    with smtplib.SMTP("127.0.0.1", notify_conns.smtp.port, timeout=10) as smtp:
        smtp.login("cmms-notifier", secret)
        # base64 body, as the SMTP notifier sends UTF-8 HTML: only the decoded text shows it.
        from email.mime.text import MIMEText

        message = MIMEText(f"<p>password is {secret}</p>", "html", "utf-8")
        message["Subject"] = "leaky"
        assert secret not in message.as_string()
        smtp.sendmail("a@cmms.example", ["b@cmms.example"], message.as_string())
    (mail,) = notify_conns.smtp.wait_for(1)
    body = Request("POST", "/x", {}, json.dumps({"reason": f"token {secret}"}).encode(), 0)
    assert leaks(secret, mails=[mail], requests=[body]) == ["mail 'leaky'", "webhook body /x"]


def test_a_secret_in_an_event_is_masked_before_it_is_sent(notify_conns):
    """An error text that echoes a connection's password (or a URI with credentials) goes out masked."""
    secret = notify_conns.sentinel
    reason = f"could not connect to postgresql://pipeline:hunter2-pw@db:5432/x with password {secret}"
    _notifier(notify_conns).send(_event(REJECTED, reason=reason), {})

    (mail,) = notify_conns.smtp.wait_for(1)
    (request,) = notify_conns.http.wait_for(1)
    assert leaks(secret, mails=[mail], requests=[request]) == []
    assert leaks("hunter2-pw", mails=[mail], requests=[request]) == []
    assert "postgresql://***@db:5432/x" in request.json["reason"]


def test_event_texts_are_never_rendered_as_jinja_templates(notify_conns):
    reason = "threshold {{ 7 * 7 }} {{ conn.cmms_smtp.password }} {% raw %}"
    _notifier(notify_conns).send(_event(REJECTED, reason=reason), {})
    (mail,) = notify_conns.smtp.wait_for(1)
    assert "{{ 7 * 7 }}" in mail.text and "49" not in mail.text
    assert notify_conns.http.wait_for(1)[0].json["reason"] == reason


def test_html_in_an_event_is_escaped_in_the_mail(notify_conns):
    _notifier(notify_conns, webhook_conn_id=None).send(_event(REJECTED, reason="<script>x()</script>"), {})
    (mail,) = notify_conns.smtp.wait_for(1)
    assert "<script>" not in mail.text and "&lt;script&gt;" in mail.text


def test_a_failing_channel_is_reported_and_the_other_still_delivers(notify_conns, monkeypatch):
    from support import free_port

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOSED_SMTP",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": free_port(),
                    "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "a@b.example",
                              "timeout": 2, "retry_limit": 0}}),
    )  # fmt: skip
    results = _notifier(notify_conns, email_conn_id="closed_smtp").send(_event(), {})
    assert results["webhook:cmms_webhook"] == "sent"
    assert results["email:closed_smtp"].startswith("failed: ConnectionRefusedError")
    assert len(notify_conns.http.wait_for(1)) == 1


def test_only_the_events_a_spec_subscribes_to_are_sent(notify_conns):
    notifier = _notifier(notify_conns, events=["task_failed"])
    assert notifier.send(_event(), {}) == {}
    time.sleep(0.5)
    assert notify_conns.smtp.messages == [] and notify_conns.http.requests == []


def test_a_webhook_redirect_to_another_host_is_not_followed(notify_conns):
    from cmms_mlflow.exceptions import NotificationError
    from cmms_mlflow.integrations.notifiers import post_json

    receiver = notify_conns.http
    # localhost is another host name than the connection's 127.0.0.1 (same server, so we would see it).
    receiver.routes["/hooks/cmms"] = (307, {"Location": f"http://localhost:{receiver.port}/steal"})
    with pytest.raises(
        NotificationError, match="redirecting to another host \\('localhost'\\); not followed"
    ):
        post_json(notify_conns.webhook_conn_id, {"event": "promoted"})
    assert [r.path for r in receiver.requests] == ["/hooks/cmms"]


def test_a_webhook_redirect_on_the_same_host_is_followed_with_the_token(notify_conns):
    from cmms_mlflow.integrations.notifiers import post_json

    receiver = notify_conns.http
    receiver.routes["/hooks/cmms"] = (308, {"Location": "/hooks/moved"})
    assert post_json(notify_conns.webhook_conn_id, {"event": "promoted"}) == 200
    assert [r.path for r in receiver.requests] == ["/hooks/cmms", "/hooks/moved"]
    assert receiver.requests[1].json == {"event": "promoted"}
    assert receiver.requests[1].headers["Authorization"] == f"Bearer {notify_conns.sentinel}"


def test_a_webhook_that_never_answers_fails_within_its_timeout(notify_conns, monkeypatch):
    from cmms_mlflow.exceptions import NotificationError
    from cmms_mlflow.integrations.notifiers import post_json

    receiver = notify_conns.http
    receiver.hang.add("/hooks/slow")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLOW_WEBHOOK",
        json.dumps({"conn_type": "http", "host": f"{receiver.url}/hooks/slow", "extra": {"timeout": 1}}),
    )
    started = time.monotonic()
    with pytest.raises(NotificationError, match="did not answer within 1 s"):
        post_json("slow_webhook", {"event": "promoted"})
    assert time.monotonic() - started < 5


def test_a_webhook_error_names_the_status_and_the_host_not_the_path_or_token(notify_conns):
    from cmms_mlflow.exceptions import NotificationError
    from cmms_mlflow.integrations.notifiers import post_json

    notify_conns.http.routes["/hooks/cmms"] = (500, {})
    with pytest.raises(NotificationError) as err:
        post_json(notify_conns.webhook_conn_id, {"event": "promoted"})
    assert f"at http://127.0.0.1:{notify_conns.http.port} answered HTTP 500" in str(err.value)
    assert "/hooks" not in str(err.value) and notify_conns.sentinel not in str(err.value)


@pytest.mark.parametrize(
    ("conn", "url"),
    [
        ({"conn_type": "http", "host": "https://hooks.example.com/a/b"}, "https://hooks.example.com/a/b"),
        ({"conn_type": "http", "host": "127.0.0.1", "port": 8080, "schema": "hooks"}, "http://127.0.0.1:8080/hooks"),
        ({"conn_type": "https", "host": "hooks.example.com", "extra": {"endpoint": "/x"}}, "https://hooks.example.com/x"),
        ({"conn_type": "webhook", "host": "hooks.example.com"}, "https://hooks.example.com/"),
    ],
)  # fmt: skip
def test_the_webhook_url_comes_from_the_http_connection(conn, url):
    from airflow.sdk import Connection

    from cmms_mlflow.integrations.notifiers import webhook_url

    if "extra" in conn:
        conn = conn | {"extra": json.dumps(conn["extra"])}
    assert webhook_url(Connection(conn_id="c", **conn)) == url


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("https://user:pw@hooks.example.com/x", "carries credentials"),
        ("file:///etc/passwd", "must be http(s)"),
        ("ftp://hooks.example.com/x", "must be http(s)"),
    ],
)
def test_a_webhook_url_with_credentials_or_another_scheme_is_refused(host, problem):
    from airflow.sdk import Connection

    from cmms_mlflow.exceptions import NotificationError
    from cmms_mlflow.integrations.notifiers import webhook_url

    with pytest.raises(NotificationError, match=re.escape(problem)):
        webhook_url(Connection(conn_id="c", conn_type="http", host=host))


def test_a_spec_without_notifications_gets_no_notifier_and_its_dags_no_failure_callback(shipped_spec):
    from cmms_mlflow.factory import build_training_dag
    from cmms_mlflow.integrations.notifiers import ModelEventNotifier

    assert ModelEventNotifier.for_spec(shipped_spec) is None
    dag = build_training_dag(shipped_spec)
    assert all(not task.on_failure_callback for task in dag.tasks)
    assert dag.get_task("promote_model").notifier is None


def test_a_spec_with_notifications_wires_them_into_its_dags(shipped_spec):
    from cmms_mlflow.factory import build_scoring_dag, build_training_dag
    from cmms_mlflow.integrations.notifiers import ModelEventNotifier
    from cmms_pm.spec import ModelSpec

    data = shipped_spec.to_dict()
    data["notifications"] = {"email_to": ["ml@cmms.example"], "webhook_conn_id": "hooks"}
    spec = ModelSpec.from_dict(data)
    training, scoring = build_training_dag(spec), build_scoring_dag(spec)
    for task in [*training.tasks, *scoring.tasks]:
        (callback,) = task.on_failure_callback
        assert isinstance(callback, ModelEventNotifier) and callback.webhook_conn_id == "hooks"
    for task_id in ("promote_model", "reject_model", "approve_promotion"):
        assert training.get_task(task_id).notifier.email_to == ("ml@cmms.example",)
    assert training.get_task("approve_promotion").notifier.email_conn_id is None  # -> smtp_default
