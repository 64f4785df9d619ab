"""A small DAG of the plugin's operators, driven entirely by its run conf (tests only).

Loaded as a second DAG bundle by tests/conftest.py, so ``dag.test()`` can run it like any DAG. Its
params are the shipped spec's trigger form plus ``manifest`` (a batch written by the test). A test
that wants a model of its own builds the same DAG for a spec that owns it (:func:`build`): a spec's
operators write only its registered model.
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
from cmms_pm.spec import PROJECT_DIR, ModelSpec, load_spec

SPEC = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
VERSION = "{{ ti.xcom_pull(task_ids='register_model')['version'] }}"


def build(dag_id: str, staged: bool, spec: ModelSpec = SPEC) -> DAG:
    """The pipeline ``train → register (→ stage) → validate`` of ``spec``."""
    definition = spec.to_dict()
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        render_template_as_native_obj=True,
        default_args={"retries": 0},
        params={**{name: Param(**kw) for name, kw in training_params(spec).items()}, "manifest": {}},
    ) as dag:
        train = MlflowTrainModelOperator(
            task_id="train_model", spec=definition, dataset="{{ params.manifest }}"
        )
        register = MlflowRegisterModelOperator(
            task_id="register_model",
            model_name="{{ params.model_name }}",
            training=train.output,
            spec=definition,
        )
        validate = MlflowValidateModelOperator(
            task_id="validate_model",
            spec=definition,
            model_name="{{ params.model_name }}",
            version=VERSION,
            holdout_uri="{{ params.manifest['splits']['holdout']['uri'] }}",
            holdout_sha256="{{ params.manifest['splits']['holdout']['sha256'] }}",
        )
        if staged:
            stage = MlflowTransitionModelOperator(
                task_id="stage_model",
                model_name="{{ params.model_name }}",
                version=VERSION,
                stage="Staging",
                spec=definition,
            )
            register >> stage >> validate
        else:
            register >> validate
    return dag


for _dag_id, _staged in (("operator_pipeline", True), ("operator_pipeline_unstaged", False)):
    globals()[_dag_id] = build(_dag_id, _staged)
