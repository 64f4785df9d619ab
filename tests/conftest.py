"""Test environment: a throwaway Airflow home, MLflow store and data root for the whole session.

The environment is set at import time, before anything imports Airflow, so the suite never
touches the developer's own ``.airflow``/``.mlflow`` folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
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
