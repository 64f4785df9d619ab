"""Predict latency and throughput: the model API's predict route vs ``mlflow models serve``, same champion.

* ours: ``POST /api/v1/ml/models/{name}/predict`` on Airflow's api-server (one worker, its default),
  Bearer JWT; the answer carries risk, alert, reasons (the spec's ``serving.reasons``) and contract
  issues per row, and every request passes Airflow's authentication and DAG authorization;
* MLflow: ``mlflow models serve -m models:/{name}/{version} --env-manager local`` (one uvicorn
  worker, its default), from the same venv on 127.0.0.1, ``POST /invocations`` with
  ``{"dataframe_records": [...]}``: the pyfunc's ``predict`` (the class), no reasons, no checks.

The champion is the shipped spec's model (random forest, its own hyperparameters) trained on
``--train-rows`` synthetic rows with the pipeline's code and provenance, then registered and
promoted in a fresh SQLite store. For 1, 10 and 1,000 rows per request, ``--clients`` concurrent
keep-alive clients send the same pre-encoded body; the two servers alternate in two rounds.
One run, one printed table with the ratios (target: our p50 and p99 <= MLflow's, throughput >= it)::

    python bench/predict_latency.py [--requests 600] [--clients 50] [--sizes 1,10,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import api_latency
from lib import (
    PROJECT_DIR,
    Cluster,
    Postgres,
    clean_env,
    free_port,
    http_answers,
    machine,
    start_server,
    stop_processes,
    table,
)

MODEL = "predictive_maintenance_rf"
SPEC = PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml"
ROUTE = f"/api/v1/ml/models/{MODEL}/predict"


def train_champion(mlflow_uri: str, artifacts: str, train_rows: int, work: Path) -> str:
    """The shipped spec's model, trained by the pipeline's code and promoted; returns its version."""
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    from mlflow import MlflowClient

    from cmms_mlflow.registry import model_registry
    from cmms_mlflow.tracking.training_run import log_training_run
    from cmms_pm.batch import prepare_batch
    from cmms_pm.spec import load_spec

    spec = load_spec(SPEC)
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    experiment = client.create_experiment("bench_predict", artifact_location=artifacts)
    manifest = prepare_batch(
        spec=spec, frame=None, source="synthetic", n_samples=train_rows, target_column=spec.target,
        interval_start="2026-11-24T02:00:00+00:00", interval_end="2026-11-25T02:00:00+00:00",
        out_uri=str(work / "batch"),
    )  # fmt: skip
    provenance = {"model_spec": spec.name, "airflow.dag_id": spec.training_dag_id,
                  "airflow.run_id": "bench__predict", "airflow.task_id": "train_model"}  # fmt: skip
    trained = log_training_run(
        client, experiment_id=experiment, manifest=manifest, spec=spec, estimator=spec.estimator,
        hyperparameters=dict(spec.estimator_params), tags=provenance, run_name="bench-predict",
    )  # fmt: skip
    version = model_registry.register_version(
        client, name=MODEL, source=trained["model_uri"], run_id=trained["run_id"], description="bench",
        tags={},
    )  # fmt: skip
    model_registry.promote(
        client, MODEL, str(version.version), expected_champion=None, lock_dir=None,
        audit={"promoted_by": "bench", "promoted_at": "2026-11-27T00:00Z", "promotion_reason": "bench"},
        key="benchpredict",
    )  # fmt: skip
    return str(version.version)


def start_mlflow_serve(mlflow_uri: str, version: str, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(
        "mlflow models serve",
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/{version}",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        http_answers(base + "/ping", statuses={200}),
        env=clean_env(MLFLOW_TRACKING_URI=mlflow_uri, MLFLOW_REGISTRY_URI=mlflow_uri),
        log=work / "mlflow-serve.log", timeout=300, interval=1,
    )  # fmt: skip
    return proc, base


def load(base_url: str, path: str, body: bytes, headers: dict[str, str], requests: int, clients: int):
    """``requests`` POSTs of ``body`` from ``clients`` keep-alive clients: (latencies s, errors, wall s)."""
    began = time.perf_counter()
    sent = {"Content-Type": "application/json", **headers}
    latencies, errors = api_latency.load(base_url, path, sent, requests, body=body, clients=clients)
    return latencies, errors, time.perf_counter() - began


def percentile_99(values: list[float]) -> float:
    return api_latency._percentile(values, 0.99)


def fleet_rows(count: int) -> list[dict]:
    from cmms_pm.data import generate_telemetry
    from cmms_pm.schema import FEATURES

    rows = json.loads(generate_telemetry(count, 2026)[FEATURES].to_json(orient="records"))
    for number, row in enumerate(rows):
        row["equipment_id"] = f"EQ-{number:05d}"
    return rows


def measure(cluster: Cluster, mlflow_base: str, *, sizes: list[int], requests: int, clients: int) -> str:
    ours_headers = {"Authorization": f"Bearer {cluster.token()}"}
    results = []
    for size in sizes:
        rows = fleet_rows(size)
        ours_body = json.dumps({"rows": rows}).encode()
        mlflow_rows = [{k: v for k, v in row.items() if k != "equipment_id"} for row in rows]
        mlflow_body = json.dumps({"dataframe_records": mlflow_rows}).encode()
        # Check both answer, and warm both up (connections, the champion, code paths).
        status, answer = cluster.request("POST", ROUTE, {"rows": rows[:3]})
        if status != 200:
            raise RuntimeError(f"our route answered {status}: {answer}")
        targets = {
            "ours (Airflow api-server)": (cluster.base_url, ROUTE, ours_body, ours_headers),
            "mlflow models serve": (mlflow_base, "/invocations", mlflow_body, {}),
        }
        count = max(requests if size < 1000 else requests // 5, clients)
        for base, path, body, headers in targets.values():
            load(base, path, body, headers, clients, clients)
        samples = {name: [] for name in targets}
        errors = dict.fromkeys(targets, 0)
        walls = dict.fromkeys(targets, 0.0)
        for _ in range(2):  # alternating rounds, so drifts in machine load hit both
            for name, (base, path, body, headers) in targets.items():
                latencies, failed, wall = load(base, path, body, headers, count // 2, clients)
                samples[name] += latencies
                errors[name] += failed
                walls[name] += wall
        stats = {
            name: (statistics.median(s) * 1000, percentile_99(s) * 1000, len(s) / walls[name], len(s))
            for name, s in samples.items()
        }
        ours, theirs = stats.values()
        for name, (p50, p99, rps, n) in stats.items():
            results.append([size, name, n, errors[name], p50, p99, rps, rps * size])
        met = ours[0] <= theirs[0] and ours[1] <= theirs[1] and ours[2] >= theirs[2]
        results.append([size, "ours / MLflow", "", "", ours[0] / theirs[0], ours[1] / theirs[1],
                        ours[2] / theirs[2], "met" if met else "NOT met"])  # fmt: skip
    return table(
        f"Predict, {clients} concurrent clients on loopback, one server worker each (target: ours / MLflow "
        "p50 <= 1, p99 <= 1, req/s >= 1)",
        ["rows/request", "server", "requests", "errors", "p50 ms", "p99 ms", "req/s", "rows/s"],
        results,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=600, help="measured requests per server and size")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--sizes", default="1,10,1000", help="rows per request, comma-separated")
    parser.add_argument("--train-rows", type=int, default=20_000, help="rows the champion is trained on")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cmms-bench-predict-"))
    mlflow_dir = work / "mlflow"
    mlflow_dir.mkdir()
    mlflow_uri = f"sqlite:///{mlflow_dir / 'mlflow.db'}"
    artifacts = (mlflow_dir / "artifacts").as_uri()
    models = work / "models"
    models.mkdir()
    shutil.copy(SPEC, models)
    print(f"Machine: {machine()}\nWork folder {work}", flush=True)
    version = train_champion(mlflow_uri, artifacts, args.train_rows, work)
    print(f"Champion: {MODEL} v{version}", flush=True)
    postgres = Postgres().start()
    cluster = serve = None
    try:
        cluster = Cluster.start(
            work / "airflow", sql_alchemy_conn=postgres.create_database("airflow_bench"),
            mlflow_uri=mlflow_uri, data_root=work / "data",
            plugins=Path(__file__).resolve().parent / "airflow_plugins", CMMS_MODELS_DIR=str(models),
        )  # fmt: skip
        serve, mlflow_base = start_mlflow_serve(mlflow_uri, version, work)
        sizes = [int(size) for size in args.sizes.split(",")]
        report = measure(cluster, mlflow_base, sizes=sizes, requests=args.requests, clients=args.clients)
    finally:
        if serve is not None:
            stop_processes([serve])
        if cluster is not None:
            cluster.stop()
        postgres.stop()
    print()
    print(report)
    if args.keep:
        print(f"Kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
