"""P4: latency of "which model is in production?" under 50 concurrent clients, two servers side by side.

* the project's plugin API on Airflow's api-server: ``GET /api/v1/ml/models/{name}/production``
  (Bearer JWT from ``POST /auth/token``);
* MLflow's own REST API on an ``mlflow server`` over the same store:
  ``GET /api/2.0/mlflow/registered-models/alias?name=...&alias=champion``.

Both get one worker process (Airflow's api-server default), the same client code and the same
number of requests, in alternating rounds. If the plugin route itself answers 404 (the API is not
in this checkout yet) P4 is reported as skipped. Called by bench/pipeline.py after its (d) runs.
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

from lib import Cluster, clean_env, free_port, table

CONCURRENCY = 50
PLUGIN_ROUTE = "/api/v1/ml/models/{name}/production"
MLFLOW_ROUTE = "/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion"
TARGET_P99_RATIO = 2.0


def load(base_url: str, path: str, headers: dict[str, str], requests: int) -> tuple[list[float], int]:
    """``requests`` GETs from CONCURRENCY keep-alive clients; (latencies in seconds, error count)."""
    url = urllib.parse.urlsplit(base_url)
    per_client = max(requests // CONCURRENCY, 1)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(CONCURRENCY)

    def client() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        mine, failed = [], 0
        start.wait()
        for _ in range(per_client):
            began = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    failed += 1
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            mine.append(time.perf_counter() - began)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client) for _ in range(CONCURRENCY)]
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
    log = open(work / "mlflow-server.log", "w")  # noqa: SIM115 - kept open for the process's life
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            mlflow_uri,
            "--default-artifact-root",
            artifacts,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited {proc.returncode}; see {work}/mlflow-server.log")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return proc, base
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    raise TimeoutError("mlflow server not healthy after 180 s")


def measure(
    cluster: Cluster, *, mlflow_uri: str, artifacts: str, model_name: str, requests: int, work: Path
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
    import os
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
        samples: dict[str, list[float]] = {name: [] for name in targets}
        errors = dict.fromkeys(targets, 0)
        walls = dict.fromkeys(targets, 0.0)
        for base, path, headers in targets.values():
            load(base, path, headers, CONCURRENCY * 2)  # warm-up: connections, caches
        for _ in range(2):  # alternating rounds, so drift in machine load hits both
            for name, (base, path, headers) in targets.items():
                began = time.perf_counter()
                latencies, failed = load(base, path, headers, requests // 2)
                walls[name] += time.perf_counter() - began
                samples[name].extend(latencies)
                errors[name] += failed
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
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
