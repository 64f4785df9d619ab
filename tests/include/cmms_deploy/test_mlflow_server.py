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


def test_auth_config_keeps_a_percent_of_a_url_encoded_password_as_mlflow_reads_it(tmp_path, monkeypatch):
    from mlflow.server.auth.config import read_auth_config

    uri = "postgresql+psycopg2://mlflow:p%40ss%25w0rd%2F@127.0.0.1:5432/mlflow_auth?sslmode=require"
    path = tmp_path / "basic_auth.ini"
    path.write_text(deploy.auth_config(uri, default_permission="READ", admin_username="admin"))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    assert read_auth_config().database_uri == uri


@pytest.mark.parametrize(
    ("backend", "users_db"),
    [
        (
            "postgresql+psycopg2://u:p%40ss%25@db.internal:5432/mlflow?sslmode=require&connect_timeout=5",
            "postgresql+psycopg2://u:p%40ss%25@db.internal:5432/mlflow_auth?sslmode=require&connect_timeout=5",
        ),
        ("postgresql+psycopg2://u@127.0.0.1/mlflow", "postgresql+psycopg2://u@127.0.0.1/mlflow_auth"),
    ],
)
def test_the_users_database_uri_changes_only_the_database_name(backend, users_db):
    assert deploy.auth_database_uri(backend) == users_db


def test_no_users_database_is_derived_from_a_sqlite_backend_or_one_without_a_database():
    with pytest.raises(DeployConfigurationError, match="MLFLOW_AUTH_DATABASE_URI"):
        deploy.auth_database_uri("sqlite:///mlflow.db")
    with pytest.raises(DeployConfigurationError, match="names no database"):
        deploy.auth_database_uri("postgresql+psycopg2://u@127.0.0.1:5432")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.10.0.3", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_addresses_may_be_bound_without_auth(host):
    deploy.check_bind(host, auth=False)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.0.2.10", "10.0.0.5", "mlflow.internal", "127.0.0.1.nip.io"]
)
def test_anything_beyond_loopback_needs_auth(host):
    with pytest.raises(DeployConfigurationError, match="MLFLOW_AUTH=1"):
        deploy.check_bind(host, auth=False)
    deploy.check_bind(host, auth=True)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_start_script_refuses_to_serve_beyond_loopback_without_auth(tmp_path, host):
    out = _start(tmp_path, MLFLOW_HOST=host)
    assert out.returncode == 2 and f"MLFLOW_HOST={host!r}" in out.stderr and "MLFLOW_AUTH=1" in out.stderr
    assert list(tmp_path.iterdir()) == []  # refused before touching anything


def test_prepare_store_reads_the_uri_from_the_environment_only(monkeypatch, capsys, mlflow_store):
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    assert deploy.main(["prepare-store"]) == 2
    assert "MLFLOW_BACKEND_STORE_URI must be set" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", mlflow_store)
    assert deploy.main(["prepare-store", "--upgrade"]) == 0  # `mlflow db upgrade`, in this process
    assert capsys.readouterr().out.strip() == "existing"


def test_auth_config_caches_credential_checks_for_a_bounded_time(tmp_path, monkeypatch, capsys):
    """Every basic-auth request otherwise pays a scrypt hash (~0.25 s of CPU here); the cache trades
    at most ``cache_ttl_seconds`` of staleness across workers for that, and 0 turns it off."""
    from mlflow.server.auth.config import read_auth_config

    path = tmp_path / "basic_auth.ini"
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    for ttl in (deploy.DEFAULT_AUTH_CACHE_TTL_SECONDS, 0, 300):
        path.write_text(
            deploy.auth_config(
                "sqlite:///a.db", default_permission="READ", admin_username="a", cache_ttl_seconds=ttl
            )
        )
        assert read_auth_config().auth_cache_ttl_seconds == ttl
    assert deploy.DEFAULT_AUTH_CACHE_TTL_SECONDS == 30
    for bad in (-1, 3601):
        with pytest.raises(DeployConfigurationError, match=f"MLFLOW_AUTH_CACHE_TTL_SECONDS={bad}"):
            deploy.auth_config(
                "sqlite:///a.db", default_permission="READ", admin_username="a", cache_ttl_seconds=bad
            )
    # Through the command the start script runs: the variable reaches the file; junk is refused.
    monkeypatch.setenv("MLFLOW_AUTH_DATABASE_URI", "sqlite:///a.db")
    monkeypatch.setenv("MLFLOW_AUTH_CACHE_TTL_SECONDS", "5")
    assert deploy.main(["write-auth-config", str(path)]) == 0
    assert read_auth_config().auth_cache_ttl_seconds == 5
    monkeypatch.setenv("MLFLOW_AUTH_CACHE_TTL_SECONDS", "soon")
    assert deploy.main(["write-auth-config", str(path)]) == 2
    assert "MLFLOW_AUTH_CACHE_TTL_SECONDS='soon' is not a whole number" in capsys.readouterr().err
    assert read_auth_config().auth_cache_ttl_seconds == 5  # the file of the last good call stays
