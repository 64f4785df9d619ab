"""A real Airflow deployment for the scheduler tests: api-server, scheduler and dag-processor.

Separate processes on 127.0.0.1 with LocalExecutor, their own Airflow home and PostgreSQL
metadata DB (the suite's throwaway server), their
own MLflow store, sharing one JWT secret as a production deployment must. Started once per
session on first use and stopped (process groups killed) at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAG_ID = "predictive_maintenance_training"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AirflowCluster:
    home: Path
    env: dict[str, str]
    base_url: str
    mlflow_uri: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    _token: str | None = None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def token(self) -> str:
        if self._token is None:
            passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
            body = {"username": "admin", "password": passwords["admin"]}
            self._token = self.request("POST", "/auth/token", body, auth=False)[1]["access_token"]
        return self._token

    def request(self, method: str, path: str, body: dict | None = None, *, auth: bool = True):
        """(status, JSON body) of a call to the api-server."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def dag_runs(self) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")[1]["dag_runs"]

    def wait_for_runs(self, run_ids: set[str] | None, count: int, timeout: float) -> list[dict]:
        """Wait until ``count`` runs (or the given ones) have finished; return them."""
        deadline = time.monotonic() + timeout
        while True:
            runs = [r for r in self.dag_runs() if run_ids is None or r["dag_run_id"] in run_ids]
            finished = [r for r in runs if r["state"] in ("success", "failed")]
            if len(finished) >= count:
                return finished
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"runs not finished after {timeout} s: {[(r['dag_run_id'], r['state']) for r in runs]}"
                )
            time.sleep(3)

    def task_instances(self, run_id: str) -> dict[str, dict]:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances"
        return {ti["task_id"]: ti for ti in self.request("GET", path)[1]["task_instances"]}

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.processes:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def airflow_cluster(tmp_path_factory, postgres_server) -> AirflowCluster:
    home = tmp_path_factory.mktemp("airflow-cluster")
    port = _free_port()
    # Airflow's own metadata on PostgreSQL: SQLite locks up with scheduler, api-server and CLI
    # writing at once ("database is locked").
    airflow_db = postgres_server.create_database("airflow_cluster")
    mlflow_uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    venv_bin = str(Path(sys.executable).parent)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "MLFLOW_"))}
    env.update(
        {
            "PATH": f"{venv_bin}:{os.environ['PATH']}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_CONFIG": str(PROJECT_DIR / "airflow.cfg"),
            "CMMS_PROJECT_DIR": str(PROJECT_DIR),
            "CMMS_DATA_ROOT": str(home / "data"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Only runs we create (backfills, triggers): no nightly run appears mid-test.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
            "MLFLOW_PRINT_MODEL_URLS_ON_CREATION": "false",
        }
    )
    setup = subprocess.run(
        [str(PROJECT_DIR / "scripts" / "setup_airflow.sh")], env=env, capture_output=True, text=True
    )
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    cluster = AirflowCluster(home=home, env=env, base_url=f"http://127.0.0.1:{port}", mlflow_uri=mlflow_uri)
    commands = {
        "api-server": ["airflow", "api-server", "--port", str(port)],
        # --skip-serve-logs: the log server would listen on 0.0.0.0; logs are read from disk here.
        "scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
        "dag-processor": ["airflow", "dag-processor"],
    }
    try:
        for name, command in commands.items():
            log = open(home / f"{name}.log", "w")  # noqa: SIM115 - kept open for the process's life
            cluster.processes.append(
                subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        _wait_until_ready(cluster)
        yield cluster
    finally:
        cluster.stop()


def _wait_until_ready(cluster: AirflowCluster, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in cluster.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}; see {cluster.home}/*.log")
        try:
            if cluster.request("GET", f"/api/v2/dags/{DAG_ID}")[0] == 200:
                return
        except (OSError, urllib.error.URLError, KeyError, FileNotFoundError):
            pass
        time.sleep(2)
    raise TimeoutError(f"Airflow not ready after {timeout} s; see {cluster.home}/*.log")
