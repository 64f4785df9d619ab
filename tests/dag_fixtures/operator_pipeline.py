"""A small DAG of the plugin's operators, driven entirely by its run conf (tests only).

Loaded as a second DAG bundle by tests/conftest.py, so ``dag.test()`` can run it like any DAG.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG

from cmms_mlflow.operators import (
    MlflowRegisterModelOperator,
    MlflowTrainModelOperator,
    MlflowTransitionModelOperator,
    MlflowValidateModelOperator,
)

VERSION = "{{ ti.xcom_pull(task_ids='register_model')['version'] }}"

for dag_id, staged in (("operator_pipeline", True), ("operator_pipeline_unstaged", False)):
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        render_template_as_native_obj=True,
        default_args={"retries": 0},
        params={"model_name": "", "manifest": {}},
    ) as dag:
        train = MlflowTrainModelOperator(
            task_id="train_model",
            dataset="{{ params.manifest }}",
            experiment_name="operators-{{ params.model_name }}",
            hyperparameters={"n_estimators": 10, "max_depth": 6},
            run_tags={"model_type": "RandomForestClassifier"},
        )
        register = MlflowRegisterModelOperator(
            task_id="register_model", model_name="{{ params.model_name }}", training=train.output
        )
        validate = MlflowValidateModelOperator(
            task_id="validate_model",
            model_name="{{ params.model_name }}",
            version=VERSION,
            holdout_uri="{{ params.manifest['splits']['holdout']['uri'] }}",
            f1_threshold=0.5,
            min_improvement=0.0,
            allow_promotion=True,
        )
        if staged:
            stage = MlflowTransitionModelOperator(
                task_id="stage_model", model_name="{{ params.model_name }}", version=VERSION, stage="Staging"
            )
            register >> stage >> validate
        else:
            register >> validate
    globals()[dag_id] = dag
