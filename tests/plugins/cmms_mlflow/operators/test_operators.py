"""The plugin's operators in a small DAG under ``dag.test()``, against a real MLflow SQLite store.

Re-running the same DAG run clears and re-executes its tasks, as ``airflow tasks clear`` does:
the operators must resume what the first execution wrote instead of writing it twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cmms_mlflow.registry import model_registry

pytestmark = pytest.mark.slow

LOGICAL_DATE = datetime(2026, 4, 1, 3, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parents[3] / "dag_fixtures"


def _dag(dag_id: str, model_name: str):
    """The fixture DAG (tests/dag_fixtures/operator_pipeline.py), its spec owning ``model_name``."""
    import importlib.util

    from support import spec_owning

    module_spec = importlib.util.spec_from_file_location(
        "operator_pipeline", FIXTURES / "operator_pipeline.py"
    )
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.build(dag_id, dag_id == "operator_pipeline", spec_owning(module.SPEC, model_name))


def _run(dag, model_name: str, manifest: dict):
    """Run (or, with the same dates, clear and re-run) the fixture DAG for ``model_name``."""
    conf = {
        "model_name": model_name,
        "experiment_name": f"operators-{model_name}",
        "n_estimators": 10,
        "max_depth": 6,
        "f1_threshold": 0.5,
        "manifest": manifest,
    }
    return dag.test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE, run_conf=conf)


def _runs_of(client, experiment_name: str):
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _xcom(dag_run, task_id: str, key: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, key=key, dag_ids=dag_run.dag_id, task_ids=task_id)
        ).all()
        return XComModel.deserialize_value(rows[0]) if rows else None


def test_rerunning_a_dag_run_writes_no_second_mlflow_run_or_version(
    airflow_db, mlflow_conn, client, model_name, small_batch
):
    dag = _dag("operator_pipeline", model_name)
    first = _run(dag, model_name, small_batch)
    assert str(first.state) == "success"
    second = _run(dag, model_name, small_batch)
    assert second.run_id == first.run_id and str(second.state) == "success"

    runs = _runs_of(client, f"operators-{model_name}")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["airflow.run_id"] == first.run_id
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert model_registry.aliases_of(client, model_name) == {"challenger": "1"}
    assert versions[0].tags["validation_status"] == "passed"

    # The extra links' targets were pushed by the operators and point at what they touched.
    run_url = _xcom(second, "train_model", "mlflow_run_url")
    assert run_url.endswith(f"/#/experiments/{runs[0].info.experiment_id}/runs/{runs[0].info.run_id}")
    # Airflow evaluates each extra link at task end and stores the URL under the link's key.
    assert _xcom(second, "train_model", "_link_MlflowRunLink") == run_url
    assert _xcom(second, "register_model", "mlflow_model_version_url").endswith(
        f"/#/models/{model_name}/versions/1"
    )


def test_a_run_left_running_by_a_killed_attempt_is_closed_and_replaced(
    airflow_db, mlflow_conn, client, model_name, small_batch
):
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    from cmms_mlflow.hooks.mlflow_hook import MlflowHook

    dag = _dag("operator_pipeline", model_name)
    run_id = DagRun.generate_run_id(
        run_type=DagRunType.MANUAL, logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE
    )
    hook = MlflowHook()
    with hook.session() as session_client:
        experiment_id = hook.get_or_create_experiment(session_client, f"operators-{model_name}")
    stale = client.create_run(
        experiment_id,
        tags={"airflow.dag_id": dag.dag_id, "airflow.run_id": run_id, "airflow.task_id": "train_model"},
    )

    dag_run = _run(dag, model_name, small_batch)
    assert dag_run.run_id == run_id and str(dag_run.state) == "success"
    statuses = {r.info.run_id: r.info.status for r in _runs_of(client, f"operators-{model_name}")}
    assert statuses.pop(stale.info.run_id) == "FAILED"
    [(replacement, status)] = statuses.items()
    assert status == "FINISHED"
    # The pipeline went on with the replacement: it is the run train_model returned and whose
    # model was registered, never the stale one.
    assert _xcom(dag_run, "train_model", "return_value")["run_id"] == replacement
    assert client.get_model_version(model_name, "1").run_id == replacement


def test_validation_refuses_a_version_that_is_not_in_staging(
    airflow_db, mlflow_conn, client, model_name, small_batch
):
    dag_run = _run(_dag("operator_pipeline_unstaged", model_name), model_name, small_batch)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {"train_model": "success", "register_model": "success", "validate_model": "failed"}
    version = client.get_model_version(model_name, "1")
    assert version.current_stage == "None" and "validation_status" not in version.tags
