"""The ``deliver`` task's targets for real: the suite's PostgreSQL and the loopback HTTP receiver.

The end-to-end run (score_fleet → deliver under ``dag.test()``) is in
tests/dags/test_scoring_delivery.py; here each target's failure modes: a hostile id, a schema-qualified
table created on first use, a process killed in the middle of the upsert (nothing written), a
webhook that is down (retried, then failed clearly), one that refuses (not retried), one that knows
the key already (delivered), and the token never in a log line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pandas as pd
import psycopg2
import pytest

from cmms_mlflow.exceptions import DeliveryRefusedError, DeliveryUnavailable
from cmms_mlflow.operators.delivery_ops import DeliverScoresOperator
from cmms_pm import delivery

HOSTILE = "EQ-1'); DROP TABLE cmms.pm_risk; --"


def _rows(day: str, ids: list[str], run: str, risks: list[float] | None = None) -> list[dict]:
    risks = risks or [0.9] * len(ids)
    frame = pd.DataFrame(
        {
            "equipment_id": ids,
            "failure_probability": risks,
            "at_risk": [r >= 0.5 for r in risks],
            "contract_issues": "",
            "model_name": "pm",
            "model_version": "7",
            "scored_at": pd.Timestamp(f"{day}T02:00:00+00:00"),
        }
    )
    return delivery.records(
        frame, id_columns=["equipment_id"], threshold=0.5, timezone="UTC", airflow_run_id=run
    )


@pytest.fixture
def database(postgres_server):
    """A fresh database with a ``cmms`` schema; (SQLAlchemy URL, psycopg2 connect kwargs)."""
    name = f"cmms_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    kwargs = {"host": "127.0.0.1", "port": postgres_server.port, "user": "postgres", "dbname": name}
    conn = psycopg2.connect(**kwargs)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("CREATE SCHEMA cmms")
    conn.close()
    return url, kwargs


ROWS = "SELECT asset_id, scoring_day::text, airflow_run_id FROM cmms.pm_risk"
INSERTING = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO cmms.pm_risk%'"


def _select(kwargs: dict, sql: str = ROWS) -> list:
    conn = psycopg2.connect(**kwargs)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return sorted(cursor.fetchall())
    finally:
        conn.close()


def test_postgres_upsert_creates_the_table_keeps_one_row_per_asset_and_day_and_stores_ids_as_data(database):
    import sqlalchemy as sa

    url, kwargs = database
    engine = sa.create_engine(url)
    first = _rows("2026-11-26", ["EQ-1", HOSTILE], "run-1")
    assert delivery.upsert(engine, "cmms.pm_risk", first, create=True, where="test") == 2
    assert delivery.upsert(engine, "cmms.pm_risk", first, create=True, where="test") == 2
    assert _select(kwargs) == [("EQ-1", "2026-11-26", "run-1"), (HOSTILE, "2026-11-26", "run-1")]
    ids = _select(kwargs, "SELECT ids FROM cmms.pm_risk")
    assert {json.loads(row[0])["equipment_id"] for row in ids} == {"EQ-1", HOSTILE}
    delivery.upsert(
        engine, "cmms.pm_risk", _rows("2026-11-26", ["EQ-1", HOSTILE], "run-2"), create=True, where="t"
    )
    delivery.upsert(engine, "cmms.pm_risk", _rows("2026-11-27", ["EQ-1"], "run-3"), create=True, where="t")
    assert _select(kwargs) == [
        ("EQ-1", "2026-11-26", "run-2"), ("EQ-1", "2026-11-27", "run-3"), (HOSTILE, "2026-11-26", "run-2"),
    ]  # fmt: skip
    engine.dispose()


_KILLABLE_UPSERT = """
import sys, pandas as pd, sqlalchemy as sa
from cmms_pm import delivery
n = 100_000
frame = pd.DataFrame({"equipment_id": [f"EQ-{i}" for i in range(n)], "failure_probability": 0.7,
                      "at_risk": True, "contract_issues": "", "model_name": "pm", "model_version": "8",
                      "scored_at": pd.Timestamp("2026-11-28T02:00:00+00:00")})
rows = delivery.records(frame, id_columns=["equipment_id"], threshold=0.5, timezone="UTC",
                        airflow_run_id="big")
print("upserting", flush=True)
delivery.upsert(sa.create_engine(sys.argv[1]), "cmms.pm_risk", rows, create=True, where="kill test")
print("done", flush=True)
"""


def test_a_process_killed_in_the_middle_of_the_upsert_leaves_the_table_as_it_was(database, tmp_path):
    import sqlalchemy as sa

    url, kwargs = database
    engine = sa.create_engine(url)
    delivery.upsert(
        engine, "cmms.pm_risk", _rows("2026-11-27", ["EQ-1", "EQ-2"], "run-1"), create=True, where="t"
    )
    engine.dispose()
    before = _select(kwargs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE_UPSERT, url], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        # Wait until the transaction has written rows (an INSERT of this run is running), then kill.
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            active = _select(kwargs, INSERTING + " AND state = 'active'")
            if active[0][0]:
                break
            assert time.monotonic() < deadline, "the upsert never started"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while _select(kwargs, INSERTING)[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert _select(kwargs) == before  # the killed transaction left nothing


def _suggestions(count: int) -> list[dict]:
    rows = _rows(
        "2026-11-26", [f"EQ-{n}" for n in range(count)], "run-1", risks=[0.9 - n / 100 for n in range(count)]
    )
    return delivery.suggestions(
        rows, top_k=count, spec_name="pm", airflow={"dag_id": "pm_scoring", "run_id": "r"}
    )


def _operator() -> DeliverScoresOperator:
    return DeliverScoresOperator(task_id="deliver", spec={}, scored=[])


def _webhook(monkeypatch, url: str, token: str, **extra) -> None:
    conn = {
        "conn_type": "http",
        "host": url,
        "password": token,
        "extra": {"timeout": 2, "retry_delay": 0.05, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CMMS_WORK_ORDERS", json.dumps(conn))


def test_suggestions_reach_the_webhook_with_idempotency_keys_and_the_token_is_never_logged(
    monkeypatch, http_receiver, caplog
):
    http_receiver.clear()
    token = "sentinel-Deliver-" + uuid.uuid4().hex
    _webhook(monkeypatch, f"{http_receiver.url}/cmms/work-orders", token)
    found = _suggestions(3)
    http_receiver.routes["/cmms/work-orders"] = (200, {})
    with caplog.at_level("DEBUG"):
        result = _operator().to_webhook(found, "cmms_work_orders")
    assert (result["sent"], result["known"]) == (3, 0)
    got = http_receiver.wait_for(3)
    assert [r.headers["Idempotency-Key"] for r in got] == [s["idempotency_key"] for s in found]
    assert all(r.headers["Authorization"] == f"Bearer {token}" for r in got)
    bodies = [json.loads(r.body) for r in got]
    assert [(b["asset_id"], b["rank"], b["model_version"], b["scoring_day"]) for b in bodies] == [
        ("EQ-0", 1, "7", "2026-11-26"), ("EQ-1", 2, "7", "2026-11-26"), ("EQ-2", 3, "7", "2026-11-26"),
    ]  # fmt: skip
    # The CMMS knows a key already (a rerun): delivered, not an error.
    http_receiver.routes["/cmms/work-orders"] = (409, {})
    assert _operator().to_webhook(found, "cmms_work_orders")["known"] == 3
    # Down (HTTP 503): retried in the task, then a retryable failure naming the attempts.
    http_receiver.clear()
    http_receiver.routes["/cmms/work-orders"] = (503, {})
    with (
        caplog.at_level("DEBUG"),
        pytest.raises(DeliveryUnavailable, match=r"answered HTTP 503 \(3 attempts\); 0 of 3"),
    ):
        _operator().to_webhook(found, "cmms_work_orders")
    assert len(http_receiver.requests) == 3
    # Refused (HTTP 400): failed for good at once, not retried.
    http_receiver.clear()
    http_receiver.routes["/cmms/work-orders"] = (400, {})
    with pytest.raises(DeliveryRefusedError, match="HTTP 400"):
        _operator().to_webhook(found, "cmms_work_orders")
    assert len(http_receiver.requests) == 1
    assert token not in caplog.text


def test_a_webhook_nobody_listens_on_is_retried_then_fails_clearly(monkeypatch):
    from support import free_port

    _webhook(monkeypatch, f"http://127.0.0.1:{free_port()}/hooks", "tok-" + uuid.uuid4().hex, retries=1)
    started = time.monotonic()
    down = r"at http://127\.0\.0\.1:\d+ could not be reached \(ConnectionError\) \(2 attempts\)"
    with pytest.raises(DeliveryUnavailable, match=down):
        _operator().to_webhook(_suggestions(2), "cmms_work_orders")
    assert time.monotonic() - started < 10
    monkeypatch.delenv("AIRFLOW_CONN_CMMS_WORK_ORDERS")
    with pytest.raises(DeliveryRefusedError, match="'cmms_work_orders' .* is not defined"):
        _operator().to_webhook(_suggestions(1), "cmms_work_orders")
