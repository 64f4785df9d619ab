"""
### Predictive maintenance: batch scoring with the champion

Runs whenever a champion may have changed — the Asset `cmms_champion_model`, emitted by
`predictive_maintenance_training`'s promote step and by `model_promotion` — or by hand.

**score_fleet** takes the latest telemetry of every unit of the fleet, loads the champion by
alias (`models:/<name>@champion`, the model named by the Asset event, else `model_name`),
and writes one row per unit — `equipment_id`, `failure_probability`, `at_risk`,
`model_name`, `model_version`, `scored_at` — to
`$CMMS_DATA_ROOT/predictive_maintenance_scoring/<run_id>/<model>/predictions.parquet`.
A summary (units scored, units at risk, per equipment type, the riskiest units) is logged as an
MLflow run in the experiment `predictive_maintenance_scoring`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag

from cmms_mlflow.assets import CHAMPION_MODEL
from cmms_mlflow.operators import MlflowBatchScoreOperator
from cmms_pm.params import TRAINING_PARAMS

NO_EVENT_MODEL = "Model to score with when no Asset event names one (a manual run)."


@dag(
    dag_id="predictive_maintenance_scoring",
    schedule=[CHAMPION_MODEL],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "model_name": Param(**(TRAINING_PARAMS["model_name"] | {"description": NO_EVENT_MODEL})),
        "n_units": Param(
            500,
            type="integer",
            minimum=1,
            maximum=1_000_000,
            title="Fleet size",
            description="Units in the (synthetic) fleet snapshot.",
            section="Scoring",
        ),
        "risk_threshold": Param(
            0.5,
            type="number",
            minimum=0.0,
            maximum=1.0,
            title="Risk threshold",
            description="A unit is at risk from this failure probability.",
            section="Scoring",
        ),
    },  # fmt: skip
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=30),
    },
    tags=["mlflow", "predictive-maintenance", "scoring"],
    doc_md=__doc__,
)
def predictive_maintenance_scoring():
    MlflowBatchScoreOperator(
        task_id="score_fleet",
        model_name="{{ params.model_name }}",
        n_units="{{ params.n_units }}",
        risk_threshold="{{ params.risk_threshold }}",
    )


predictive_maintenance_scoring()

if __name__ == "__main__":
    predictive_maintenance_scoring().test()
