"""Test environment: a throwaway Airflow home, MLflow store and data root for the whole session.

The environment is set at import time, before anything imports Airflow, so the suite never
touches the developer's own ``.airflow``/``.mlflow`` folders.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="cmms-tests-"))

for _key in list(os.environ):
    if _key.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "MLFLOW_")):
        del os.environ[_key]
os.environ.update(
    {
        "CMMS_PROJECT_DIR": str(PROJECT_DIR),
        "AIRFLOW_HOME": str(_SESSION_DIR / "airflow"),
        "AIRFLOW_CONFIG": str(PROJECT_DIR / "airflow.cfg"),
        "CMMS_MLFLOW_HOME": str(_SESSION_DIR / "mlflow-embedded"),
        "CMMS_DATA_ROOT": str(_SESSION_DIR / "data"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The project's dags/ plus a bundle of test-only DAGs (tests/dag_fixtures).
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": "dags-folder",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {},
                },
                {
                    "name": "test-dags",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(PROJECT_DIR / "tests" / "dag_fixtures")},
                },
            ]
        ),
        # Keep test logs readable: MLflow prints emoji/links on every registration.
        "MLFLOW_PRINT_MODEL_URLS_ON_CREATION": "false",
    }
)
(_SESSION_DIR / "airflow").mkdir()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (SQLite) with the project's pools, in the session's Airflow home."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(
        [str(PROJECT_DIR / "scripts" / "setup_airflow.sh")],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    return Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"


@pytest.fixture(scope="session")
def mlflow_store(session_dir: Path) -> str:
    """Tracking URI of a real MLflow SQLite store shared by the session (schema made once)."""
    from mlflow import MlflowClient

    home = session_dir / "mlflow"
    home.mkdir()
    uri = f"sqlite:///{home / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    return uri


@pytest.fixture
def mlflow_conn(monkeypatch: pytest.MonkeyPatch, mlflow_store: str) -> str:
    """Point the ``mlflow_default`` Airflow connection at the session's MLflow store."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_store})
    )
    return mlflow_store


@pytest.fixture
def model_name() -> str:
    """A registered-model name no other test uses."""
    return f"pm_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(mlflow_store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin(name: str) -> str:
    for candidate in (shutil.which(name), *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))):
        if candidate and os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"PostgreSQL binary {name!r} not found (apt-get install postgresql)")


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL on 127.0.0.1, from the local binaries, stopped at the end.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
    """
    base = Path(tempfile.mkdtemp(prefix="cmms-pg-", dir="/tmp"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run(
        [*as_owner, _pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c max_connections=200"
    ctl = [*as_owner, _pg_bin("pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*ctl, "-o", options, "-l", str(base / "postgres.log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresServer(port=port)
    finally:
        subprocess.run([*ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
