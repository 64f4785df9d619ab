"""The pipeline on the production stack: authenticated MLflow on PostgreSQL with S3 artifacts,
Airflow on PostgreSQL with CeleryExecutor, data in S3, and a password that never leaks.

One DAG run (triggered through Airflow's REST API v2 with a JWT) is shared by the tests below;
the fixtures are in tests/deploy/conftest.py.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import uuid
from pathlib import Path

import pytest
from harness import group_members
from support import DAG_ID

pytestmark = pytest.mark.slow

ARTIFACT_BUCKET = "cmms-artifacts"
DATA_BUCKET = "cmms-data"


@pytest.fixture(scope="session")
def stack_run(celery_stack, mlflow_server):
    """One pipeline run triggered through the REST API, waited for; (run_id, conf)."""
    model = "predictive_maintenance_rf"  # the shipped spec's own model (a spec trains no other)
    conf = {"model_name": model, "experiment_name": f"stack-{uuid.uuid4().hex[:8]}", "n_samples": 3000}
    status, body = celery_stack.request(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
    )
    assert status == 200, body
    run_id = body["dag_run_id"]
    [run] = celery_stack.wait_for_runs({run_id}, 1, timeout=900)
    return run, conf


def test_rest_triggered_run_succeeds_on_celery_workers(celery_stack, stack_run, worker_dir, worker_dir_b):
    run, _ = stack_run
    tis = celery_stack.task_instances(run["dag_run_id"])
    states = {task: ti["state"] for task, ti in tis.items()}
    assert run["state"] == "success", (states, celery_stack.home)
    assert states["promote_model"] == "success" and states["reject_model"] == "skipped", states
    assert {ti["executor"] or "default" for ti in tis.values()} <= {"default", "CeleryExecutor"}
    worker_log = "".join(
        (celery_stack.home / f"{w}.log").read_text() for w in ("celery-worker", "celery-worker-b")
    )
    for task in ("extract_data", "train_model", "promote_model"):
        assert f"task_id='{task}'" in worker_log or task in worker_log, f"{task} did not run on a worker"
    # Nothing was written to the workers' working directories (no ./mlruns, ./mlflow.db, data...).
    assert list(worker_dir.iterdir()) == [] and list(worker_dir_b.iterdir()) == []


def test_registry_state_through_mlflow_rest_after_the_run(mlflow_server, stack_run):
    _, conf = stack_run
    query = urllib.parse.urlencode({"name": conf["model_name"], "alias": "champion"})
    status, body = mlflow_server.call(
        "GET", f"/api/2.0/mlflow/registered-models/alias?{query}", auth=mlflow_server.pipeline
    )
    assert status == 200, body
    champion = body["model_version"]
    assert champion["current_stage"] == "Production"
    tags = {t["key"]: t["value"] for t in champion.get("tags", [])}
    assert tags["validation_status"] == "passed"
    assert tags["data_version"]
    # The run behind it: metrics, and artifacts under the S3 artifact root.
    status, body = mlflow_server.call(
        "GET", f"/api/2.0/mlflow/runs/get?run_id={champion['run_id']}", auth=mlflow_server.pipeline
    )
    assert status == 200
    metrics = {m["key"]: m["value"] for m in body["run"]["data"]["metrics"]}
    assert metrics["val_f1"] > 0
    assert body["run"]["info"]["artifact_uri"].startswith("mlflow-artifacts:/")


def test_artifacts_and_pipeline_data_land_in_s3(s3_server, mlflow_server, stack_run):
    run, conf = stack_run
    status, body = mlflow_server.call(
        "GET",
        "/api/2.0/mlflow/registered-models/alias?"
        + urllib.parse.urlencode({"name": conf["model_name"], "alias": "champion"}),
        auth=mlflow_server.pipeline,
    )
    run_id = body["model_version"]["run_id"]
    artifacts = s3_server.keys(ARTIFACT_BUCKET, "mlflow/")
    assert any(key.endswith("/MLmodel") for key in artifacts), artifacts[:20]
    assert any(run_id in key and key.endswith(".png") for key in artifacts), artifacts[:20]
    data = s3_server.keys(DATA_BUCKET, f"pipeline/{DAG_ID}/")
    names = {Path(key).name for key in data}
    assert {"train.parquet", "validation.parquet", "holdout.parquet", "manifest.json"} <= names, data


def _leaks(secret: str, texts: dict[str, str]) -> list[str]:
    return [where for where, text in texts.items() if secret in text]


def test_the_pipeline_password_appears_nowhere(
    celery_stack, mlflow_server, s3_server, stack_run, worker_dir, worker_dir_b
):
    secret = mlflow_server.pipeline_password
    run, conf = stack_run
    # It was really used: the connection the workers read carries it.
    assert secret in celery_stack.env["AIRFLOW_CONN_MLFLOW_DEFAULT"]
    texts: dict[str, str] = {}
    # Task logs and every component's log (api-server, scheduler, dag-processor, workers).
    for folder in (celery_stack.home, worker_dir, worker_dir_b, mlflow_server.log.parent):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".log", ".json", "") and path.stat().st_size < 50_000_000:
                texts[str(path)] = path.read_text(errors="replace")
    assert any("attempt=1.log" in where for where in texts), "no task log found"
    # XCom values and rendered templates of every task instance.
    quoted = urllib.parse.quote(run["dag_run_id"], safe="")
    for task, ti in celery_stack.task_instances(run["dag_run_id"]).items():
        texts[f"rendered_fields {task}"] = json.dumps(ti.get("rendered_fields"))
        base = f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/{task}/xcomEntries"
        for entry in celery_stack.request("GET", base)[1].get("xcom_entries", []):
            key = urllib.parse.quote(entry["key"], safe="")
            texts[f"xcom {task}/{entry['key']}"] = json.dumps(celery_stack.request("GET", f"{base}/{key}")[1])
    assert any(where.startswith("xcom ") for where in texts), "no XCom found"
    # MLflow: runs (params, tags), model versions and the registered model, small artifacts.
    status, body = mlflow_server.call(
        "POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1000}, auth=mlflow_server.admin
    )
    ids = [e["experiment_id"] for e in body["experiments"]]
    search = {"experiment_ids": ids, "max_results": 1000}
    runs = mlflow_server.call("POST", "/api/2.0/mlflow/runs/search", search, auth=mlflow_server.admin)[1]
    assert runs.get("runs"), "no MLflow run found"
    texts["mlflow runs"] = json.dumps(runs)
    query = urllib.parse.urlencode({"filter": f"name='{conf['model_name']}'"})
    path = f"/api/2.0/mlflow/model-versions/search?{query}"
    versions = mlflow_server.call("GET", path, auth=mlflow_server.admin)
    texts["mlflow model versions"] = json.dumps(versions[1])
    client = s3_server.client()
    for key in s3_server.keys(ARTIFACT_BUCKET):
        if key.endswith((".json", ".txt", ".yaml", "MLmodel", ".html")):
            texts[f"s3://{ARTIFACT_BUCKET}/{key}"] = (
                client.get_object(Bucket=ARTIFACT_BUCKET, Key=key)["Body"].read().decode(errors="replace")
            )
    # The check itself can fail: a planted copy is found.
    assert _leaks(secret, {"planted": f"password={secret}"}) == ["planted"]
    assert _leaks(secret, texts) == []


# The server's own guards (run after the pipeline, whose start overlapped the server's).


def test_mlflow_server_answers_health_and_refuses_anonymous_and_wrong_credentials(mlflow_server):
    assert mlflow_server.call("GET", "/health")[0] == 200
    path = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert mlflow_server.call("GET", path)[0] == 401
    assert mlflow_server.call("GET", path, auth=(mlflow_server.pipeline[0], "wrong-password-123"))[0] == 401
    # The password older MLflow releases shipped as the admin default is refused.
    assert mlflow_server.call("GET", path, auth=("admin", "password1234"))[0] == 401
    assert mlflow_server.call("GET", path, auth=mlflow_server.admin)[0] == 200
    assert mlflow_server.call("GET", path, auth=mlflow_server.pipeline)[0] == 200


def test_pipeline_user_is_not_an_admin_and_cannot_touch_what_it_does_not_own(mlflow_server):
    user = mlflow_server.pipeline[0]
    path = f"/api/2.0/mlflow/users/get?username={user}"
    status, body = mlflow_server.call("GET", path, auth=mlflow_server.admin)
    assert status == 200 and body["user"]["is_admin"] is False
    # A model the admin owns: the default permission (READ) lets the pipeline read, not write.
    name = f"admin_owned_{uuid.uuid4().hex[:8]}"
    assert mlflow_server.call("POST", "/api/2.0/mlflow/registered-models/create", {"name": name},
                              auth=mlflow_server.admin)[0] == 200  # fmt: skip
    query = urllib.parse.urlencode({"name": name})
    path = f"/api/2.0/mlflow/registered-models/get?{query}"
    assert mlflow_server.call("GET", path, auth=mlflow_server.pipeline)[0] == 200
    status, _ = mlflow_server.call(
        "PATCH", "/api/2.0/mlflow/registered-models/update", {"name": name, "description": "x"},
        auth=mlflow_server.pipeline,
    )  # fmt: skip
    assert status == 403


def test_security_middleware_refuses_foreign_host_and_origin(mlflow_server):
    import http.client
    from base64 import b64encode

    host, port = mlflow_server.url.removeprefix("http://").split(":")
    auth = "Basic " + b64encode(":".join(mlflow_server.admin).encode()).decode()
    path = "/api/2.0/mlflow/experiments/search?max_results=1"

    def status(headers: dict[str, str], method: str = "GET") -> int:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        body = b'{"max_results": 1}' if method == "POST" else None
        headers = {"Authorization": auth, "Content-Type": "application/json", **headers}
        conn.request(method, path, body=body, headers=headers)
        return conn.getresponse().status

    assert status({}) == 200
    assert status({"Host": "attacker.example"}) == 403  # DNS rebinding
    # A state-changing call from a foreign web page; the server's own origin may.
    assert status({"Origin": "http://attacker.example"}, "POST") == 403
    assert status({"Origin": f"http://127.0.0.1:{port}"}, "POST") == 200


def test_ensure_user_again_resets_the_password_instead_of_failing(mlflow_server):
    import subprocess
    import sys

    env = {
        "PATH": os.environ["PATH"],
        "MLFLOW_TRACKING_USERNAME": mlflow_server.admin_user,
        "MLFLOW_TRACKING_PASSWORD": mlflow_server.admin_password,
        "MLFLOW_PIPELINE_PASSWORD": mlflow_server.pipeline_password,
    }
    user = mlflow_server.pipeline[0]
    command = [sys.executable, "-m", "cmms_deploy.mlflow_server", "ensure-user", user]
    command += ["--tracking-uri", mlflow_server.url]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"user {user} updated" in out.stdout.splitlines()
    path = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert mlflow_server.call("GET", path, auth=mlflow_server.pipeline)[0] == 200


# The start script: the database password stays out of process arguments, a % in it works,
# and the users database keeps the backend URI's query string.


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_no_database_uri_or_password_in_the_server_processes_arguments_or_log(mlflow_server):
    secret, encoded = mlflow_server.db_password, urllib.parse.quote(mlflow_server.db_password, safe="")
    pids = sorted(group_members(mlflow_server.process.pid))
    assert len(pids) >= 2, pids  # `mlflow server` and its uvicorn worker(s)
    for pid in pids:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        assert "postgresql" not in argv and secret not in argv and encoded not in argv, (pid, argv)
    log = mlflow_server.log.read_text(errors="replace")
    assert secret not in log and encoded not in log


def _pg(postgres_server, database: str, **login):
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=postgres_server.port, dbname=database, **login)


def test_a_url_encoded_database_password_with_percent_signs_works_end_to_end(postgres_server, mlflow_server):
    import psycopg2

    # PostgreSQL really checks this role's password...
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _pg(
            postgres_server, "mlflow_stack_auth", user=mlflow_server.db_user, password="wrong-password"
        ).close()
    # ...and the server, given it URL-encoded (with %25) in its URI and its auth config, keeps its
    # users in the database it created and reads them on every authenticated call.
    conn = _pg(
        postgres_server, "mlflow_stack_auth", user=mlflow_server.db_user, password=mlflow_server.db_password
    )
    with conn, conn.cursor() as cursor:
        cursor.execute("SELECT username FROM users")
        users = {row[0] for row in cursor.fetchall()}
    conn.close()
    assert {mlflow_server.admin_user, mlflow_server.pipeline[0]} <= users
    assert mlflow_server.call("GET", SEARCH, auth=mlflow_server.pipeline)[0] == 200


def test_the_users_database_uri_keeps_the_backend_uri_query_string(postgres_server, mlflow_server):
    # An authenticated call opens (and pools) connections to both databases.
    assert mlflow_server.call("GET", SEARCH, auth=mlflow_server.admin)[0] == 200
    conn = _pg(postgres_server, "postgres", user="postgres")
    with conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT datname, array_agg(DISTINCT application_name) FROM pg_stat_activity "
            "WHERE datname IN ('mlflow_stack', 'mlflow_stack_auth') GROUP BY datname"
        )
        names = dict(cursor.fetchall())
    conn.close()
    wanted = [mlflow_server.db_query.split("=", 1)[1]]
    assert names == {"mlflow_stack": wanted, "mlflow_stack_auth": wanted}
