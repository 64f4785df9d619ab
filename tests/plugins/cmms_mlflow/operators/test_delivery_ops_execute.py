"""``execute(context)`` of plugins/cmms_mlflow/operators/delivery_ops.py's operator: the champion's
scores delivered to the spec's table (SQLite through an Airflow connection) and its top alerts to a
webhook (a real HTTP server on 127.0.0.1, in this process)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from operator_context import TaskInstance

from cmms_mlflow.operators.delivery_ops import DeliverScoresOperator
from cmms_pm.spec import ModelSpec


def test_scores_reach_the_table_once_per_asset_and_the_top_alerts_reach_the_webhook(
    pipeline, score_fleet, http_receiver, monkeypatch, tmp_path
):
    result, predictions, _ = score_fleet(risk_threshold="0.0")  # every machine an alert
    database = tmp_path / "scores.db"
    monkeypatch.setenv("AIRFLOW_CONN_CMMS_SCORES", json.dumps({"conn_type": "sqlite", "host": str(database)}))
    webhook = {"conn_type": "http", "host": f"{http_receiver.url}/hooks/cmms", "extra": {"retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_CMMS_WORK_ORDERS", json.dumps(webhook))
    http_receiver.clear()
    delivery = {
        "table": {"conn_id": "cmms_scores", "name": "pm_risk"},
        "webhook": {"conn_id": "cmms_work_orders", "top_k": 3},
    }
    spec = ModelSpec.from_dict({**pipeline.spec.to_dict(), "delivery": delivery})
    dag_id = spec.scoring_dag_id
    operator = DeliverScoresOperator(task_id="deliver_scores", spec=spec.to_dict(), scored=[result])
    context = {"ti": TaskInstance(dag_id=dag_id, run_id="scheduled__2026-07-02", task_id="deliver_scores")}

    delivered = operator.execute(context)

    assert delivered["rows"] == len(predictions) == 300
    assert delivered["table"]["holding_this_run"] == 300
    assert delivered["webhook"] == {"conn_id": "cmms_work_orders", "suggestions": 3, "sent": 3, "known": 0}
    with sa.create_engine(f"sqlite:///{database}").connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM pm_risk")).scalar() == 300
    assert len(http_receiver.requests) == 3
    # A retry delivers the same rows again: still one row per asset and day.
    assert operator.execute(context)["table"]["holding_this_run"] == 300
