"""Realized outcomes and retraining on evidence, end to end: the outcomes DAG of
tests/dag_fixtures/models/pm_outcomes.yaml under ``dag.test()`` against a real MLflow store.

The fleet is synthetic and its truth known: 30 assets scored daily for 7 days, v1 (artifacts gone:
registry-only) alerting exactly the assets that fail within the horizon, then v2 (the champion)
alerting at random. One run measures both, logs the days, stores the JSON the performance route
serves, records one retraining request and emits the retrain Asset event that schedules training.
A second evaluation the same day asks for nothing (tested at the operator: no second DAG run).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "dag_fixtures"
NAME = "pm_outcomes_rf"
HORIZON = pd.Timedelta(hours=48)


@pytest.fixture(scope="module")
def spec():
    from cmms_pm.spec import load_spec

    return load_spec(FIXTURES / "models" / "pm_outcomes.yaml")


@pytest.fixture(scope="module")
def dags(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(FIXTURES / "model_specs.py"))
    return bag.get_dag("pm_outcomes_outcomes"), bag.get_dag("pm_outcomes_training")


def _register(client, versions: int) -> list[str]:
    """Versions with no model behind them (their artifacts are gone): outcomes need none."""
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.registry import model_registry

    experiment_id = MlflowHook().get_or_create_experiment(client, "pm_outcomes")
    made = []
    for _ in range(versions):
        run = client.create_run(experiment_id)
        made.append(
            str(
                model_registry.register_version(
                    client, name=NAME, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                    description="outcomes test", tags={},
                ).version
            )
        )  # fmt: skip
    return made


def _fleet(now: pd.Timestamp, v1: str, v2: str) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """Seven daily scorings at 03:00 (v1 the first three, v2 the rest; all within the DAG's lookback of
    window 5 + horizon 2 + 1 days) and the failure log they are judged by."""
    rng = np.random.default_rng(20)
    first = (now - pd.Timedelta(days=7)).normalize() + pd.Timedelta(hours=3)
    assets = [f"EQ-{i:03d}" for i in range(30)]
    failures = [
        (a, first + pd.Timedelta(hours=float(rng.uniform(1, 24 * 7)))) for a in assets if rng.uniform() < 0.7
    ]
    failures = [(a, t) for a, t in failures if t < now - pd.Timedelta(hours=2)]
    failures.append(("EQ-000", now - pd.Timedelta(hours=1)))  # the newest outcome known
    days = []
    for day in range(7):
        at = first + pd.Timedelta(days=day)
        soon = [any(x == a and at < t <= at + HORIZON for x, t in failures) for a in assets]
        version = v1 if day < 3 else v2
        alert = soon if version == v1 else list(rng.uniform(size=len(assets)) < 0.5)
        days.append(
            pd.DataFrame(
                {
                    "equipment_id": assets,
                    "failure_probability": [0.9 if a else 0.1 for a in alert],
                    "at_risk": alert,
                    "contract_ok": True,
                    "contract_issues": "",
                    "model_name": NAME,
                    "model_version": version,
                    "scored_at": at,
                    "decision_threshold": 0.35 if version == v1 else 0.5,
                }
            )
        )
    log = pd.DataFrame(failures, columns=["asset", "failed_at"]).assign(component="bearing")
    # Reported, not fatal: a failure stamped tomorrow and one of an asset never scored.
    odd = pd.DataFrame(
        {
            "asset": ["EQ-001", "NOT-OURS"],
            "failed_at": [now + pd.Timedelta(days=1), now - pd.Timedelta(days=2)],
            "component": ["seal", "seal"],
        }
    )
    return days, pd.concat([log, odd], ignore_index=True)


def _store_scorings(client, spec, days: list[pd.DataFrame]) -> list[str]:
    """Each day's predictions where the scoring DAG writes them, with its summary run."""
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.tracking.champion_scoring import log_summary
    from cmms_pm.batch import batch_uri, data_root
    from cmms_pm.data import write_frame
    from cmms_pm.fleet import summarize

    experiment_id = MlflowHook().get_or_create_experiment(client, spec.scoring_experiment)
    uris = []
    for frame in days:
        run_id = f"scheduled__{frame['scored_at'].iloc[0].isoformat()}"
        uri = write_frame(
            frame, f"{batch_uri(data_root(), spec.scoring_dag_id, run_id)}/{NAME}/predictions.parquet"
        )
        summary = summarize(
            frame, threshold=float(frame["decision_threshold"].iloc[0]), id_columns=["equipment_id"]
        )
        tags = {
            "airflow.dag_id": spec.scoring_dag_id,
            "airflow.run_id": run_id,
            "airflow.task_id": "score_fleet",
        }
        log_summary(client, experiment_id=experiment_id, summary=summary, predictions_uri=uri, tags=tags,
                    earlier_runs=[])  # fmt: skip
        uris.append(uri)
    return uris


def _retrain_events(spec) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from cmms_mlflow.integrations.assets import retrain_asset

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == retrain_asset(spec.name).uri)
        ).all()  # fmt: skip
        return [dict(row.extra or {}) for row in rows]


def test_outcomes_are_measured_logged_served_and_a_drop_asks_for_exactly_one_retraining(
    dags, spec, mlflow_conn, client, notify_conns
):
    from cmms_mlflow.integrations.assets import retrain_asset
    from cmms_mlflow.registry import history, model_registry
    from cmms_mlflow.tracking import realized_outcomes
    from cmms_pm.batch import data_root
    from cmms_pm.outcomes import retrain_key

    outcomes_dag, training_dag = dags
    # The training DAG keeps its cron and is also scheduled by the retrain Asset.
    assert type(training_dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert training_dag.timetable.timetable.expression == "0 2 * * *"
    assert [a.uri for a in training_dag.timetable.asset_condition.objects] == [retrain_asset(spec.name).uri]
    assert {t.task_id: sorted(t.upstream_task_ids) for t in outcomes_dag.tasks} == {
        "measure_outcomes": [], "request_retraining": ["measure_outcomes"],
    }  # fmt: skip

    v1, v2 = _register(client, 2)
    model_registry.transition(client, NAME, v2, "Production")
    now = pd.Timestamp(datetime.now(UTC))
    days, log = _fleet(now, v1, v2)
    uris = _store_scorings(client, spec, days)
    os.remove(uris[0])  # retention removed the oldest scoring: reported, the rest still measured
    incoming = Path(data_root()) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    log.to_csv(incoming / "pm_outcomes_failures.csv", index=False)

    run = outcomes_dag.test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"measure_outcomes": "success", "request_retraining": "success"}, states
    measured = run.get_task_instance("measure_outcomes").xcom_pull(task_ids="measure_outcomes")
    assert (measured["future"], measured["unknown_assets"], measured["missing_prediction_files"]) == (1, 1, 1)
    assert measured["champion"] == v2 and measured["retrain"]["version"] == v2

    # The stored JSON (what GET .../performance serves), newest version first.
    served = realized_outcomes.read_performance(client, NAME)
    assert [p["version"] for p in served] == [v2, v1]
    by_version = {p["version"]: p for p in served}
    # v1 alerted exactly the assets that failed within the horizon: every matured day is perfect.
    v1_days = by_version[v1]["days"]
    assert len(v1_days) == 2  # its first day's file is gone
    assert all(d["precision"] == 1.0 and d["recall"] == 1.0 and d["fp"] == d["fn"] == 0 for d in v1_days)
    for d in v1_days:  # lead times: from each alert to its asset's next failure, within the horizon
        assert d["lead_time_hours_median"] is None or 0 < d["lead_time_hours_median"] <= 48
    assert by_version[v1]["threshold"] == 0.35
    # v2 alerted at random: its window is well below the floor, and that is the request's reason.
    window = by_version[v2]["window"]
    assert window["f1"] < 0.5 and window["tp"] + window["fn"] >= 3
    # Only matured days: the last scoring (< 48 h before the newest failure) is pending.
    matured_days = {d["day"] for d in by_version[v2]["days"]}
    assert (days[-1]["scored_at"].iloc[0].strftime("%Y-%m-%d") not in matured_days) and by_version[v2][
        "pending"
    ]
    # MLflow: the monitoring run of v2 has one point per matured day, step = days since its first day.
    run_id = by_version[v2]["monitoring_run_id"]
    monitoring = client.get_run(run_id)
    assert (monitoring.data.tags["outcomes_model"], monitoring.data.tags["outcomes_version"]) == (NAME, v2)
    steps = sorted(m.step for m in client.get_metric_history(run_id, "realized_f1"))
    first = pd.Timestamp(by_version[v2]["first_day"])
    assert steps == sorted((pd.Timestamp(d) - first).days for d in matured_days)

    # The Models page's version view shows the same series (newest days last) and window.
    from cmms_mlflow.www.model_overview import outcomes_of

    page = outcomes_of(client, NAME, v2)
    assert page["window"] == window and page["days"] == by_version[v2]["days"] and page["windowDays"] == 5
    assert outcomes_of(client, NAME, "999") is None

    # Exactly one retraining request: in the history with its reason, and as the Asset event.
    day = measured["retrain"]["day"]
    event = history.recorded(client, NAME, retrain_key(spec.name, day))
    assert event is not None and event["type"] == "retrain_request" and "realized f1" in event["reason"]
    assert event["airflow"]["dag_id"] == outcomes_dag.dag_id
    extras = _retrain_events(spec)
    assert len(extras) == 1 and extras[0]["reason"] == event["reason"] and extras[0]["model_name"] == NAME
    # ... and announced on the spec's webhook (its only notification event).
    (post,) = [r.json for r in notify_conns.http.requests]
    assert (post["event"], post["decision"], post["version"]) == ("retrain_requested", "retrain", v2)
    assert post["reason"] == event["reason"] and post["model"] == NAME

    # A second evaluation the same day asks for nothing (another run: the day has its request).
    from airflow.sdk.exceptions import AirflowSkipException

    from cmms_mlflow.operators.outcomes_ops import MlflowRequestRetrainingOperator

    again = MlflowRequestRetrainingOperator(
        task_id="request_retraining", spec=spec.to_dict(), model_name=NAME, measured=measured,
        outlets=[retrain_asset(spec.name)],
    )  # fmt: skip
    ti = SimpleNamespace(dag_id=outcomes_dag.dag_id, run_id="manual__again", task_id="request_retraining",
                         try_number=2, get_dr_count=lambda **_: 0, xcom_push=lambda **_: None)  # fmt: skip
    with pytest.raises(AirflowSkipException, match="already requested"):
        again.execute({"ti": ti, "outlet_events": {}})
    # The run that recorded it, retried (it died between the history and the event): emits, records once.
    from operator_context import OutletEvents

    retry, events = SimpleNamespace(**{**vars(ti), "run_id": run.run_id}), OutletEvents()
    assert again.execute({"ti": retry, "outlet_events": events})["reason"] == event["reason"]
    assert events[retrain_asset(spec.name)].extra["reason"] == event["reason"]
    resent = [r.json for r in notify_conns.http.requests][1:]
    assert [r["event_id"] for r in resent] == [post["event_id"]]  # the same event: receivers dedupe
    retrains = [e for e in history.read(client, NAME, limit=50) if e["type"] == "retrain_request"]
    assert len(retrains) == 1
    # Nor a retraining while one runs (the next day, say): skipped, nothing recorded.
    busy = SimpleNamespace(**{**vars(ti), "get_dr_count": lambda **_: 1})
    tomorrow = {**measured, "retrain": {**measured["retrain"], "day": "2999-01-01"}}
    again.measured = tomorrow
    with pytest.raises(AirflowSkipException, match="queued or running"):
        again.execute({"ti": busy, "outlet_events": {}})
    assert history.recorded(client, NAME, retrain_key(spec.name, "2999-01-01")) is None
    json.dumps(served)  # the route's answer is plain JSON
