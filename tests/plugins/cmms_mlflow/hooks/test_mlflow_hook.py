"""MlflowHook: where the tracking URI comes from, and credentials that never outlive a session."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from cmms_mlflow.hooks.mlflow_hook import MlflowHook


def _conn(monkeypatch, **fields) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", **fields}))


def test_embedded_default_without_connection_or_env(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CMMS_MLFLOW_HOME", str(tmp_path))
    settings = MlflowHook().settings
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.artifact_location == (tmp_path / "artifacts").as_uri()
    assert settings.source == "embedded"


def test_standard_env_var_is_used_without_connection(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    settings = MlflowHook().settings
    assert (settings.tracking_uri, settings.source, settings.artifact_location) == (
        "http://127.0.0.1:5999",
        "MLFLOW_TRACKING_URI",
        None,
    )


def test_connection_wins_over_env_and_carries_credentials(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    _conn(
        monkeypatch,
        host="http://127.0.0.1:5000",
        login="pipeline",
        password="s3cret-value",
        extra={"registry_uri": "http://127.0.0.1:5001", "max_retries": 1, "request_timeout": 5},
    )
    settings = MlflowHook().settings
    assert settings.tracking_uri == "http://127.0.0.1:5000"
    assert settings.registry_uri == "http://127.0.0.1:5001"
    assert (settings.username, settings.password) == ("pipeline", "s3cret-value")
    assert (settings.max_retries, settings.request_timeout) == (1, 5)
    assert "s3cret-value" not in repr(settings)


def test_uri_style_connection_builds_an_http_tracking_uri(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "mlflow://user:pw@127.0.0.1:5000")
    assert MlflowHook().settings.tracking_uri == "http://127.0.0.1:5000"


def _creds(uri: str):
    from mlflow.utils.credentials import get_default_host_creds

    return get_default_host_creds(uri)


def _child_environment() -> dict[str, str]:
    """The environment a subprocess started now inherits (as ``git`` in ``training_run`` would)."""
    out = subprocess.run(["env", "-0"], capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def test_a_session_gives_mlflow_the_connection_credentials_but_not_os_environ(monkeypatch, mlflow_store):
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

    _conn(
        monkeypatch,
        host=mlflow_store,
        login="pipeline",
        password="s3cret-value",
        extra={"request_timeout": 7},
    )
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    import mlflow

    before_env, before_uri = dict(os.environ), mlflow.get_tracking_uri()
    with MlflowHook().session() as client:
        creds = _creds(mlflow_store)
        assert (creds.username, creds.password) == ("pipeline", "s3cret-value")
        assert (MLFLOW_HTTP_REQUEST_TIMEOUT.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()) == (7, 3)
        assert mlflow.get_tracking_uri() == mlflow_store
        client.search_experiments(max_results=1)
        assert dict(os.environ) == before_env
        child = _child_environment()
        # Only the test's own connection definition holds the password; no MLFLOW_ variable changed.
        assert [k for k, v in child.items() if "s3cret-value" in v] == ["AIRFLOW_CONN_MLFLOW_DEFAULT"]
        assert {k: v for k, v in child.items() if k.startswith("MLFLOW_")} == {
            k: v for k, v in before_env.items() if k.startswith("MLFLOW_")
        }
    assert dict(os.environ) == before_env
    assert (_creds(mlflow_store).username, _creds(mlflow_store).password) == ("someone-else", None)
    assert mlflow.get_tracking_uri() == before_uri


def test_credentials_are_gone_even_when_the_session_fails(monkeypatch, mlflow_store):
    _conn(monkeypatch, host=mlflow_store, login="pipeline", password="s3cret-value")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(RuntimeError), MlflowHook().session():
        raise RuntimeError("task failed")
    assert _creds(mlflow_store).password is None


def test_overlapping_sessions_in_threads_each_see_their_own_credentials(monkeypatch, mlflow_store):
    """Two connections, two threads, sessions open at the same time: no mixing, nothing in os.environ."""
    for conn_id, user in (("MLFLOW_A", "alice"), ("MLFLOW_B", "bob")):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id}",
            json.dumps(
                {"conn_type": "mlflow", "host": mlflow_store, "login": user, "password": f"{user}-pw"}
            ),
        )
    both_inside = threading.Barrier(2, timeout=30)
    seen: dict[str, list] = {}

    def task(conn_id: str) -> None:
        with MlflowHook(mlflow_conn_id=conn_id).session():
            both_inside.wait()
            seen[conn_id] = [(_creds(mlflow_store).username, _creds(mlflow_store).password)]
            both_inside.wait()  # the other session is still open while we read again
            seen[conn_id].append((_creds(mlflow_store).username, _creds(mlflow_store).password))
            seen[conn_id].append(
                [k for k, v in _child_environment().items() if "-pw" in v and "CONN" not in k]
            )

    threads = [threading.Thread(target=task, args=(c,)) for c in ("mlflow_a", "mlflow_b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert seen == {
        "mlflow_a": [("alice", "alice-pw"), ("alice", "alice-pw"), []],
        "mlflow_b": [("bob", "bob-pw"), ("bob", "bob-pw"), []],
    }
    assert not [key for key in os.environ if key.startswith("MLFLOW_TRACKING_")]


def test_mlflow_artifact_download_threads_run_with_the_session_that_asked(
    monkeypatch, mlflow_store, tmp_path
):
    """Model downloads run in MLflow's artifact thread pool: it must carry the session's credentials."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    _conn(monkeypatch, host=mlflow_store, login="pipeline", password="s3cret-value")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with MlflowHook().session():
        repo = LocalArtifactRepository(str(tmp_path))
        in_pool = repo.thread_pool.submit(lambda: _creds(mlflow_store).password).result(timeout=30)
    assert in_pool == "s3cret-value"
    assert repo.thread_pool.submit(lambda: _creds(mlflow_store).password).result(timeout=30) is None


def test_a_process_wide_tracking_uri_is_refused_with_the_way_out(monkeypatch, mlflow_store):
    import mlflow

    from cmms_mlflow.exceptions import MlflowConfigurationError

    _conn(monkeypatch, host=mlflow_store)
    mlflow.set_tracking_uri("http://127.0.0.1:5999")
    try:
        with (
            pytest.raises(MlflowConfigurationError, match=r"mlflow.set_tracking_uri\(None\)"),
            MlflowHook().session(),
        ):
            pass
    finally:
        mlflow.set_tracking_uri(None)


def test_experiment_artifacts_live_next_to_the_sqlite_db(mlflow_conn):
    hook = MlflowHook()
    with hook.session() as client:
        experiment_id = hook.get_or_create_experiment(client, "hook-artifact-location")
        again = hook.get_or_create_experiment(client, "hook-artifact-location")
        location = client.get_experiment(experiment_id).artifact_location
    assert again == experiment_id
    db_dir = Path(mlflow_conn.removeprefix("sqlite:///")).parent
    assert location == (db_dir / "artifacts").as_uri()


def test_test_connection_reports_success_and_failure(monkeypatch, mlflow_store):
    _conn(monkeypatch, host=mlflow_store)
    ok, message = MlflowHook().test_connection()
    assert ok, message
    # A closed loopback port: no retries, so it fails fast with the reason.
    _conn(monkeypatch, host="http://127.0.0.1:9", extra={"max_retries": 0, "request_timeout": 2})
    ok, message = MlflowHook().test_connection()
    assert not ok and "127.0.0.1:9" in message


def test_ui_links_point_at_the_mlflow_ui(monkeypatch):
    _conn(monkeypatch, host="http://127.0.0.1:5000")
    hook = MlflowHook()
    assert hook.run_url("3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert hook.model_version_url("pm rf", 2) == "http://127.0.0.1:5000/#/models/pm%20rf/versions/2"


def test_embedded_store_links_use_the_configured_ui_url(monkeypatch, mlflow_store):
    _conn(monkeypatch, host=mlflow_store)
    monkeypatch.setenv("CMMS_MLFLOW_UI_URL", "http://127.0.0.1:5055/")
    assert MlflowHook().model_version_url("m", 1) == "http://127.0.0.1:5055/#/models/m/versions/1"


def test_uris_lose_their_credentials_before_they_are_logged():
    from cmms_mlflow.hooks.mlflow_hook import redact_uri

    assert redact_uri("http://user:pw@127.0.0.1:5000/x") == "http://127.0.0.1:5000/x"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_mlflow_connection_type_is_registered_with_airflow():
    from airflow.providers_manager import ProvidersManager

    hook_info = ProvidersManager().hooks["mlflow"]
    assert hook_info.hook_class_name == "cmms_mlflow.hooks.mlflow_hook.MlflowHook"
    assert hook_info.connection_id_attribute_name == "mlflow_conn_id"
