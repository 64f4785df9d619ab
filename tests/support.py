"""Helpers the test fixtures share: free loopback ports, server processes, an Airflow client.

On ``sys.path`` through pytest's ``pythonpath`` setting (pyproject.toml), so any conftest or
test can ``from support import ...``.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# The process harness (tests/harness.py) is the one home of starting, waiting for and stopping
# servers; the fixtures import these names from here as they always have.
from harness import free_port, start_process, stop_processes
from harness import wait_until_ready as wait_for

__all__ = ["free_port", "start_process", "stop_processes"]

DAG_ID = "predictive_maintenance_training"


@dataclass
class AirflowCluster:
    """A running Airflow deployment (separate processes on 127.0.0.1) and a REST client for it."""

    home: Path
    env: dict[str, str] = field(repr=False)
    base_url: str
    mlflow_uri: str = ""
    #: Where the tasks' OpenLineage events land (file transport), when the cluster sets one.
    lineage_dir: Path | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def token(self, user: str = "admin") -> str:
        """A JWT from ``/auth/token`` for a SimpleAuthManager user (its password was generated at start)."""
        if user not in self._tokens:
            passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
            body = {"username": user, "password": passwords[user]}
            self._tokens[user] = self.request("POST", "/auth/token", body, auth=False)[1]["access_token"]
        return self._tokens[user]

    def request(
        self, method: str, path: str, body: dict | None = None, *, auth: bool = True, user: str = "admin"
    ):
        """(status, JSON body) of a call to the api-server, as ``user`` (anonymous if not ``auth``)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token(user)}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def dag_runs(self, dag_id: str = DAG_ID) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")[1]["dag_runs"]

    def wait_for_runs(
        self, run_ids: set[str] | None, count: int, timeout: float, dag_id: str = DAG_ID
    ) -> list[dict]:
        """Wait until ``count`` runs (or the given ones) have finished; return them."""
        deadline = time.monotonic() + timeout
        while True:
            runs = [r for r in self.dag_runs(dag_id) if run_ids is None or r["dag_run_id"] in run_ids]
            finished = [r for r in runs if r["state"] in ("success", "failed")]
            if len(finished) >= count:
                return finished
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"runs not finished after {timeout} s: {[(r['dag_run_id'], r['state']) for r in runs]}"
                )
            time.sleep(3)

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances"
        return {ti["task_id"]: ti for ti in self.request("GET", path)[1]["task_instances"]}

    def stop(self) -> None:
        stop_processes(self.processes)


def wait_until_ready(cluster: AirflowCluster, timeout: float = 180) -> None:
    """Wait until the cluster's api-server serves the training DAG (its DAGs are parsed); fail early,
    with every component's log, if one of its processes exits."""

    def dag_served() -> bool:
        return cluster.request("GET", f"/api/v2/dags/{DAG_ID}")[0] == 200

    name = f"Airflow at {cluster.base_url} ({cluster.home})"
    wait_for(name, dag_served, processes=cluster.processes, timeout=timeout, interval=2)


#: Specs the test cluster gets beside its CLUSTER_SPECS (tests/dags/conftest.py): a copy of a base spec
#: under another name, owning a registered model of its own (``<slot>_rf``). A spec owns its model, so a
#: test whose runs need a model no other test touches trains through a slot of its own (DAGs
#: ``<slot>_training``/``<slot>_scoring``).
CLUSTER_SLOTS = {
    "pm_backfill": "predictive_maintenance",
    "pm_kill": "predictive_maintenance",
    "pm_rest_backfill": "predictive_maintenance",
    "pm_api": "predictive_maintenance",
    "pm_obs": "predictive_maintenance",
    "pm_concurrent": "predictive_maintenance",
    "pm_approve": "pm_notify",
    "pm_refuse": "pm_notify",
    "pm_silent": "pm_notify",
    "pm_ui_approval": "pm_notify",
    # Requires approval (approver "approver"): its model is promoted outside the step only by them.
    "pm_gated": "pm_notify",
}


@dataclass(frozen=True)
class Slot:
    """One of CLUSTER_SLOTS: its spec name, DAG ids and registered model."""

    spec: str

    @property
    def training(self) -> str:
        return f"{self.spec}_training"

    @property
    def scoring(self) -> str:
        return f"{self.spec}_scoring"

    @property
    def model(self) -> str:
        return f"{self.spec}_rf"


def slot(name: str) -> Slot:
    assert name in CLUSTER_SLOTS, f"add {name!r} to CLUSTER_SLOTS (tests/dags/conftest.py)"
    return Slot(name)


def training_provenance(spec) -> dict[str, str]:
    """The run tags a training task of ``spec``'s DAG writes, which model loading requires: tests that
    log a model with ``log_training_run`` outside a DAG pass them."""
    return {
        "model_spec": spec.name,
        "airflow.dag_id": spec.training_dag_id,
        "airflow.run_id": "manual__test",
        "airflow.task_id": "train_model",
    }


def spec_owning(spec, model_name: str):
    """``spec`` with ``registered_model`` = ``model_name``: a spec owns its model, so a test that wants
    a model of its own (no other test touches) runs a spec of its own."""
    from cmms_pm.spec import ModelSpec

    return ModelSpec.from_dict({**spec.to_dict(), "registered_model": model_name})


def training_dag_owning(spec, model_name: str):
    """The training DAG of :func:`spec_owning` (built by the DAG factory, as the dags folder does)."""
    from cmms_mlflow.factory import build_training_dag

    return build_training_dag(spec_owning(spec, model_name))


def xcom_value(dag_run, task_id: str, key: str = "return_value"):
    """The XCom ``key`` a task of a finished ``dag.test()`` run pushed, or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, key=key, dag_ids=dag_run.dag_id, task_ids=task_id)
        ).all()
        return XComModel.deserialize_value(rows[0]) if rows else None


def wait_until_parked(
    cluster: AirflowCluster, dag_id: str, task_id: str, run_id: str, timeout: float = 120
) -> None:
    """Wait until the executor has reported the end of the process of a task that asked a person.

    Airflow 3.3.2 race, seen on a loaded machine: the task is ``awaiting_input`` as soon as it has
    asked, but its process may take seconds more to exit. An answer in that window resumes the task
    at once; when the scheduler then handles the first process's late "success" event it ends the
    resumed try (heartbeat 410), and the retry asks again with the answer lost. A person never
    answers that fast; a test does, so it answers once the scheduler has logged that event.
    """
    event = (
        "Received executor event with state success for task instance "
        f"TaskInstanceKey(dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}', try_number=1"
    )
    deadline = time.monotonic() + timeout
    while event not in (cluster.home / "scheduler.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no executor event for {task_id} of {run_id} in {timeout} s"
        time.sleep(1)
