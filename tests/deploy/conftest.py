"""The production stack, started once per session from the repo's own scripts.

- PostgreSQL (the suite's throwaway server) for MLflow's tracking data, MLflow's users and
  Airflow's metadata;
- an S3-compatible server on loopback for MLflow artifacts and pipeline data. AWS S3 itself
  cannot run here; moto's server mode is the only S3 implementation installable on this
  machine, so it stands in for S3 (or MinIO) — the code under test talks plain S3 to it;
- ``include/start_mlflow_server.sh`` with basic-auth, proxied S3 artifacts, and a pipeline
  user made by ``python -m cmms_deploy.mlflow_server ensure-user``; its database user has a real
  password with ``%``, ``@`` and ``/`` in it (URL-encoded in the URI) and the URI carries a query
  string, as production URIs do (``?sslmode=require``);
- Redis (Debian's redis-server) as the Celery broker, and Airflow with CeleryExecutor: api-server,
  scheduler, dag-processor, and a Celery worker started in a different working directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import http_answers, wait_until_ready
from support import free_port, start_process, stop_processes

PROJECT_DIR = Path(__file__).resolve().parents[2]
ARTIFACT_BUCKET = "cmms-artifacts"
DATA_BUCKET = "cmms-data"
PIPELINE_USER = "cmms-pipeline"
DB_ROLE = "mlflow_owner"
#: Kept in the backend URI and, by start_mlflow_server.sh, in the derived users-DB URI.
DB_QUERY = "application_name=cmms-mlflow-stack"


def _venv_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_", "AWS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env.update(extra)
    return env


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> float:
    """Seconds until ``url`` answers at all (any HTTP status); fail early, with ``log``, if ``proc`` dies."""
    return wait_until_ready(url, http_answers(url), processes=[proc], logs=[log], timeout=timeout)


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str] = field(repr=False)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]


# Seconds each component took to answer; reported at the end of the run.
STARTUP_TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def startup_times() -> dict[str, float]:
    return STARTUP_TIMES


def pytest_terminal_summary(terminalreporter) -> None:
    """Component start times and the wall time of the stack tests, for the CI log."""
    if not STARTUP_TIMES:
        return
    here = Path(__file__).parent.name
    reports = [
        report
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "nodeid", "").startswith(f"tests/{here}/") and hasattr(report, "duration")
    ]
    terminalreporter.section("production stack")
    for name, seconds in STARTUP_TIMES.items():
        terminalreporter.write_line(f"start {name:<58} {seconds:6.1f} s")
    total = sum(report.duration for report in reports)
    terminalreporter.write_line(f"tests/{here} wall time (setup + calls + teardown){'':<19} {total:6.1f} s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory, startup_times) -> S3Server:
    home = tmp_path_factory.mktemp("s3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # Test-only keys for the test double; no real AWS account is involved.
    env = {
        "AWS_ACCESS_KEY_ID": f"test-{secrets.token_hex(4)}",
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
        "AWS_DEFAULT_REGION": "us-east-1",
        # boto3 (MLflow's artifact store) and pyarrow (pipeline data) both read this one.
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
    }
    log = home / "moto.log"
    moto = str(Path(sys.executable).parent / "moto_server")
    proc = start_process([moto, "-H", "127.0.0.1", "-p", str(port)], env=_venv_env(), log=log, cwd=home)
    try:
        startup_times["S3 (moto server)"] = _wait_http(endpoint, proc, log, timeout=60)
        server = S3Server(endpoint=endpoint, env=env)
        for bucket in (ARTIFACT_BUCKET, DATA_BUCKET):
            server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        stop_processes([proc])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory, startup_times) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not found: scripts/install_test_services.sh installs it")
    home = tmp_path_factory.mktemp("redis")
    port = free_port()
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = start_process([*command, "--dir", str(home)], env=_venv_env(), log=home / "redis.log")

    def pong() -> bool:
        ping = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "ping"]
        return subprocess.run(ping, capture_output=True, text=True).stdout.strip() == "PONG"

    try:
        seconds = wait_until_ready("redis-server", pong, processes=[proc], timeout=30, interval=0.2)
        startup_times["Redis"] = seconds
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop_processes([proc])


def _body(raw: bytes):
    try:
        return json.loads(raw or b"null")
    except json.JSONDecodeError:
        return raw.decode(errors="replace")


@dataclass
class MlflowServer:
    url: str
    admin_user: str
    admin_password: str = field(repr=False)
    pipeline_password: str = field(repr=False)
    log: Path = field(default=Path())
    process: subprocess.Popen | None = field(default=None, repr=False)
    started_at: float = 0.0
    db_user: str = DB_ROLE
    db_password: str = field(default="", repr=False)
    db_query: str = DB_QUERY

    def call(self, method: str, path: str, body: dict | None = None, *, auth: tuple[str, str] | None = None):
        """(status, JSON) of a REST call; ``auth`` = (user, password) or None for anonymous."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth is not None:
            req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, _body(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _body(err.read())

    @property
    def pipeline(self) -> tuple[str, str]:
        return PIPELINE_USER, self.pipeline_password

    @property
    def admin(self) -> tuple[str, str]:
        return self.admin_user, self.admin_password


@pytest.fixture(scope="session")
def sentinel_password() -> str:
    """The pipeline user's password: a value no log, XCom or MLflow field may ever contain."""
    return f"Sentinel-{secrets.token_hex(12)}"


@pytest.fixture(scope="session")
def mlflow_server_started(tmp_path_factory, postgres_server, s3_server, sentinel_password):
    """``include/start_mlflow_server.sh`` on PostgreSQL with basic-auth and S3 artifacts, starting.

    Not waited for here, so Airflow can start meanwhile; ``mlflow_server`` waits for it.
    """
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    admin_password = secrets.token_urlsafe(18)
    # A real password that PostgreSQL checks (scram), with the characters that need URL-encoding.
    db_password = f"Db%{secrets.token_hex(6)}@/:%41"
    postgres_server.create_password_role(DB_ROLE, db_password)
    backend = postgres_server.url("mlflow_stack", user=DB_ROLE, password=db_password) + f"?{DB_QUERY}"
    env = _venv_env(
        **s3_server.env,
        MLFLOW_BACKEND_STORE_URI=backend,  # the database is created by the script
        MLFLOW_ARTIFACT_ROOT=f"s3://{ARTIFACT_BUCKET}/mlflow",
        MLFLOW_PORT=str(port),
        MLFLOW_AUTH="1",
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        CMMS_MLFLOW_HOME=str(home),
    )
    server = MlflowServer(
        url=f"http://127.0.0.1:{port}",
        admin_user="admin",
        admin_password=admin_password,
        pipeline_password=sentinel_password,
        log=home / "mlflow-server.log",
        db_password=db_password,
    )
    script = PROJECT_DIR / "include" / "start_mlflow_server.sh"
    # Its working directory is a fresh folder: nothing may land in the caller's cwd.
    server.process = start_process(["bash", str(script)], env=env, log=server.log, cwd=home)
    server.started_at = time.monotonic()
    try:
        yield server
    finally:
        stop_processes([server.process])


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_started, startup_times) -> MlflowServer:
    """The started MLflow server once it answers, with the pipeline's own (non-admin) user."""
    server = mlflow_server_started
    _wait_http(f"{server.url}/health", server.process, server.log, timeout=240)
    startup_times["MLflow server (PostgreSQL, basic-auth, S3)"] = time.monotonic() - server.started_at
    user_env = _venv_env(
        MLFLOW_TRACKING_USERNAME=server.admin_user,
        MLFLOW_TRACKING_PASSWORD=server.admin_password,
        MLFLOW_PIPELINE_PASSWORD=server.pipeline_password,
    )
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "cmms_deploy.mlflow_server",
            "ensure-user",
            PIPELINE_USER,
            "--tracking-uri",
            server.url,
        ],  # fmt: skip
        env=user_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return server


@pytest.fixture(scope="session")
def worker_dir(tmp_path_factory) -> Path:
    """The first Celery worker's working directory, apart from every other component's."""
    return tmp_path_factory.mktemp("celery-worker-cwd")


@pytest.fixture(scope="session")
def worker_dir_b(tmp_path_factory) -> Path:
    """The second Celery worker's working directory."""
    return tmp_path_factory.mktemp("celery-worker-b-cwd")


#: Host names of the two Celery workers (each in a UTS namespace of its own, as on two machines).
WORKER_HOSTS = ("cmms-worker-a", "cmms-worker-b")
#: The tuned model the stack also serves (tests/deploy/test_tuning_on_celery.py): XGBoost, tuned in
#: 2 chains of 2 trials, on the same synthetic telemetry as the shipped spec; never promoted.
TUNED_SPEC = "pm_tuned"


def _own_host_name_works() -> bool:
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0


def _worker(host: str) -> list[str]:
    """``airflow celery worker`` as ``host``: its own host name when this machine lets us (root),
    else only its own Celery node name."""
    command = f"airflow celery worker --skip-serve-logs --celery-hostname {host}@%h"
    if _own_host_name_works():
        return ["unshare", "--uts", "sh", "-c", f"hostname {host} && exec {command}"]
    return command.split()


@pytest.fixture(scope="session")
def worker_hosts() -> tuple[str, str]:
    """The two workers' host names (skips where a process cannot have a host name of its own)."""
    if not _own_host_name_works():
        pytest.skip("unshare --uts is not permitted here: both workers share this machine's host name")
    return WORKER_HOSTS


@pytest.fixture(scope="session")
def stack_models_dir(tmp_path_factory) -> Path:
    """The stack's model specs: the shipped one and a tuned XGBoost copy of it."""
    import yaml

    folder = tmp_path_factory.mktemp("stack-models")
    shipped = PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml"
    shutil.copy(shipped, folder)
    tuned = yaml.safe_load(shipped.read_text())
    tuned.update(
        name=TUNED_SPEC,
        registered_model="pm_tuned_xgb",
        experiment=TUNED_SPEC,
        schedule=None,
        estimator={"kind": "xgboost", "params": {"n_estimators": 60, "early_stopping_rounds": 10}},
        tuning={
            "n_trials": 4, "max_trials": 8, "trials_per_task": 2, "startup_trials": 1, "seed": 5,
            "space": {
                "max_depth": {"low": 2, "high": 6},
                "learning_rate": {"low": 0.05, "high": 0.3, "log": True},
            },
        },
        promotion={**tuned["promotion"], "allow_promotion": False},  # no champion: no scoring run
    )  # fmt: skip
    tuned["scoring"].pop("experiment", None)
    (folder / f"{TUNED_SPEC}.yaml").write_text(yaml.safe_dump(tuned, sort_keys=False))
    return folder


@pytest.fixture(scope="session")
def optuna_database(postgres_server) -> str:
    """The PostgreSQL database of the stack's Optuna studies, as an Airflow connection URI."""
    postgres_server.create_database("optuna_stack")
    return f"postgres://postgres@127.0.0.1:{postgres_server.port}/optuna_stack"


@pytest.fixture(scope="session")
def celery_stack(
    start_airflow, redis_url, s3_server, mlflow_server_started, worker_dir, worker_dir_b, stack_models_dir,
    optuna_database, startup_times,
):  # fmt: skip
    """Airflow on PostgreSQL with CeleryExecutor and two workers (one slot each, their own host names),
    talking to the authenticated MLflow server; Optuna studies in PostgreSQL (``cmms_optuna``)."""
    connection = {
        "conn_type": "mlflow",
        "host": mlflow_server_started.url,
        "login": PIPELINE_USER,
        "password": mlflow_server_started.pipeline_password,
    }
    started = time.monotonic()
    cluster = start_airflow(
        "airflow-stack",
        env={
            **s3_server.env,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"{redis_url}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"{redis_url}/1",
            # One task at a time per worker: two chains of trials land on two workers.
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(connection),
            "AIRFLOW_CONN_CMMS_OPTUNA": optuna_database,
            "CMMS_OPTUNA_STORAGE": "postgres",
            "CMMS_DATA_ROOT": f"s3://{DATA_BUCKET}/pipeline",
            "CMMS_MODELS_DIR": str(stack_models_dir),
        },
        mlflow_uri=mlflow_server_started.url,
        extra_processes={
            "celery-worker": (_worker(WORKER_HOSTS[0]), worker_dir),
            "celery-worker-b": (_worker(WORKER_HOSTS[1]), worker_dir_b),
        },
    )
    startup_times["Airflow (api-server, scheduler, dag-processor, 2 workers)"] = time.monotonic() - started
    return cluster
