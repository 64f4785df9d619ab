"""
### Model promotion and one-click rollback

Move one version of a registered model by hand, with an audit trail in MLflow:

* **Promote** a version to `Production` (alias `champion`; the champion it replaces is archived
  and keeps alias `previous_champion`), or move it to `Staging` (alias `challenger`) or `Archived`.
* **Roll back**: trigger with `version = previous` and stage `Production` — the previous champion
  serves again, and the one it replaces becomes `previous_champion` (a second rollback undoes it).

1. **resolve_version** — turns `previous` into a version number and notes the current champion.
2. **change_stage** — under the model lock, a compare-and-set against that champion (another
   promotion in between fails the run and changes nothing); tags `promoted_by`, `promoted_at`,
   `promotion_reason`, `promotion_kind` (`manual`/`rollback`) and `replaced_version` (or
   `stage_changed_*` for Staging/Archived). The champion itself cannot be staged or archived:
   promote another version instead. Emits the model's champion Asset (through the alias
   `cmms_champion_models`), which schedules the model's scoring DAG.

Who: the user who triggered the run. When: the run's `run_after`. Why: the `reason` parameter.

A model whose spec requires approval goes to Production here only when the triggering user is one
of the spec's `approvers`; a version whose approval was rejected or timed out only with
`override_approval` (by an approver; the reason is recorded as the override's). Anything else
fails `change_stage` without a retry and changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag

from cmms_mlflow.integrations.assets import CHAMPION_ALIAS
from cmms_mlflow.operators import PROMOTION_POOL, MlflowChangeStageOperator, MlflowResolveVersionOperator
from cmms_pm.spec import MODEL_NAME_PATTERN, load_specs

MODELS = [spec.registered_model for spec in load_specs()[0]]

MODEL = "{{ params.model_name }}"


@dag(
    dag_id="model_promotion",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "model_name": Param(
            MODELS[0] if MODELS else None,
            type="string",
            examples=MODELS,
            pattern=MODEL_NAME_PATTERN,
            title="Registered model name",
            description="The MLflow registered model to act on.",
            section="Promotion",
        ),
        "version": Param(
            "previous",
            type="string",
            pattern=r"^(previous|[1-9][0-9]{0,9})$",
            title="Version",
            description="Version number to move, or 'previous' for the champion the current one replaced "
            "(rollback).",
            section="Promotion",
        ),
        "stage": Param(
            "Production",
            type="string",
            enum=["Production", "Staging", "Archived"],
            title="Target stage",
            description="Production = champion; Staging = challenger; Archived = retired.",
            section="Promotion",
        ),
        "reason": Param(
            type="string",
            minLength=3,
            maxLength=500,
            title="Reason",
            description="Why (kept in the version's MLflow tags).",
            section="Promotion",
        ),
        "override_approval": Param(
            False,
            type="boolean",
            title="Override a rejected or timed-out approval",
            description="Approvers only: promote a version whose approval step said no (or nobody "
            "answered in time); the reason is recorded as the override's.",
            section="Promotion",
        ),
    },
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "execution_timeout": timedelta(minutes=5),
    },
    tags=["mlflow", "predictive-maintenance", "promotion"],
    doc_md=__doc__,
)
def model_promotion():
    resolve = MlflowResolveVersionOperator(
        task_id="resolve_version", model_name=MODEL, version="{{ params.version }}"
    )
    MlflowChangeStageOperator(
        task_id="change_stage",
        model_name=MODEL,
        resolved=resolve.output,
        stage="{{ params.stage }}",
        reason="{{ params.reason }}",
        override_approval="{{ params.override_approval }}",
        pool=PROMOTION_POOL,
        outlets=[CHAMPION_ALIAS],  # the event goes to the model's own champion Asset
    )


model_promotion()

if __name__ == "__main__":
    model_promotion().test()
