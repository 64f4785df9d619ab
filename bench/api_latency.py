"""P4: latency of "which model is in production?" under 50 concurrent clients, two servers side by side.

* the project's plugin API on Airflow's api-server: ``GET /api/v1/ml/models/{name}/production``
  (Bearer JWT from ``POST /auth/token``);
* MLflow's own REST API on an ``mlflow server`` over the same store:
  ``GET /api/2.0/mlflow/registered-models/alias?name=...&alias=champion``.

Both get one worker process (Airflow's api-server default), the same client code and the same
number of requests, in alternating rounds. If the plugin route itself answers 404 (the API is not
in this checkout yet) P4 is reported as skipped. Called by bench/pipeline.py after its (d) runs.

Alone (no training run: the champion is registered straight into a fresh store through the
project's own registry code, with a training-sized set of metrics and tags)::

    python bench/api_latency.py [--requests 2000] [--versions 1] [--profile OUT.svg]

``--profile`` records the api-server with py-spy (on PATH or ``PY_SPY``) during the measured rounds.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from lib import (
    Cluster,
    clean_env,
    free_port,
    http_answers,
    start_server,
    stop_processes,
    table,
)

CONCURRENCY = 50
PLUGIN_ROUTE = "/api/v1/ml/models/{name}/production"
MLFLOW_ROUTE = "/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion"
TARGET_P99_RATIO = 2.0


def load(
    base_url: str,
    path: str,
    headers: dict[str, str],
    requests: int,
    *,
    body: bytes | None = None,
    clients: int | None = None,
) -> tuple[list[float], int]:
    """``requests`` GETs (POSTs of ``body`` if given) from ``clients`` (default CONCURRENCY)
    keep-alive clients; (latencies in seconds, error count)."""
    clients = clients or CONCURRENCY
    url = urllib.parse.urlsplit(base_url)
    per_client = max(requests // clients, 1)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients)
    method = "GET" if body is None else "POST"
    timeout = 60 if body is None else 300

    def client() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        mine, failed = [], 0
        start.wait()
        for _ in range(per_client):
            began = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    failed += 1
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
            mine.append(time.perf_counter() - began)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def start_mlflow_server(mlflow_uri: str, artifacts: str, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(
        "mlflow server",
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", mlflow_uri,
         "--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        http_answers(base + "/health", statuses={200}), env=clean_env(), log=work / "mlflow-server.log",
        timeout=180, interval=1,
    )  # fmt: skip
    return proc, base


def measure(
    cluster: Cluster,
    *,
    mlflow_uri: str,
    artifacts: str,
    model_name: str,
    requests: int,
    work: Path,
    profile: Path | None = None,
) -> str:
    """Run P4 against ``cluster`` (whose last run made ``model_name``'s champion); return the report."""
    plugin_path = PLUGIN_ROUTE.format(name=urllib.parse.quote(model_name, safe=""))
    status, body = cluster.request("GET", plugin_path)
    if status == 404:
        return (
            f"P4 API latency: SKIPPED — GET {PLUGIN_ROUTE} answered 404 for {model_name!r}, which has a "
            f"champion: the plugin API is not in this checkout yet.\n"
        )
    if status != 200:
        return f"P4 API latency: SKIPPED — GET {plugin_path} answered {status}: {body}\n"
    import signal

    proc, mlflow_base = start_mlflow_server(mlflow_uri, artifacts, work)
    try:
        targets = {
            "plugin API (Airflow api-server)": (
                cluster.base_url,
                plugin_path,
                {"Authorization": f"Bearer {cluster.token()}"},
            ),
            "MLflow REST (mlflow server)": (
                mlflow_base,
                MLFLOW_ROUTE.format(name=urllib.parse.quote(model_name, safe="")),
                {},
            ),
        }
        spy = None
        samples: dict[str, list[float]] = {name: [] for name in targets}
        errors = dict.fromkeys(targets, 0)
        walls = dict.fromkeys(targets, 0.0)
        for base, path, headers in targets.values():
            load(base, path, headers, CONCURRENCY * 2)  # warm-up: connections, caches
        spy = _py_spy(cluster, profile) if profile else None
        for _ in range(2):  # alternating rounds, so drift in machine load hits both
            for name, (base, path, headers) in targets.items():
                began = time.perf_counter()
                latencies, failed = load(base, path, headers, requests // 2)
                walls[name] += time.perf_counter() - began
                samples[name].extend(latencies)
                errors[name] += failed
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its flame graph on SIGINT
            spy.wait(timeout=120)
        stop_processes([proc], timeout=30)
    rows = []
    p99 = {}
    for name, latencies in samples.items():
        p99[name] = _percentile(latencies, 0.99)
        rows.append(
            [
                name,
                len(latencies),
                errors[name],
                statistics.median(latencies) * 1000,
                p99[name] * 1000,
                len(latencies) / walls[name],
            ]
        )
    plugin, mlflow_rest = (p99[name] for name in targets)
    ratio = plugin / mlflow_rest if mlflow_rest else float("nan")
    verdict = "met" if ratio <= TARGET_P99_RATIO else "NOT met"
    return table(
        f"P4 API latency, {CONCURRENCY} concurrent clients on loopback, 1 server worker each: "
        f"p99 plugin / p99 MLflow = {ratio:.2f} (target <= {TARGET_P99_RATIO:.0f}: {verdict})",
        ["server", "requests", "errors", "p50 ms", "p99 ms", "req/s"],
        rows,
    )


def _py_spy(cluster: Cluster, out: Path) -> subprocess.Popen:
    """py-spy recording the api-server (and its workers) until SIGINT; collapsed stacks to ``out``."""
    import os
    import shutil

    exe = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if exe is None:
        raise FileNotFoundError("py-spy not found: install it (pip install py-spy) or set PY_SPY")
    api_server = cluster.processes[0]  # Cluster.start starts the api-server first
    return subprocess.Popen(
        [exe, "record", "--pid", str(api_server.pid), "--subprocesses", "--rate", "200", "--format", "raw",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def seed_champion(mlflow_uri: str, artifacts: str, model_name: str, versions: int) -> None:
    """``versions`` versions of ``model_name``, the last one champion, each from a run with the
    metrics and version tags a training run leaves (without training: P4 reads, it never loads)."""
    import os

    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    from mlflow import MlflowClient

    from cmms_mlflow.registry import model_registry

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.create_experiment("bench_api", artifact_location=artifacts)
    for number in range(1, versions + 1):
        run = client.create_run(experiment, tags={"airflow.run_url": "http://127.0.0.1:8080/dags/x/runs/y"})
        for metric in ("f1", "precision", "recall", "roc_auc", "pr_auc", "accuracy", "brier", "log_loss"):
            for split in ("validation", "holdout"):
                client.log_metric(run.info.run_id, f"{split}_{metric}", 0.9 - number / 1000)
        client.set_terminated(run.info.run_id)
        tags = {
            "data_version": f"2026-11-2{number % 10}",
            "airflow.run_url": "http://127.0.0.1:8080/dags/x/runs/y",
            "spec": "predictive_maintenance",
            **{f"validation_{m}": "0.91" for m in ("f1", "precision", "recall", "roc_auc")},
            "decision_reason": "challenger beats the champion",
            "champion_f1": "0.90",
            "champion_version": str(number - 1) if number > 1 else "",
            "validation_status": "passed",
        }
        version = model_registry.register_version(
            client,
            name=model_name,
            source=f"{artifacts}/unused-{number}",
            run_id=run.info.run_id,
            description="bench",
            tags=tags,
        )
        model_registry.promote(
            client,
            model_name,
            str(version.version),
            expected_champion=str(number - 1) if number > 1 else None,
            lock_dir=None,
            audit={"promoted_by": "bench", "promoted_at": "2026-11-27T00:00Z", "promotion_reason": "bench"},
            key=f"bench{number}",
        )


def main() -> int:
    global CONCURRENCY
    import argparse
    import json
    import shutil
    import tempfile

    from lib import Postgres, machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per server")
    parser.add_argument("--versions", type=int, default=1, help="versions (last: champion)")
    parser.add_argument("--profile", type=Path, help="py-spy the api-server; collapsed stacks to this file")
    parser.add_argument("--clients", type=int, default=CONCURRENCY, help="concurrent clients")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores)")
    args = parser.parse_args()
    CONCURRENCY = args.clients
    work = Path(tempfile.mkdtemp(prefix="cmms-bench-api-"))
    mlflow_dir = work / "mlflow"
    mlflow_dir.mkdir()
    mlflow_uri = f"sqlite:///{mlflow_dir / 'mlflow.db'}"
    artifacts = (mlflow_dir / "artifacts").as_uri()
    model_name = "bench_api"
    print(f"Machine: {machine()}\nWork folder {work}", flush=True)
    seed_champion(mlflow_uri, artifacts, model_name, args.versions)
    postgres = Postgres().start()
    cluster = None
    try:
        cluster = Cluster.start(
            work / "airflow",
            sql_alchemy_conn=postgres.create_database("airflow_bench"),
            mlflow_uri=mlflow_uri,
            data_root=work / "data",
            plugins=Path(__file__).resolve().parent / "airflow_plugins",
        )
        report = measure(
            cluster,
            mlflow_uri=mlflow_uri,
            artifacts=artifacts,
            model_name=model_name,
            requests=args.requests,
            work=work,
            profile=args.profile,
        )
        status, body = cluster.request("GET", PLUGIN_ROUTE.format(name=model_name))
        print(f"\nGET {PLUGIN_ROUTE.format(name=model_name)} -> {status}: {json.dumps(body)[:300]}...")
    finally:
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
