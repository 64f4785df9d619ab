"""Lineage (OpenLineage, file transport) and the pipeline's metrics (StatsD), from real task processes.

The ``airflow_cluster`` writes every OpenLineage event to a file and sends Airflow's metrics to a
StatsD receiver on 127.0.0.1 (tests/dags/conftest.py). Two nightly-style training runs of one
model (the second one has a champion to compare with, so drift and the champion's F1 exist),
then the scoring DAG; the tests read what the runs reported.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote

import pytest
from support import slot

pytestmark = pytest.mark.slow

PROJECT_DIR = Path(__file__).resolve().parents[2]
#: A copy of the shipped spec owning its own model (a spec's runs write only its own model).
OBS = slot("pm_obs")
TRAINING = OBS.training
SCORING = OBS.scoring


def _trigger(cluster, dag_id: str, conf: dict) -> str:
    body = {"logical_date": None, "conf": conf}
    status, run = cluster.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
    assert status == 200, run
    (finished,) = cluster.wait_for_runs({run["dag_run_id"]}, 1, timeout=600, dag_id=dag_id)
    assert finished["state"] == "success", cluster.task_instances(run["dag_run_id"], dag_id)
    return run["dag_run_id"]


@pytest.fixture(scope="module")
def pipeline(airflow_cluster):
    """(model name, training run ids, scoring run id) of two training runs and one scoring run."""
    model = OBS.model
    conf = {
        "model_name": model, "experiment_name": f"obs-{model}", "n_samples": 2500, "n_estimators": 20,
        "f1_threshold": 0.3,
    }  # fmt: skip
    training = [_trigger(airflow_cluster, TRAINING, conf) for _ in range(2)]
    scoring = _trigger(airflow_cluster, SCORING, {"model_name": model, "n_units": 300, "risk_threshold": 0.5})
    return model, training, scoring


def _xcom(cluster, dag_id: str, run_id: str, task_id: str):
    path = (
        f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
        "/xcomEntries/return_value?deserialize=true"
    )
    status, body = cluster.request("GET", path)
    assert status == 200, body
    value = body["value"]
    return json.loads(value) if isinstance(value, str) else value


def _events(cluster, run_ids: set[str]) -> list[dict]:
    """The COMPLETE events of the tasks of the given DAG runs."""
    events = []
    for path in sorted(cluster.lineage_dir.glob("event*")):
        event = json.loads(path.read_text())
        airflow = event.get("run", {}).get("facets", {}).get("airflow", {})
        run_id = (airflow.get("dagRun") or {}).get("run_id")
        if event.get("eventType") == "COMPLETE" and run_id in run_ids and "." in event["job"]["name"]:
            events.append(event)
    return events


def _key(dataset: dict) -> tuple[str, str]:
    return dataset["namespace"], dataset["name"]


def _write_graph(events: list[dict], run_ids: set[str]) -> None:
    """The lineage of one training run and its scoring, as text, for people reading the CI
    artifacts (test-artifacts/lineage/graph.txt, git-ignored)."""
    lines = []
    for event in sorted(events, key=lambda e: e["eventTime"]):
        if event["run"]["facets"]["airflow"]["dagRun"]["run_id"] not in run_ids:
            continue
        show = lambda ds: f"{ds['namespace']} {ds['name']}"  # noqa: E731
        lines.append(f"{event['job']['name']}")
        lines += [f"    in : {show(ds)}" for ds in event.get("inputs", [])]
        lines += [f"    out: {show(ds)}" for ds in event.get("outputs", [])]
        facet = event["run"]["facets"].get("cmms_mlflow")
        if facet:
            lines.append("    run facet cmms_mlflow: " + json.dumps(
                {k: v for k, v in facet.items() if not k.startswith("_")}, sort_keys=True))  # fmt: skip
    folder = PROJECT_DIR / "test-artifacts" / "lineage"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "graph.txt").write_text("\n".join(lines) + "\n")


def test_a_runs_lineage_connects_source_batch_model_version_and_scoring_output(airflow_cluster, pipeline):
    from mlflow import MlflowClient

    cluster = airflow_cluster
    model, training, scoring = pipeline
    client = MlflowClient(tracking_uri=cluster.mlflow_uri, registry_uri=cluster.mlflow_uri)
    deadline = time.monotonic() + 60  # the listener writes the last events just after the run ends
    while True:
        events = _events(cluster, {*training, scoring})
        tasks = {e["job"]["name"].split(".", 1)[1] for e in events}
        wanted = {"extract_data", "train_model", "register_model", "score_fleet"}
        if wanted <= tasks or time.monotonic() > deadline:
            break
        time.sleep(2)
    by_task = defaultdict(list)
    for event in events:
        by_task[event["job"]["name"].split(".", 1)[1]].append(event)
    for task in ("extract_data", "validate_data", "train_model", "register_model", "stage_model",
                 "validate_model", "report", "score_fleet"):  # fmt: skip
        assert by_task[task], f"no COMPLETE event with lineage for {task}: {sorted(by_task)}"

    # The graph: dataset -> job -> dataset, over every task of both DAGs.
    edges = defaultdict(set)
    for event in events:
        job = ("job", event["job"]["name"])
        for dataset in event.get("inputs", []):
            edges[_key(dataset)].add(job)
        for dataset in event.get("outputs", []):
            edges[job].add(_key(dataset))

    scored = _xcom(cluster, SCORING, scoring, "score_fleet")[0]
    version = scored["model_version"]
    mv = client.get_model_version(model, version)
    trained_by = mv.tags["airflow.run_id"]
    manifest = _xcom(cluster, TRAINING, trained_by, "extract_data")
    source = ("cmms-synthetic", f"{OBS.spec}/telemetry")
    batch = ("file", manifest["uri"])
    mlflow_ns = "mlflow+" + cluster.mlflow_uri
    run = (mlflow_ns, f"runs/{mv.run_id}")
    model_version = (mlflow_ns, f"models/{model}/{version}")
    predictions = ("file", scored["predictions_uri"])
    path = [
        source, ("job", f"{TRAINING}.extract_data"), batch, ("job", f"{TRAINING}.train_model"), run,
        ("job", f"{TRAINING}.register_model"), model_version, ("job", f"{SCORING}.score_fleet"), predictions,
    ]  # fmt: skip
    _write_graph(events, {*training, scoring} - {r for r in training if r != trained_by})
    for here, there in zip(path, path[1:], strict=False):
        assert there in edges[here], (here, there, sorted(edges[here]))

    # Facets: the data digest, the MLflow run id and the model version.
    (extract,) = [e for e in by_task["extract_data"] if e["outputs"][0]["name"] == manifest["uri"]]
    batch_facets = extract["outputs"][0]["facets"]
    assert batch_facets["cmms_batch"]["digest"] == manifest["digest"] == mv.tags["data_digest"]
    assert batch_facets["version"]["datasetVersion"] == manifest["digest"]
    (train,) = [e for e in by_task["train_model"] if e["outputs"][0]["name"] == f"runs/{mv.run_id}"]
    assert train["run"]["facets"]["cmms_mlflow"]["runId"] == mv.run_id
    assert train["run"]["facets"]["cmms_mlflow"]["dataDigest"] == manifest["digest"]
    (register,) = [e for e in by_task["register_model"] if e["outputs"][0]["name"] == model_version[1]]
    facet = register["outputs"][0]["facets"]["cmms_model_version"]
    assert (facet["modelUri"], facet["runId"]) == (f"models:/{model}/{version}", mv.run_id)
    assert register["run"]["facets"]["cmms_mlflow"]["modelVersion"] == version
    (score,) = by_task["score_fleet"]
    assert score["run"]["facets"]["cmms_mlflow"]["modelVersion"] == version


def _statsd(statsd, name: str) -> list[tuple[float, str]]:
    """(value, type) of every StatsD line for ``name`` (``airflow.`` prefix included)."""
    found = []
    for line in list(statsd.lines):
        metric, _, rest = line.partition(":")
        if metric == name:
            value, _, kind = rest.partition("|")
            found.append((float(value), kind.split("|")[0]))
    return found


def test_the_pipeline_reports_f1_drift_decisions_and_scored_rows_to_statsd(airflow_cluster, statsd, pipeline):
    from mlflow import MlflowClient

    model, training, scoring = pipeline
    client = MlflowClient(tracking_uri=airflow_cluster.mlflow_uri, registry_uri=airflow_cluster.mlflow_uri)
    second = client.get_model_version(model, "2")
    name = f"airflow.cmms.{model}"
    challenger = _statsd(statsd, f"{name}.holdout_f1.challenger")
    assert len(challenger) == 2 and {k for _, k in challenger} == {"g"}, challenger
    assert challenger[-1][0] == pytest.approx(float(second.tags["validation_f1"]), abs=1e-6)
    (champion,) = _statsd(statsd, f"{name}.holdout_f1.champion")  # only the second run had a champion
    assert champion[0] == pytest.approx(float(second.tags["champion_f1"]), abs=1e-6)
    (psi,) = _statsd(statsd, f"{name}.drift.max_psi")
    assert psi[0] == pytest.approx(float(second.tags["drift_max_psi"]), abs=1e-3)
    assert len(_statsd(statsd, f"{name}.drift.features_drifted")) == 1
    decisions = _statsd(statsd, f"{name}.decision.promoted") + _statsd(statsd, f"{name}.decision.rejected")
    assert sum(v for v, _ in decisions) == 2 and {k for _, k in decisions} == {"c"}
    assert _statsd(statsd, f"{name}.decision.promoted")[0][0] == 1  # the first run: no champion yet
    scored = _xcom(airflow_cluster, SCORING, scoring, "score_fleet")[0]
    assert _statsd(statsd, f"{name}.scoring.rows_scored") == [(300.0, "c")]
    assert _statsd(statsd, f"{name}.scoring.rows_at_risk") == [(float(scored["at_risk"]), "c")]
    assert _statsd(statsd, f"{name}.scoring.rows_flagged") == [(float(scored["flagged"]), "c")]
