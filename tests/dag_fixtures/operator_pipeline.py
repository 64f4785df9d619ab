"""A small DAG of the plugin's operators, driven entirely by its run conf (tests only).

Loaded as a second DAG bundle by tests/conftest.py, so ``dag.test()`` can run it like any DAG. Its
params are the shipped spec's trigger form plus ``manifest`` (a batch written by the test).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param

from cmms_mlflow.operators import (
    MlflowRegisterModelOperator,
    MlflowTrainModelOperator,
    MlflowTransitionModelOperator,
    MlflowValidateModelOperator,
)
from cmms_pm.params import training_params
from cmms_pm.spec import PROJECT_DIR, load_spec

SPEC = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
VERSION = "{{ ti.xcom_pull(task_ids='register_model')['version'] }}"

for dag_id, staged in (("operator_pipeline", True), ("operator_pipeline_unstaged", False)):
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        render_template_as_native_obj=True,
        default_args={"retries": 0},
        params={**{name: Param(**kw) for name, kw in training_params(SPEC).items()}, "manifest": {}},
    ) as dag:
        train = MlflowTrainModelOperator(
            task_id="train_model", spec=SPEC.to_dict(), dataset="{{ params.manifest }}"
        )
        register = MlflowRegisterModelOperator(
            task_id="register_model", model_name="{{ params.model_name }}", training=train.output
        )
        validate = MlflowValidateModelOperator(
            task_id="validate_model",
            spec=SPEC.to_dict(),
            model_name="{{ params.model_name }}",
            version=VERSION,
            holdout_uri="{{ params.manifest['splits']['holdout']['uri'] }}",
        )
        if staged:
            stage = MlflowTransitionModelOperator(
                task_id="stage_model", model_name="{{ params.model_name }}", version=VERSION, stage="Staging"
            )
            register >> stage >> validate
        else:
            register >> validate
    globals()[dag_id] = dag
