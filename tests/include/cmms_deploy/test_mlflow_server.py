"""Deployment helpers and the MLflow start script's refusals, against the suite's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmms_deploy import mlflow_server as deploy
from cmms_deploy.mlflow_server import DeployConfigurationError

PROJECT_DIR = Path(__file__).resolve().parents[3]
SCRIPT = PROJECT_DIR / "include" / "start_mlflow_server.sh"


def test_store_state_creates_a_missing_database_then_sees_mlflow_tables(postgres_server):
    from mlflow import MlflowClient

    uri = postgres_server.url("deploy_state")
    assert deploy.store_state(uri) == "created"
    assert deploy.store_state(uri) == "empty"
    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # MLflow creates its schema
    assert deploy.store_state(uri) == "existing"


def test_store_state_refuses_a_driverless_postgres_uri_and_unknown_schemes():
    with pytest.raises(DeployConfigurationError, match="postgresql\\+psycopg2"):
        deploy.store_state("postgresql://mlflow@127.0.0.1:5432/mlflow")
    with pytest.raises(DeployConfigurationError, match="mysql"):
        deploy.store_state("mysql://mlflow@127.0.0.1/mlflow")


def test_store_state_of_a_sqlite_file(tmp_path):
    uri = f"sqlite:///{tmp_path / 'nested' / 'mlflow.db'}"
    assert deploy.store_state(uri) == "empty"
    assert (tmp_path / "nested").is_dir()


def test_auth_config_is_read_by_mlflow_as_written(tmp_path, monkeypatch):
    from mlflow.server.auth.config import read_auth_config

    path = tmp_path / "basic_auth.ini"
    text = deploy.auth_config("sqlite:///auth.db", default_permission="NO_PERMISSIONS", admin_username="ops")
    path.write_text(text)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    config = read_auth_config()
    assert (config.default_permission, config.database_uri, config.admin_username) == (
        "NO_PERMISSIONS", "sqlite:///auth.db", "ops",
    )  # fmt: skip
    assert config.admin_password is None  # never written to the file


def test_auth_config_refuses_an_unknown_permission():
    with pytest.raises(DeployConfigurationError, match="MLFLOW_AUTH_DEFAULT_PERMISSION='ALL'"):
        deploy.auth_config("sqlite:///a.db", default_permission="ALL", admin_username="admin")


def test_ensure_user_cli_names_the_missing_secret(monkeypatch, capsys):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_PIPELINE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert deploy.main(["ensure-user", "pipeline", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "MLFLOW_TRACKING_USERNAME must be set" in capsys.readouterr().err


def _start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    base["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    base["CMMS_MLFLOW_HOME"] = str(tmp_path)
    return subprocess.run(
        ["bash", str(SCRIPT)], env={**base, **env}, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


@pytest.mark.parametrize("missing", ["MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"])
def test_start_script_with_auth_refuses_to_start_without_its_secrets(tmp_path, missing):
    secrets = {"MLFLOW_AUTH_ADMIN_PASSWORD": "placeholder-1234", "MLFLOW_FLASK_SERVER_SECRET_KEY": "x" * 16}
    del secrets[missing]
    out = _start(tmp_path, MLFLOW_AUTH="1", **secrets)
    assert out.returncode == 2 and missing in out.stderr
    assert list(tmp_path.iterdir()) == []  # refused before touching anything


def test_start_script_refuses_a_driverless_postgres_uri(tmp_path):
    out = _start(tmp_path, MLFLOW_BACKEND_STORE_URI="postgresql://u@127.0.0.1/mlflow")
    assert out.returncode == 2 and "postgresql+psycopg2" in out.stderr
