"""Test environment: a throwaway Airflow home, MLflow store and data root for the whole session.

The environment is set at import time, before anything imports Airflow, so the suite never
touches the developer's own ``.airflow``/``.mlflow`` folders.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from harness import PostgresCluster
from support import AirflowCluster, free_port, start_process, wait_until_ready

#: Marks each test with its tier (services / installer / fast) from the fixtures it uses.
pytest_plugins = ("tiers",)

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
def shipped_spec():
    """The predictive-maintenance spec the project ships (synthetic telemetry)."""
    from cmms_pm.spec import load_spec

    return load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")


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


#: Members of this PostgreSQL group must give their password (scram-sha-256); everyone else is
#: trusted on loopback. Lets tests use a real password through a real URI.
PASSWORD_GROUP = "password_users"


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"

    def url(self, database: str, *, user: str | None = None, password: str | None = None) -> str:
        """A SQLAlchemy URI; ``password`` is URL-encoded (``%`` → ``%25``), as an operator writes it."""
        auth = quote(user or self.user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql+psycopg2://{auth}@127.0.0.1:{self.port}/{database}"

    def create_password_role(self, name: str, password: str) -> None:
        """A role that may create databases and must log in with ``password``."""
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD %s IN ROLE {}").format(
                    sql.Identifier(name), sql.Identifier(PASSWORD_GROUP)
                ),
                (password,),
            )
        conn.close()

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
    # First matching line wins: the password rule goes before the default (trust) ones.
    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="cmms-pg-", dir="/tmp")))
    try:
        port = cluster.start(hba_first=f"host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256").port
        server = PostgresServer(port=port)
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE ROLE {PASSWORD_GROUP} NOLOGIN")
        conn.close()
        yield server
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def start_airflow(tmp_path_factory, postgres_server):
    """Factory: start an Airflow deployment (api-server, scheduler, dag-processor, extras).

    Each gets its own Airflow home and PostgreSQL metadata DB (SQLite locks up with scheduler,
    api-server and CLI writing at once), one shared JWT secret as production needs, and only
    runs the tests create (no nightly run appears mid-test). Everything started is stopped at
    the end of the session.
    """
    clusters: list[AirflowCluster] = []

    def start(
        name: str,
        *,
        env: dict[str, str],
        mlflow_uri: str = "",
        extra_processes: dict[str, tuple[list[str], Path | None]] | None = None,
    ) -> AirflowCluster:
        home = tmp_path_factory.mktemp(name)
        port = free_port()
        venv_bin = str(Path(sys.executable).parent)
        database = postgres_server.create_database(name.replace("-", "_"))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_"))}
        full_env.update(
            {
                "PATH": f"{venv_bin}:{os.environ['PATH']}",
                "AIRFLOW_HOME": str(home),
                "AIRFLOW_CONFIG": str(PROJECT_DIR / "airflow.cfg"),
                "CMMS_PROJECT_DIR": str(PROJECT_DIR),
                "CMMS_DATA_ROOT": str(home / "data"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "MLFLOW_PRINT_MODEL_URLS_ON_CREATION": "false",
                **env,
            }
        )
        setup = subprocess.run(
            [str(PROJECT_DIR / "scripts" / "setup_airflow.sh")], env=full_env, capture_output=True, text=True
        )
        assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
        cluster = AirflowCluster(
            home=home, env=full_env, base_url=f"http://127.0.0.1:{port}", mlflow_uri=mlflow_uri
        )
        clusters.append(cluster)
        commands = {
            "api-server": (["airflow", "api-server", "--port", str(port)], None),
            # --skip-serve-logs: the log server would listen on 0.0.0.0; logs are read from disk here.
            "scheduler": (["airflow", "scheduler", "--skip-serve-logs"], None),
            "dag-processor": (["airflow", "dag-processor"], None),
            **(extra_processes or {}),
        }
        for process, (command, cwd) in commands.items():
            log = home / f"{process}.log"
            cluster.processes.append(start_process(command, env=full_env, log=log, cwd=cwd))
        wait_until_ready(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.stop()


#: The password of every notification connection in the tests: no message may ever contain it.
NOTIFY_SENTINEL = "sentinel-N0tify-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def smtp_server():
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that requires a login with the sentinel password."""
    from receivers import SmtpServer

    server = SmtpServer(login="cmms-notifier", password=NOTIFY_SENTINEL).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http_receiver():
    """A real HTTP server on 127.0.0.1 that records every webhook request."""
    from receivers import HttpReceiver

    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@dataclass
class NotifyConnections:
    smtp: object
    http: object
    sentinel: str
    email_conn_id: str = "cmms_smtp"
    webhook_conn_id: str = "cmms_webhook"


@pytest.fixture(scope="session")
def notification_env(smtp_server, http_receiver) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables of the SMTP and webhook connections to the local servers, both with
    the sentinel password (SMTP login, webhook bearer token)."""
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_server.port,
        "login": "cmms-notifier",
        "password": NOTIFY_SENTINEL,
        "extra": {
            "disable_ssl": True,
            "disable_tls": True,
            "from_email": "airflow@cmms.example",
            "timeout": 10,
            "retry_limit": 0,
        },
    }
    webhook = {
        "conn_type": "http",
        "host": f"{http_receiver.url}/hooks/cmms",
        "password": NOTIFY_SENTINEL,
        "extra": {"timeout": 3},
    }
    return {"AIRFLOW_CONN_CMMS_SMTP": json.dumps(smtp), "AIRFLOW_CONN_CMMS_WEBHOOK": json.dumps(webhook)}


@pytest.fixture
def notify_conns(
    monkeypatch: pytest.MonkeyPatch, smtp_server, http_receiver, notification_env
) -> NotifyConnections:
    """The notification connections set for this test; the servers' inboxes emptied."""
    smtp_server.clear()
    http_receiver.clear()
    for name, value in notification_env.items():
        monkeypatch.setenv(name, value)
    return NotifyConnections(smtp=smtp_server, http=http_receiver, sentinel=NOTIFY_SENTINEL)
