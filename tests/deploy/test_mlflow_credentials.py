"""Two MlflowHook sessions with different credentials, open at the same time in two threads, against
the stack's basic-auth MLflow server (artifacts proxied to S3 through ``mlflow-artifacts:``).

Each must act as its own user — through the client, MLflow's fluent API (``start_run``,
``log_input``, ``log_model``, ``register_model``) and model loading (downloads run in MLflow's
thread pool) — and neither password may reach ``os.environ`` or a subprocess.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import uuid

import pytest

pytestmark = pytest.mark.slow

READER = "cmms-reader"


@pytest.fixture(scope="module")
def reader_password(mlflow_server) -> str:
    """A second, non-admin user with the server's default permission (READ) on what it does not own."""
    password = f"Reader-{secrets.token_hex(10)}"
    body = {"username": READER, "password": password}
    status, answer = mlflow_server.call(
        "POST", "/api/2.0/mlflow/users/create", body, auth=mlflow_server.admin
    )
    assert status == 200, answer
    return password


def _child_env() -> dict[str, str]:
    out = subprocess.run(["env", "-0"], capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def _leaks(env: dict[str, str], secrets_: tuple[str, ...]) -> list[str]:
    """Variables holding a password, except the test's own connection definitions (AIRFLOW_CONN_*)."""
    return [k for k, v in env.items() if any(s in v for s in secrets_) and not k.startswith("AIRFLOW_CONN_")]


def _tiny_model():
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"x": np.arange(20, dtype=float)})
    return frame, LogisticRegression().fit(frame, (frame["x"] > 9).astype(int))


def test_overlapping_sessions_with_different_credentials_each_act_as_their_own_user(
    monkeypatch, mlflow_server, reader_password
):
    import mlflow
    import mlflow.data
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    from cmms_mlflow.hooks.mlflow_hook import MlflowHook

    pipeline_user, pipeline_password = mlflow_server.pipeline
    logins = {"pipeline": (pipeline_user, pipeline_password), "reader": (READER, reader_password)}
    for conn_id, (login, password) in logins.items():
        connection = {"conn_type": "mlflow", "host": mlflow_server.url, "login": login, "password": password}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    passwords = (pipeline_password, reader_password)
    frame, model = _tiny_model()
    tag = uuid.uuid4().hex[:8]
    step = threading.Barrier(2, timeout=120)
    experiments: dict[str, str] = {}
    seen: dict[str, dict] = {}

    def session(conn_id: str) -> None:
        out = seen.setdefault(conn_id, {})
        try:
            with MlflowHook(mlflow_conn_id=conn_id).session() as client:
                step.wait()  # both sessions open from here on
                experiments[conn_id] = client.create_experiment(f"creds-{conn_id}-{tag}")
                run = client.create_run(experiments[conn_id])
                with mlflow.start_run(run_id=run.info.run_id):
                    mlflow.log_input(mlflow.data.from_pandas(frame, name="tiny"), context="training")
                    info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
                version = mlflow.register_model(info.model_uri, f"creds_{conn_id}_{tag}").version
                step.wait()
                loaded = mlflow.sklearn.load_model(f"models:/creds_{conn_id}_{tag}/{version}")
                out["prediction"] = loaded.predict(frame.tail(1)).tolist()
                other = experiments["reader" if conn_id == "pipeline" else "pipeline"]
                try:
                    client.create_run(other)
                    out["write to the other's experiment"] = "allowed"
                except MlflowException as err:
                    out["write to the other's experiment"] = err.error_code
                out["leaks during"] = _leaks(dict(os.environ), passwords) + _leaks(_child_env(), passwords)
                step.wait()
        except Exception as err:  # reported by the assertion below, with the thread's name
            out["error"] = f"{type(err).__name__}: {err}"
            step.abort()

    threads = [threading.Thread(target=session, args=(c,), name=c) for c in logins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    denied = "PERMISSION_DENIED"
    assert seen == {
        "pipeline": {"prediction": [1], "write to the other's experiment": denied, "leaks during": []},
        "reader": {"prediction": [1], "write to the other's experiment": denied, "leaks during": []},
    }
    # Checked beside our code, through the REST API: each experiment belongs to the user whose
    # session created it (only its owner may write to it; the default permission is READ).
    for login, password in logins.values():
        for conn_id, experiment_id in experiments.items():
            body = {"experiment_id": experiment_id}
            status, answer = mlflow_server.call(
                "POST", "/api/2.0/mlflow/runs/create", body, auth=(login, password)
            )
            assert status == (200 if login == logins[conn_id][0] else 403), (login, conn_id, answer)
    assert _leaks(dict(os.environ), passwords) == [] and _leaks(_child_env(), passwords) == []
