"""The training DAG under a real scheduler (LocalExecutor): backfills, REST triggers, SIGKILL.

Uses the ``airflow_cluster`` fixture (tests/dags/conftest.py): api-server, scheduler and
dag-processor as separate processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from support import slot

from cmms_mlflow.registry import model_registry

pytestmark = pytest.mark.slow

DAG_ID = "predictive_maintenance_training"


@pytest.fixture
def cluster_client(airflow_cluster):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=airflow_cluster.mlflow_uri, registry_uri=airflow_cluster.mlflow_uri)


def test_invalid_conf_through_the_rest_api_is_refused_and_creates_no_run(airflow_cluster):
    before = {r["dag_run_id"] for r in airflow_cluster.dag_runs()}
    # The last: a valid name, but another spec's model (a spec's runs write only its own).
    for conf in (
        {"n_estimators": 0},
        {"data_source": "telemetry.xlsx"},
        {"f1_threshold": "high"},
        {"model_name": "ai4i_rf", "f1_threshold": 0.0, "min_improvement": -1.0},
    ):
        status, body = airflow_cluster.request(
            "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
        )
        assert status == 400, (conf, status, body)
        assert next(iter(conf)) in json.dumps(body)
    assert {r["dag_run_id"] for r in airflow_cluster.dag_runs()} == before


def test_three_day_backfill_trains_each_interval_once_and_keeps_one_champion(airflow_cluster, cluster_client):
    mine = slot("pm_backfill")
    model_name = mine.model
    conf = {"model_name": model_name, "experiment_name": f"sched-{model_name}", "n_samples": 3000}
    started = time.monotonic()
    out = airflow_cluster.cli(
        "backfill", "create", "--dag-id", mine.training,
        "--from-date", "2026-05-01T00:00:00+00:00", "--to-date", "2026-05-04T00:00:00+00:00",
        "--max-active-runs", "3", "--dag-run-conf", json.dumps(conf),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    backfill_runs = lambda: {  # noqa: E731
        r["dag_run_id"] for r in airflow_cluster.dag_runs(mine.training) if r["run_type"] == "backfill"
    }
    deadline = time.monotonic() + 60
    while len(backfill_runs()) < 3 and time.monotonic() < deadline:
        time.sleep(2)
    run_ids = backfill_runs()
    assert len(run_ids) == 3, run_ids
    runs = airflow_cluster.wait_for_runs(run_ids, 3, timeout=900, dag_id=mine.training)
    wall = time.monotonic() - started
    assert sorted(r["state"] for r in runs) == ["success"] * 3, [
        (r["dag_run_id"], airflow_cluster.task_instances(r["dag_run_id"], mine.training))
        for r in runs
        if r["state"] != "success"
    ]

    # The retention teardown ran in each worker (it asks Airflow which runs are active; three overlap).
    retention = [
        airflow_cluster.task_instances(r["dag_run_id"], mine.training)["retention"]["state"] for r in runs
    ]
    assert retention == ["success"] * 3

    versions = cluster_client.search_model_versions(f"name = '{model_name}'")
    assert len(versions) == 3
    intervals = sorted(v.tags["data_version"] for v in versions)
    assert intervals == [
        "2026-05-01T02:00:00+00:00/2026-05-02T02:00:00+00:00",
        "2026-05-02T02:00:00+00:00/2026-05-03T02:00:00+00:00",
        "2026-05-03T02:00:00+00:00/2026-05-04T02:00:00+00:00",
    ]
    assert {v.tags["airflow.run_type"] for v in versions} == {"backfill"}
    model_registry.check_invariants(cluster_client, model_name)
    champion = model_registry.get_champion(cluster_client, model_name)
    assert champion is not None and champion.tags["validation_status"] == "passed"
    # The policy: no version trained on data older than the champion's was promoted after it.
    for version in versions:
        if version.tags.get("validation_status") == "rejected":
            assert version.current_stage == "Archived" and version.tags["rejection_reason"]
    print(f"3-day backfill wall time: {wall:.0f} s")


def test_a_training_task_killed_with_sigkill_is_retried_and_leaves_no_run_running(
    airflow_cluster, cluster_client
):
    mine = slot("pm_kill")
    model_name = mine.model
    conf = {
        "model_name": model_name,
        "experiment_name": f"kill-{model_name}",
        "n_samples": 30000,  # long enough to be caught training (polled every second)
        "n_estimators": 150,
        "max_depth": 20,
    }
    status, run = airflow_cluster.request(
        "POST",
        f"/api/v2/dags/{mine.training}/dagRuns",
        {"logical_date": "2026-06-10T03:00:00+00:00", "conf": conf},
    )
    assert status == 200, run
    run_id = run["dag_run_id"]

    # Wait for the training task to be running with its MLflow run open, then kill it.
    deadline = time.monotonic() + 300
    pid = None
    while time.monotonic() < deadline:
        ti = airflow_cluster.task_instances(run_id, mine.training).get("train_model", {})
        experiment = cluster_client.get_experiment_by_name(conf["experiment_name"])
        running = (
            cluster_client.search_runs(
                [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
            )
            if experiment
            else []
        )
        if ti.get("state") == "running" and ti.get("pid") and running:
            pid = ti["pid"]
            break
        time.sleep(1)
    assert pid, "training never started"
    os.kill(pid, signal.SIGKILL)

    (finished,) = airflow_cluster.wait_for_runs({run_id}, 1, timeout=900, dag_id=mine.training)
    train = airflow_cluster.task_instances(run_id, mine.training)["train_model"]
    assert finished["state"] == "success", airflow_cluster.task_instances(run_id, mine.training)
    assert train["try_number"] >= 2
    runs = cluster_client.search_runs([experiment.experiment_id])
    statuses = sorted(r.info.status for r in runs)
    assert "RUNNING" not in statuses
    assert statuses.count("FINISHED") == 1 and statuses.count("FAILED") >= 1, statuses
    assert len(cluster_client.search_model_versions(f"name = '{model_name}'")) == 1


def test_a_backfill_created_through_the_rest_api_trains_on_its_interval(airflow_cluster, cluster_client):
    mine = slot("pm_rest_backfill")
    model_name = mine.model
    conf = {"model_name": model_name, "experiment_name": f"rest-{model_name}", "n_samples": 3000}
    status, backfill = airflow_cluster.request(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": mine.training,
            "from_date": "2026-05-10T00:00:00Z",
            "to_date": "2026-05-11T00:00:00Z",
            "max_active_runs": 1,
            "dag_run_conf": conf,
        },
    )
    assert status == 200, backfill
    deadline = time.monotonic() + 60
    run_ids: set[str] = set()
    while not run_ids and time.monotonic() < deadline:
        run_ids = {
            r["dag_run_id"]
            for r in airflow_cluster.dag_runs(mine.training)
            if r["dag_run_id"].startswith("backfill__2026-05-11")
        }
        time.sleep(2)
    (run,) = airflow_cluster.wait_for_runs(run_ids, 1, timeout=600, dag_id=mine.training)
    assert run["state"] == "success", airflow_cluster.task_instances(run["dag_run_id"], mine.training)
    (version,) = cluster_client.search_model_versions(f"name = '{model_name}'")
    assert version.tags["data_version"] == "2026-05-10T02:00:00+00:00/2026-05-11T02:00:00+00:00"
    assert version.tags["airflow.run_type"] == "backfill"
    model_registry.check_invariants(cluster_client, model_name)
