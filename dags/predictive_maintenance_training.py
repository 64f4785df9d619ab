"""
### Predictive maintenance: nightly training to production

Every night at 02:00 UTC, for the day of telemetry that just ended (the run's data interval):

1. **extract_data** — synthetic CMMS telemetry (or a CSV/Parquet file), deterministic for the
   data interval, split train/validation/holdout and written as Parquet under the data root.
2. **validate_data** — schema, dtypes, NaNs, ranges, both classes; a bad batch stops here.
3. **train_model** — RandomForest, one MLflow run with params, metrics, plots and the model.
4. **register_model** — a new version of the registered model, with description and tags.
5. **stage_model** — stage `Staging`, alias `challenger`.
6. **validate_model** — challenger and champion scored on the same holdout; tags and a
   decision record (`validation/decision.json`) written to MLflow.
7. **decide** — promote if F1 ≥ threshold, F1 ≥ champion F1 + minimum improvement and
   promotion is allowed; otherwise reject.
8. **promote_model** (`Production`, alias `champion`, previous one archived and kept as
   `previous_champion`; emits the Asset `cmms_champion_model`, which schedules
   `predictive_maintenance_scoring`) or **reject_model** (`Archived`, tag
   `validation_status=rejected`).
9. **report** — a readable summary in the log and in XCom.

Trigger it by hand with **Trigger DAG ▸ the parameter form**; every field is validated
before the run is created.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from cmms_mlflow.assets import CHAMPION_MODEL
from cmms_mlflow.exceptions import bad_data_fails_the_task
from cmms_mlflow.operators import (
    PROMOTION_POOL,
    MlflowModelReportOperator,
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowRejectModelOperator,
    MlflowTrainModelOperator,
    MlflowTransitionModelOperator,
    MlflowValidateModelOperator,
)
from cmms_pm.params import TRAINING_PARAMS

MODEL = "{{ params.model_name }}"
VERSION = "{{ ti.xcom_pull(task_ids='register_model')['version'] }}"
HOLDOUT = "{{ ti.xcom_pull(task_ids='extract_data')['splits']['holdout']['uri'] }}"


@dag(
    dag_id="predictive_maintenance_training",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # One nightly run at a time; backfills set their own --max-active-runs.
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    render_template_as_native_obj=True,
    params={name: Param(**spec) for name, spec in TRAINING_PARAMS.items()},
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=20),
    },
    tags=["mlflow", "predictive-maintenance", "training"],
    doc_md=__doc__,
)
def predictive_maintenance_training():
    @task(execution_timeout=timedelta(minutes=30))
    def extract_data(params: dict) -> dict:
        from cmms_pm.batch import batch_uri, data_root, prepare_batch

        context = get_current_context()
        # Runs triggered with no logical date (REST API) have no data interval: use run_after.
        start = context.get("data_interval_start") or context["dag_run"].run_after
        end = context.get("data_interval_end") or context["dag_run"].run_after
        with bad_data_fails_the_task():
            return prepare_batch(
                source=params["data_source"],
                n_samples=params["n_samples"],
                target_column=params["target_column"],
                interval_start=start.isoformat(),
                interval_end=end.isoformat(),
                out_uri=batch_uri(data_root(), context["dag"].dag_id, context["run_id"]),
            )

    @task
    def validate_data(manifest: dict) -> dict:
        from cmms_pm.batch import validate_batch

        with bad_data_fails_the_task():
            return validate_batch(manifest)

    batch = extract_data()

    train = MlflowTrainModelOperator(
        task_id="train_model",
        dataset=batch,
        experiment_name="{{ params.experiment_name }}",
        hyperparameters={"n_estimators": "{{ params.n_estimators }}", "max_depth": "{{ params.max_depth }}"},
        run_tags={"model_type": "RandomForestClassifier", "use_case": "predictive_maintenance"},
        execution_timeout=timedelta(hours=2),
    )
    register = MlflowRegisterModelOperator(task_id="register_model", model_name=MODEL, training=train.output)
    stage = MlflowTransitionModelOperator(
        task_id="stage_model",
        model_name=MODEL,
        version=VERSION,
        stage="Staging",
        # A cleared run re-executes this step; never pull a decided version back to Staging.
        from_stages=("None",),
    )
    validate_model = MlflowValidateModelOperator(
        task_id="validate_model",
        model_name=MODEL,
        version=VERSION,
        holdout_uri=HOLDOUT,
        f1_threshold="{{ params.f1_threshold }}",
        min_improvement="{{ params.min_improvement }}",
        allow_promotion="{{ params.allow_promotion }}",
        allow_older_data="{{ params.promote_older_data }}",
    )

    @task.branch
    def decide(validation: dict) -> str:
        return "promote_model" if validation["decision"] == "promote" else "reject_model"

    promote = MlflowPromoteModelOperator(
        task_id="promote_model",
        model_name=MODEL,
        validation=validate_model.output,
        pool=PROMOTION_POOL,
        outlets=[CHAMPION_MODEL],  # schedules predictive_maintenance_scoring
    )
    reject = MlflowRejectModelOperator(
        task_id="reject_model", model_name=MODEL, validation=validate_model.output, pool=PROMOTION_POOL
    )
    report = MlflowModelReportOperator(
        task_id="report",
        model_name=MODEL,
        validation=validate_model.output,
        trigger_rule="none_failed_min_one_success",
    )

    validate_data(batch) >> train
    register >> stage >> validate_model
    decide(validate_model.output) >> [promote, reject] >> report


predictive_maintenance_training()

if __name__ == "__main__":
    predictive_maintenance_training().test()
