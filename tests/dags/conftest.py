"""A real Airflow deployment for the scheduler tests: api-server, scheduler and dag-processor.

LocalExecutor, PostgreSQL metadata (the suite's throwaway server) and an embedded MLflow store
of its own; started once per session on first use by the ``start_airflow`` factory
(tests/conftest.py) and stopped at the end.
"""

from __future__ import annotations

import json

import pytest

#: SimpleAuthManager users of the cluster (name -> role); their passwords are generated at start
#: and ``AirflowCluster.token(user)`` reads them. viewer may read DAGs; operator ("user") may trigger.
USERS = {"admin": "admin", "viewer": "viewer", "operator": "user"}


@pytest.fixture(scope="session")
def airflow_cluster(tmp_path_factory, start_airflow):
    mlflow_uri = f"sqlite:///{tmp_path_factory.mktemp('cluster-mlflow') / 'mlflow.db'}"
    return start_airflow(
        "airflow-cluster",
        env={
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        },
        mlflow_uri=mlflow_uri,
    )
