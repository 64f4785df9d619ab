"""A real Airflow deployment for the scheduler tests: api-server, scheduler and dag-processor.

LocalExecutor, PostgreSQL metadata (the suite's throwaway server) and an embedded MLflow store
of its own; started once per session on first use by the ``start_airflow`` factory
(tests/conftest.py) and stopped at the end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]

#: SimpleAuthManager users of the cluster (name -> role); their passwords are generated at start
#: and ``AirflowCluster.token(user)`` reads them. viewer may read DAGs; operator ("user") may trigger.
#: approver ("user") is the one approver pm_notify's spec names for its human-in-the-loop step.
USERS = {"admin": "admin", "viewer": "viewer", "operator": "user", "approver": "user"}


#: The cluster's model specs: the shipped one and a foreign-schema one (tests/dag_fixtures/models),
#: so two models' DAGs run side by side in one deployment; and pm_notify (notifications, approver).
CLUSTER_SPECS = (
    PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml",
    PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "ai4i.yaml",
    PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "pm_notify.yaml",
)


@pytest.fixture(scope="session")
def airflow_cluster(tmp_path_factory, start_airflow, notification_env):
    mlflow_uri = f"sqlite:///{tmp_path_factory.mktemp('cluster-mlflow') / 'mlflow.db'}"
    models = tmp_path_factory.mktemp("cluster-models")
    for spec in CLUSTER_SPECS:
        shutil.copy(spec, models)
    return start_airflow(
        "airflow-cluster",
        env={
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "CMMS_MODELS_DIR": str(models),
            # pm_notify's channels: the session's SMTP server and webhook receiver on 127.0.0.1.
            **notification_env,
            # The scheduler resolves timed-out human-in-the-loop tasks on this interval (default 15 s).
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
        },
        mlflow_uri=mlflow_uri,
    )
