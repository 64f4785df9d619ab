"""What every task process of the LocalExecutor inherits instead of importing it itself.

``airflow.cfg`` sets ``[scheduler] mp_start_method = forkserver`` and ``mp_forkserver_preload =
cmms_mlflow.integrations.worker_preload``: the scheduler starts one forkserver that imports this module once,
the executor's workers fork from it and every task process forks from a worker (Airflow's
supervisor uses a bare ``os.fork`` on Linux), so the third-party imports below are paid once per
scheduler start instead of once per task (~3-4 s each, measured in docs/BENCHMARKS.md, "Issue 13").
Upgrading one of these packages therefore needs a scheduler restart, as any Airflow upgrade does.

Never imported by the DAG processor or the api-server (plugins/.airflowignore keeps Airflow's
plugin loader to ``plugin.py``). A failed import here only means a slower task: the forkserver
ignores an ``ImportError`` of a preload module.
"""

from __future__ import annotations

import importlib

#: In this order. skops.io comes first, while few modules are loaded: its import looks up the
#: module of every NumPy and SciPy ufunc by scanning all of ``sys.modules``
#: (``skops.io._utils.whichmodule``), ~2.4 s in a task process with Airflow loaded.
MODULES = (
    "skops.io",
    "sklearn.ensemble",
    "sklearn.metrics",
    "pandas",
    "pyarrow.parquet",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "matplotlib.backends.backend_agg",  # train_model's plots
    "shap",  # reasons and the global explanation (numba, scipy, pyplot: ~3 s on top of the above)
    # MLflow's SQL stores: importing them and mapping their ORM takes 1-3 s in every task that
    # opens a SQLite or PostgreSQL store.
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    # The Airflow side of a task process: the task runner and what the DAG file imports from
    # Airflow. Not the project's own modules (cmms_mlflow, cmms_pm, ~0.3 s per task): a task
    # runs the project code on disk when it starts, as without the preload, so a deploy never
    # needs a scheduler restart to take effect.
    "airflow.sdk",
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.standard.operators.hitl",
    "airflow.providers.standard.decorators.python",
    "airflow.providers.common.compat.assets",
    "jsonschema",
    "yaml",
)

for _name in MODULES:
    importlib.import_module(_name)

importlib.import_module("sqlalchemy.orm").configure_mappers()
