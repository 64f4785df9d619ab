"""The scoring DAG with a ``delivery`` section under ``dag.test()``: score_fleet → deliver upserts
the scores into the suite's PostgreSQL and posts the top alerts to the loopback receiver; a second
scoring of the same day replaces the rows (never duplicates); a suggestion's idempotency key is its
model, asset and day.
Each target's failure modes are in tests/plugins/cmms_mlflow/operators/test_delivery_ops.py."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from support import training_provenance

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "dag_fixtures"
NAME = "pm_delivery_rf"


@pytest.fixture(scope="module")
def spec():
    from cmms_pm.spec import load_spec

    return load_spec(FIXTURES / "models" / "pm_delivery.yaml")


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(FIXTURES / "model_specs.py")).get_dag("pm_delivery_scoring")


@pytest.fixture
def champion(mlflow_conn, client, tmp_path, spec):
    """A real (small) model of pm_delivery, registered and promoted as its champion."""
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.registry import model_registry
    from cmms_mlflow.registry.promotion import change_stage
    from cmms_mlflow.tracking.training_run import log_training_run
    from cmms_pm.batch import prepare_batch

    manifest = prepare_batch(
        spec=spec, frame=None, source="synthetic", n_samples=2000, target_column="failure_within_7d",
        interval_start="2026-11-24T02:00:00+00:00", interval_end="2026-11-25T02:00:00+00:00",
        out_uri=str(tmp_path / "batch"),
    )  # fmt: skip
    hook = MlflowHook()
    with hook.session() as session_client:
        experiment_id = hook.get_or_create_experiment(session_client, "pm_delivery")
        trained = log_training_run(
            session_client, experiment_id=experiment_id, manifest=manifest, spec=spec,
            estimator="random_forest", hyperparameters={"n_estimators": 10, "max_depth": 6},
            tags=training_provenance(spec), run_name="rf10",
        )  # fmt: skip
        version = model_registry.register_version(
            session_client, name=NAME, source=trained["model_uri"], run_id=trained["run_id"],
            description="delivery", tags={},
        )  # fmt: skip
    change_stage(
        client, name=NAME, version=str(version.version), stage="Production", lock_dir=tmp_path / "locks",
        actor="test", reason="delivery test", at="2026-11-26T00:00:00+00:00",
    )  # fmt: skip
    return str(version.version)


def test_scoring_delivers_to_the_table_and_the_webhook_and_a_second_run_of_the_day_replaces(
    dag, champion, postgres_server, http_receiver, monkeypatch
):
    database = f"cmms_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(database)
    token = "sentinel-Scores-" + uuid.uuid4().hex
    scores = f"postgres://postgres@127.0.0.1:{postgres_server.port}/{database}"
    monkeypatch.setenv("AIRFLOW_CONN_CMMS_SCORES", scores)
    webhook = {"conn_type": "http", "host": f"{http_receiver.url}/cmms/suggestions", "password": token,
               "extra": {"timeout": 5, "retry_delay": 0.05}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_CMMS_WORK_ORDERS", json.dumps(webhook))
    http_receiver.clear()
    assert {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} == {
        "score_fleet": [], "deliver": ["score_fleet"], "retention": ["deliver"],  # retention: the teardown
    }  # fmt: skip

    runs = []
    for hour in (3, 15):  # two scorings of one day (say a new champion at noon)
        conf = {"model_name": NAME, "n_units": 200, "risk_threshold": 0.5}
        run = dag.test(logical_date=datetime(2026, 11, 26, hour, tzinfo=UTC), run_conf=conf)
        assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        runs.append(run.run_id)
    # A manual run scores at its run_after (now): both runs score the same day (unless midnight passed).
    day = run.run_after.astimezone(UTC).date().isoformat()

    conn = psycopg2.connect(host="127.0.0.1", port=postgres_server.port, user="postgres", dbname=database)
    with conn, conn.cursor() as cursor:
        columns = "model_name, asset_id, scoring_day::text, airflow_run_id, model_version, alert, risk"
        cursor.execute(f"SELECT {columns} FROM pm_risk")
        rows = cursor.fetchall()
    conn.close()
    assert len(rows) == 200 and len({r[1] for r in rows}) == 200  # one row per asset, not two
    assert {(r[0], r[2], r[3], r[4]) for r in rows} == {(NAME, day, runs[1], champion)}
    alerts = sorted((r for r in rows if r[5]), key=lambda r: (-r[6], r[1]))[:5]

    posts = http_receiver.requests
    assert posts and len(posts) % 2 == 0 and len(posts) <= 10
    second = posts[len(posts) // 2 :]
    bodies = [json.loads(p.body) for p in second]
    assert [b["asset_id"] for b in bodies] == [r[1] for r in alerts]
    # Each suggestion's key is its model, asset and day: an asset suggested by both runs has one key.
    from cmms_pm.delivery import idempotency_key

    when = datetime.fromisoformat(day).date()
    for post in posts:
        asset = json.loads(post.body)["asset_id"]
        assert post.headers["Idempotency-Key"] == idempotency_key(NAME, asset, when), asset
    assert all(b["model_version"] == champion and b["scoring_day"] == day for b in bodies)
    assert all(b["reasons"] for b in bodies)  # the scoring's reason columns travel with the suggestion
    assert all(p.headers["Authorization"] == f"Bearer {token}" for p in posts)
