"""A real Airflow deployment for the scheduler tests: api-server, scheduler and dag-processor.

LocalExecutor, PostgreSQL metadata (the suite's throwaway server) and an embedded MLflow store
of its own; started once per session on first use by the ``start_airflow`` factory
(tests/conftest.py) and stopped at the end. Its tasks report lineage through OpenLineage's file
transport (``<home>/openlineage/``) and metrics to a StatsD receiver on 127.0.0.1 (``statsd``).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]

#: SimpleAuthManager users of the cluster (name -> role); their passwords are generated at start
#: and ``AirflowCluster.token(user)`` reads them. viewer may read DAGs; operator ("user") may trigger.
#: approver ("user") is the one approver pm_notify's spec names for its human-in-the-loop step.
USERS = {"admin": "admin", "viewer": "viewer", "operator": "user", "approver": "user"}


#: The cluster's model specs: the shipped one and a foreign-schema one (tests/dag_fixtures/models),
#: so two models' DAGs run side by side in one deployment; pm_notify (notifications, approver); and
#: pm_serve (the predict route's small limits).
CLUSTER_SPECS = (
    PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml",
    PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "ai4i.yaml",
    PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "pm_notify.yaml",
    PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "pm_serve.yaml",
)


def _write_slots(models: Path) -> None:
    """The cluster's slot specs (support.CLUSTER_SLOTS), each a copy of a base spec of CLUSTER_SPECS."""
    import yaml
    from support import CLUSTER_SLOTS, slot

    for name, base in CLUSTER_SLOTS.items():
        source = next(path for path in CLUSTER_SPECS if path.stem == base)
        raw = yaml.safe_load(source.read_text())
        raw.update(name=name, registered_model=slot(name).model, experiment=name)
        if isinstance(raw.get("scoring"), dict):
            raw["scoring"] = {**raw["scoring"], "experiment": f"{name}_scoring"}
        if name == "pm_gated":
            raw["approval"] = {**raw.get("approval", {}), "required": True}
        if name == "pm_kill":  # its killed try is retried at once, not after the default 30-60 s
            raw["retries"] = {"attempts": 2, "delay_seconds": 1, "exponential_backoff": False}
        (models / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


#: The MLflow UI the cluster's links and its navigation entry point at (no server runs there).
MLFLOW_UI_URL = "http://127.0.0.1:5000"


class StatsdReceiver:
    """A StatsD server in miniature: a UDP socket on 127.0.0.1 that keeps every line it receives."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.port = 0
        self._sock: socket.socket | None = None

    def start(self) -> StatsdReceiver:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._receive, name="statsd-receiver", daemon=True).start()
        return self

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(65535)
            except OSError:  # closed
                return
            self.lines.extend(line for line in data.decode(errors="replace").splitlines() if line)

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()


@pytest.fixture(scope="session")
def statsd():
    receiver = StatsdReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def airflow_cluster(tmp_path_factory, start_airflow, postgres_server, statsd, notification_env):
    mlflow_uri = f"sqlite:///{tmp_path_factory.mktemp('cluster-mlflow') / 'mlflow.db'}"
    models = tmp_path_factory.mktemp("cluster-models")
    for spec in CLUSTER_SPECS:
        shutil.copy(spec, models)
    _write_slots(models)
    lineage = tmp_path_factory.mktemp("cluster-openlineage")
    cluster = start_airflow(
        "airflow-cluster",
        env={
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "CMMS_MODELS_DIR": str(models),
            # The registry lock every writer shares, in the cluster's own metadata database (its name
            # is the cluster's, see start_airflow), as production configures it; required here.
            "AIRFLOW_CONN_CMMS_REGISTRY_LOCK": f"postgres://postgres@127.0.0.1:{postgres_server.port}/airflow_cluster",
            "CMMS_REGISTRY_LOCK": "postgres",
            "CMMS_MLFLOW_UI_URL": MLFLOW_UI_URL,
            # OpenLineage: one JSON file per event (file transport, append off).
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(lineage / "event"), "append": False}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "cmms-test-cluster",
            # Airflow's StatsD metrics (its own and the pipeline's) to the receiver above.
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            # pm_notify's channels: the session's SMTP server and webhook receiver on 127.0.0.1.
            **notification_env,
            # The scheduler resolves timed-out human-in-the-loop tasks on this interval (default 15 s).
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
        },
        mlflow_uri=mlflow_uri,
    )
    cluster.lineage_dir = lineage
    return cluster
