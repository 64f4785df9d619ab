"""Run the nightly training DAG once, end to end, and print what it did.

Used by ``make demo`` (which sets up the environment through ``scripts/env.sh``). The full
Airflow log goes to ``$AIRFLOW_HOME/demo.log``; the terminal gets the summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

DAG_ID = "predictive_maintenance_training"


@contextmanager
def output_to(path: Path):
    """Send this process's stdout/stderr (file descriptors, so Airflow's loggers too) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


def main() -> int:
    airflow_home = Path(os.environ["AIRFLOW_HOME"])
    log_path = airflow_home / "demo.log"
    started = time.monotonic()
    print(f"Airflow home {airflow_home}; preparing the metadata DB ...", flush=True)
    setup = Path(os.environ["CMMS_PROJECT_DIR"]) / "scripts" / "setup_airflow.sh"
    subprocess.run([str(setup)], check=True, capture_output=True)

    print(f"Running {DAG_ID} end to end (full log: {log_path}) ...", flush=True)
    with output_to(log_path):
        from airflow.dag_processing.dagbag import DagBag
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        dag = DagBag(dag_folder=os.path.join(os.environ["CMMS_PROJECT_DIR"], "dags")).get_dag(DAG_ID)
        dag_run = dag.test()
        with create_session() as session:
            rows = session.scalars(
                XComModel.get_many(
                    run_id=dag_run.run_id,
                    key="return_value",
                    dag_ids=DAG_ID,
                    task_ids="report",
                )
            ).all()
            summary = XComModel.deserialize_value(rows[0]) if rows else None
            failed = [
                ti.task_id
                for ti in dag_run.get_task_instances(session=session)
                if ti.state in ("failed", "upstream_failed")
            ]

    elapsed = time.monotonic() - started
    print(f"\nDAG run {dag_run.run_id}: {dag_run.state} in {elapsed:.0f} s\n")
    if summary is None:
        print(f"No report was produced; failed tasks: {failed}. See {log_path}.")
        return 1
    if isinstance(summary, str):
        summary = json.loads(summary)
    print(summary["text"])
    print(
        "\nOpen the UIs (each in its own terminal, on 127.0.0.1 only):\n"
        "  make ui-mlflow    -> http://127.0.0.1:5000  (the same embedded MLflow DB)\n"
        "  make ui-airflow   -> http://127.0.0.1:8080  (user 'admin'; the password is printed at start\n"
        f"                      and saved in {airflow_home}/simple_auth_manager_passwords.json.generated)"
    )
    return 0 if str(dag_run.state) == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
