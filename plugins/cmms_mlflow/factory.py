"""The DAG factory: every model spec (``include/models/*.yaml``) becomes two DAGs.

* ``<name>_training`` — extract → validate data → train → register → stage → validate model →
  decide → promote or reject → report, on the spec's schedule, with a trigger form built from
  the spec (``cmms_pm.params.training_params``).
* ``<name>_scoring`` — scores the spec's scoring source with the champion whenever the model's
  champion Asset changes (or by hand).
* ``<name>_outcomes`` — only for a spec with an ``outcomes`` section: daily, scores the stored
  predictions against the failure log and asks for a retraining when the champion's realized
  F1/recall falls below the floor (the spec's retrain Asset, which then also schedules training).

Parsing is cheap: the specs are small YAML files; operators import MLflow, scikit-learn and
pandas only when they run. A spec that does not validate is reported as an import error of the
DAG file naming that spec's file and field, while every other spec's DAGs still load.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, Param, task

from cmms_mlflow.integrations.assets import champion_asset, retrain_asset
from cmms_mlflow.integrations.notifiers import ModelEventNotifier
from cmms_mlflow.operators import (
    ExtractBatchOperator,
    MlflowBatchScoreOperator,
    MlflowModelReportOperator,
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowRejectModelOperator,
    MlflowTrainModelOperator,
    MlflowTransitionModelOperator,
    MlflowValidateDataOperator,
    MlflowValidateModelOperator,
)
from cmms_mlflow.operators.approval_ops import MlflowApprovalOperator
from cmms_mlflow.operators.delivery_ops import DeliverScoresOperator
from cmms_mlflow.operators.outcomes_ops import MlflowMeasureOutcomesOperator, MlflowRequestRetrainingOperator
from cmms_mlflow.operators.retention_ops import MlflowRetentionOperator
from cmms_mlflow.operators.tuning_ops import PLAN_KEY, MlflowCreateStudyOperator, MlflowTuneTrialsOperator
from cmms_mlflow.tracking.realized_outcomes import lookback_days
from cmms_pm.approval import APPROVAL_TASK_ID
from cmms_pm.exceptions import SpecError
from cmms_pm.params import scoring_params, training_params
from cmms_pm.spec import ModelSpec, load_specs

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
MODEL = "{{ params.model_name }}"
VERSION = "{{ ti.xcom_pull(task_ids='register_model')['version'] }}"
HOLDOUT = "{{ ti.xcom_pull(task_ids='extract_data')['splits']['holdout']['uri'] }}"
HOLDOUT_SHA256 = "{{ ti.xcom_pull(task_ids='extract_data')['splits']['holdout']['sha256'] }}"

TRAINING_DOC = """
### {title}: training to production

{description}

Spec: `{path}` (registered model `{model}`, estimator `{estimator}`, schedule `{schedule}`).
Every run, for its data interval:

1. **extract_data** — reads the source ({source}), maps the label `{target}` to 1 = `{positive}`,
   drops `{drop}`, splits train/validation/holdout and writes Parquet under the data root.
2. **validate_data** — the spec's checks (columns, types, ranges, categories, missing values,
   both classes), then the champion's data contract: a changed schema fails unless the run sets
   `accept_schema_change`; unseen categories, out-of-range shares and drift are reported.
3. **train_model** — one MLflow run: params, metrics, plots, the data contract, the drift report
   and the model (skops, signature of what `predict` returns).
4. **register_model** → 5. **stage_model** (`Staging`, alias `challenger`) →
6. **validate_model** — challenger and champion on the same holdout; the policy
   ({metric} ≥ {threshold}, + {min_improvement} over the champion, drift: {drift_action}) decides.
7. **approve_promotion** — only when approval is required ({approval}) and the version passed:
   a person approves or rejects it in Airflow (*Required actions*); no answer within the timeout
   means no promotion.
8. **promote_model** (`Production`, alias `champion`; emits the model's champion Asset, which
   schedules `{scoring_dag}`) or **reject_model** (`Archived`), then **report**.
9. **retention** — {retention}

Notifications: {notifications}.

Trigger it by hand with **Trigger DAG ▸ the parameter form**; every field is validated before
the run is created.
"""

SCORING_DOC = """
### {title}: batch scoring with the champion

Runs whenever the champion of `{model}` may have changed (its Asset, emitted by
`{training_dag}`'s promote step, `model_promotion` and the model API), or by hand.

**score** reads the spec's scoring source ({source}), checks every row against the champion's
data contract (unseen categories, missing and out-of-range values are flagged in the output and
counted, never silently scored), loads `models:/<name>@champion` and writes one row per input —
ids `{ids}`, `failure_probability`, `at_risk`, `contract_ok`, `contract_issues`, `model_name`,
`model_version`, `scored_at` — to `$CMMS_DATA_ROOT/{scoring_dag}/<run_id>-<hash>/<model>/predictions.parquet`.
A summary is logged as an MLflow run in the experiment `{experiment}`.
{delivery}
Last, **retention**: {retention}
"""


def _source_text(source: dict[str, Any]) -> str:
    if source["kind"] == "timeseries":
        return "the spec's telemetry and event logs (time series)"
    if source["kind"] == "file":
        return f"file `{source['path']}`"
    if source["kind"] == "sql":
        return f"SQL connection `{source['conn_id']}`"
    return "synthetic telemetry"


def _params(form: dict[str, dict[str, Any]]) -> dict[str, Param]:
    return {name: Param(**kwargs) for name, kwargs in form.items()}


def _default_args(
    spec: ModelSpec, *, execution_timeout: timedelta, notifier: ModelEventNotifier | None
) -> dict[str, Any]:
    """Retries as the spec's ``retries`` says (default: 2, from 30 s with exponential backoff up to
    10 min: a down MLflow or storage recovers; bad data fails at once); a task's final failure is
    announced to the spec's channels (retries are not)."""
    retries = spec.retries
    return {
        "owner": spec.owner,
        "retries": retries["attempts"],
        "retry_delay": timedelta(seconds=retries["delay_seconds"]),
        "retry_exponential_backoff": retries["exponential_backoff"],
        "max_retry_delay": timedelta(seconds=retries["max_delay_seconds"]),
        "execution_timeout": execution_timeout,
        **_failure_callback(notifier),
    }


def build_training_dag(spec: ModelSpec) -> DAG:
    """The spec's training-to-production DAG."""
    definition = spec.to_dict()
    schedule = _training_schedule(spec)
    doc = TRAINING_DOC.format(
        title=spec.name,
        description=spec.description,
        path=spec.path,
        model=spec.registered_model,
        estimator=spec.estimator,
        schedule=spec.schedule or "manual",
        source=_source_text(dict(spec.source)),
        target=spec.target,
        positive=spec.positive_label,
        drop=", ".join(spec.drop) or "nothing",
        metric=spec.promotion["metric"],
        threshold=spec.promotion["threshold"],
        min_improvement=spec.promotion["min_improvement"],
        drift_action=spec.drift["action"],
        scoring_dag=spec.scoring_dag_id,
        approval=_approval_text(spec),
        notifications=_notifications_text(spec),
        retention=_retention_text(spec),
    )
    notifier = ModelEventNotifier.for_spec(spec)
    with DAG(
        dag_id=spec.training_dag_id,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        # One nightly run at a time; backfills set their own --max-active-runs.
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=4),
        params=_params(training_params(spec)),
        default_args=_default_args(spec, execution_timeout=timedelta(minutes=20), notifier=notifier),
        tags=["mlflow", "training", *spec.tags],
        doc_md=doc + (_tuning_text(spec) if spec.tuning else ""),
    ) as dag:
        extract = ExtractBatchOperator(
            task_id="extract_data", spec=definition, execution_timeout=timedelta(minutes=30)
        )
        checks = MlflowValidateDataOperator(
            task_id="validate_data",
            spec=definition,
            manifest=extract.output,
            execution_timeout=timedelta(minutes=30),
        )
        study, tune = _tuning_tasks(spec, definition, extract, checks) if spec.tuning else (None, None)
        train = MlflowTrainModelOperator(
            task_id="train_model",
            spec=definition,
            dataset=extract.output,
            checks=checks.output,
            tuning=study.output[PLAN_KEY] if study is not None else None,
            execution_timeout=timedelta(hours=2),
        )
        # Every step that writes the model gets the spec: the model must be the spec's own.
        register = MlflowRegisterModelOperator(
            task_id="register_model", model_name=MODEL, training=train.output, spec=definition
        )
        stage = MlflowTransitionModelOperator(
            task_id="stage_model",
            model_name=MODEL,
            version=VERSION,
            stage="Staging",
            # A cleared run re-executes this step; never pull a decided version back to Staging.
            from_stages=("None",),
            spec=definition,
        )
        validate_model = MlflowValidateModelOperator(
            task_id="validate_model",
            spec=definition,
            model_name=MODEL,
            version=VERSION,
            holdout_uri=HOLDOUT,
            holdout_sha256=HOLDOUT_SHA256,
            checks=checks.output,
            dataset=extract.output,  # its split record: the periods the decision record shows
        )

        @task.branch
        def decide(validation: dict, params: dict | None = None) -> str:
            from cmms_pm.approval import next_step
            from cmms_pm.params import approval_required

            step = next_step(validation["decision"], approval_required(spec, params or {}))
            return {"promote": "promote_model", "approve": APPROVAL_TASK_ID}.get(step, "reject_model")

        approve = MlflowApprovalOperator(
            task_id=APPROVAL_TASK_ID,
            model_name=MODEL,
            registered_model=spec.registered_model,
            validation=validate_model.output,
            approvers=spec.approval["approvers"],
            notifier=notifier,
            # The spec's; each run's approval_timeout_hours param replaces it when the step starts.
            response_timeout=timedelta(hours=spec.approval["timeout_hours"]),
        )
        promote = MlflowPromoteModelOperator(
            task_id="promote_model",
            model_name=MODEL,
            validation=validate_model.output,
            spec=definition,  # how a re-validation loads the models
            approval=approve.output,  # None when no approval was asked
            notifier=notifier,
            pool=spec.promotion_pool,
            outlets=[champion_asset(spec.name)],  # schedules the scoring DAG
            # Straight from decide (approve_promotion skipped) or after an approval.
            trigger_rule="none_failed_min_one_success",
        )
        reject = MlflowRejectModelOperator(
            task_id="reject_model",
            model_name=MODEL,
            spec=definition,
            validation=validate_model.output,
            approval=approve.output,
            notifier=notifier,
            pool=spec.promotion_pool,
            trigger_rule="none_failed_min_one_success",
        )
        report = MlflowModelReportOperator(
            task_id="report",
            model_name=MODEL,
            spec=definition,
            validation=validate_model.output,
            trigger_rule="none_failed_min_one_success",
        )
        checks >> train
        if tune is not None:
            tune >> train  # every chain of trials before the final fit
        register >> stage >> validate_model
        # Airflow's @task types its call with the function's own parameters, not the XComArg that
        # TaskFlow resolves into them at run time.
        decide(validate_model.output) >> [promote, approve, reject]  # type: ignore[arg-type]
        approve >> [promote, reject]
        [promote, reject] >> report
        report >> _retention(spec, model_name=MODEL)
    return dag


def _retention(spec: ModelSpec, *, model_name: str | None) -> MlflowRetentionOperator:
    """The DAG's last step, the spec's ``retention``: a teardown, so it runs whatever happened upstream
    and leaves the run's state to the model's steps."""
    return MlflowRetentionOperator(
        task_id="retention", spec=spec.to_dict(), model_name=model_name
    ).as_teardown()


def _training_schedule(spec: ModelSpec) -> Any:
    """The spec's cron; with a realized floor (``outcomes.floor``), also its retrain Asset."""
    cron = CronDataIntervalTimetable(spec.schedule, timezone=spec.timezone) if spec.schedule else None
    if not (spec.outcomes and spec.outcomes.get("floor")):
        return cron
    if cron is None:
        return [retrain_asset(spec.name)]
    return AssetOrTimeSchedule(timetable=cron, assets=[retrain_asset(spec.name)])


TUNING_DOC = """
**Tuning** (`tuning` in the spec): before train_model, **create_study** makes the run's Optuna study
({storage}) and its training run, then **tune** runs {n_trials} trials (the trigger's `n_trials`, at
most {max_trials}) in chains of {per_task}, one mapped task per chain, spread over the workers.
Each trial is an MLflow child run of the training run with its parameters and validation {metric};
hopeless trials are pruned. train_model fits the best trial's values and logs the study's summary.
"""


def _tuning_tasks(spec: ModelSpec, definition: dict[str, Any], extract: Any, checks: Any) -> tuple[Any, Any]:
    """create_study → tune (mapped over the study's chains of trials); returns both."""
    study = MlflowCreateStudyOperator(
        task_id="create_study", spec=definition, dataset=extract.output, checks=checks.output
    )
    from cmms_mlflow.integrations.kubernetes import trial_executor_config

    tune = MlflowTuneTrialsOperator.partial(
        task_id="tune",
        spec=definition,
        # ``.output`` is a PlainXComArg (indexable: one key of the pushed dict); Airflow types it XComArg.
        plan=study.output[PLAN_KEY],  # type: ignore[index]
        dataset=extract.output,
        execution_timeout=timedelta(hours=2),
        executor_config=trial_executor_config(spec),  # the trial pod under the KubernetesExecutor
    ).expand(chain=study.output)
    return study, tune


def _tuning_text(spec: ModelSpec) -> str:
    tuning = spec.tuning or {}
    return TUNING_DOC.format(
        storage="Airflow connection `cmms_optuna`, or a journal file on one host",
        n_trials=tuning.get("n_trials"),
        max_trials=tuning.get("max_trials"),
        per_task=tuning.get("trials_per_task"),
        metric=tuning.get("metric"),
    )


def _failure_callback(notifier: ModelEventNotifier | None) -> dict[str, Any]:
    """``on_failure_callback`` for ``default_args``: a task's final failure is announced (retries are not)."""
    return {"on_failure_callback": notifier} if notifier is not None else {}


def _approval_text(spec: ModelSpec) -> str:
    approval = spec.approval
    who = ", ".join(f"`{user}`" for user in approval["approvers"]) or "anyone who may act on this DAG"
    required = "always, by the spec" if approval["required"] else "when a run sets `require_approval`"
    return f"{required}; answered by {who}; timeout {approval['timeout_hours']:g} h"


def _retention_text(spec: ModelSpec) -> str:
    keep_batches, keep_versions = spec.retention["keep_batches"], spec.retention["keep_archived_versions"]
    if keep_batches is None and keep_versions is None:
        return "nothing is removed (the spec sets no `retention`)."
    batches = "every batch" if keep_batches is None else f"the newest {keep_batches} batches"
    versions = (
        "every archived version's artifacts"
        if keep_versions is None
        else f"the artifacts of the newest {keep_versions} archived versions (and always the champion's, "
        "the challenger's, the previous champion's and a pending approval's)"
    )
    return f"keeps {batches} under the data root and {versions}; runs whatever happened before it."


def _notifications_text(spec: ModelSpec) -> str:
    settings = spec.notifications
    channels = []
    if settings["email_to"]:
        channels.append(
            f"e-mail to {', '.join(settings['email_to'])} via `{settings['email_conn_id'] or 'smtp_default'}`"
        )
    if settings["webhook_conn_id"]:
        channels.append(f"JSON webhook `{settings['webhook_conn_id']}`")
    if not channels:
        return "none configured (the spec's `notifications`)"
    return f"{' and '.join(channels)}, on {', '.join(settings['events'])}"


def build_scoring_dag(spec: ModelSpec) -> DAG:
    """The spec's batch-scoring DAG, scheduled on its model's champion Asset."""
    params = scoring_params(spec)
    source = dict(spec.scoring_source)
    doc = SCORING_DOC.format(
        title=spec.name,
        model=spec.registered_model,
        training_dag=spec.training_dag_id,
        source=_source_text(source),
        ids=", ".join(spec.id_columns) or "(none)",
        scoring_dag=spec.scoring_dag_id,
        experiment=spec.scoring_experiment,
        delivery=_delivery_text(spec),
        retention=(
            f"keeps the newest {spec.retention['keep_batches']} scoring outputs."
            if spec.retention["keep_batches"] is not None
            else "nothing is removed (the spec sets no `retention.keep_batches`)."
        ),
    )
    with DAG(
        dag_id=spec.scoring_dag_id,
        schedule=[champion_asset(spec.name)],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        params=_params(params),
        default_args=_default_args(
            spec, execution_timeout=timedelta(minutes=30), notifier=ModelEventNotifier.for_spec(spec)
        ),
        tags=["mlflow", "scoring", *spec.tags],
        doc_md=doc,
    ) as dag:
        score = MlflowBatchScoreOperator(
            task_id="score_fleet",
            spec=spec.to_dict(),
            model_name=MODEL,
            n_units="{{ params.n_units }}" if "n_units" in params else None,
            risk_threshold="{{ params.risk_threshold }}",
            snapshot_at="{{ params.snapshot_at or '' }}" if "snapshot_at" in params else None,
        )
        last: Any = score
        if spec.delivery.get("table") or spec.delivery.get("webhook"):
            # Its own task: a delivery that fails is retried without scoring again.
            last = DeliverScoresOperator(task_id="deliver", spec=spec.to_dict(), scored=score.output)
        last >> _retention(spec, model_name=None)
    return dag


OUTCOMES_DOC = """
### {title}: realized outcomes and retraining on evidence

Daily (`{schedule}`), **measure_outcomes** reads the stored predictions of `{model}` (the scoring
runs of `{scoring_dag}`, the last {lookback} days) and the failure log ({source}; columns
`{entity}`, `{time}`), and scores every prediction whose horizon ({horizon:g} h) has passed against
what happened: per version and day, TP/FP/FN/TN, precision, recall, F1, alerts, failures caught and
missed, lead time. Each version's monitoring run in the experiment `{model}__outcomes` gets the days
as metrics (step = day) and `outcomes/performance.json` (served by
`GET /api/v1/ml/models/{model}/performance`). Failures in the future or of unknown assets are
reported, never fatal.

**request_retraining** — {floor}
"""


def build_outcomes_dag(spec: ModelSpec) -> DAG:
    """The spec's realized-outcomes DAG (only for a spec with an ``outcomes`` section)."""
    settings = spec.outcomes or {}
    floor = settings.get("floor")
    lookback = lookback_days(settings)
    doc = OUTCOMES_DOC.format(
        title=spec.name,
        schedule=settings["schedule"],
        model=spec.registered_model,
        scoring_dag=spec.scoring_dag_id,
        lookback=lookback,
        source=_source_text(dict(settings["source"])),
        entity=settings["entity_column"],
        time=settings["time_column"],
        horizon=settings["horizon_hours"],
        floor=(
            f"when the champion's realized {floor['metric']} over its newest {settings['window_days']} "
            f"matured days is below {floor['value']:g} (on at least {floor['min_failures']} failures), "
            f"updates the Asset `{retrain_asset(spec.name).uri}`, which triggers `{spec.training_dag_id}`, "
            "with the reason in the event and the model's history; at most once a day, never while a "
            "training run is queued or running."
            if floor
            else "no floor in the spec: never asks for a retraining."
        ),
    )
    with DAG(
        dag_id=spec.outcomes_dag_id,
        schedule=CronDataIntervalTimetable(settings["schedule"], timezone=spec.timezone),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(
            spec, execution_timeout=timedelta(minutes=30), notifier=ModelEventNotifier.for_spec(spec)
        ),
        tags=["mlflow", "outcomes", *spec.tags],
        doc_md=doc,
    ) as dag:
        measured = MlflowMeasureOutcomesOperator(
            task_id="measure_outcomes", spec=spec.to_dict(), model_name=spec.registered_model
        )
        MlflowRequestRetrainingOperator(
            task_id="request_retraining",
            spec=spec.to_dict(),
            model_name=spec.registered_model,
            measured=measured.output,
            outlets=[retrain_asset(spec.name)],
        )
    return dag


def _delivery_text(spec: ModelSpec) -> str:
    table, webhook = spec.delivery.get("table"), spec.delivery.get("webhook")
    targets = []
    if table:
        targets.append(f"upserts one row per asset and day into `{table['name']}` of `{table['conn_id']}`")
    if webhook:
        targets.append(f"posts the top {webhook['top_k']} alerts as work orders to `{webhook['conn_id']}`")
    if not targets:
        return ""
    return f"\n**deliver** (retried on its own, never rescoring) {' and '.join(targets)}.\n"


class InvalidModelSpecs(DAG):
    """Stands in for the specs that failed to load: Airflow validates every DAG a file defines and
    reports the failure as an import error of that file, while it keeps the file's other DAGs."""

    def validate(self) -> None:
        raise SpecError(self.doc_md or "invalid model spec")


def build_dags(folder: str | Path | None = None) -> dict[str, DAG]:
    """``{dag_id: DAG}`` for every valid spec of ``folder`` (default ``include/models``), plus one
    :class:`InvalidModelSpecs` naming every spec that failed, if any."""
    specs, errors = load_specs(folder)
    dags: dict[str, DAG] = {}
    for spec in specs:
        try:
            built = [build_training_dag(spec), build_scoring_dag(spec)]
            if spec.outcomes:
                built.append(build_outcomes_dag(spec))
            for dag in built:
                dags[dag.dag_id] = dag
        except Exception as err:  # a spec valid on paper that Airflow refuses (a bad cron, ...)
            errors.append(SpecError(f"{spec.path}: {type(err).__name__}: {err}"))
            for dag_id in (spec.training_dag_id, spec.scoring_dag_id, spec.outcomes_dag_id):
                dags.pop(dag_id, None)
    if errors:
        dags["invalid_model_specs"] = InvalidModelSpecs(
            dag_id="invalid_model_specs", schedule=None, doc_md="\n".join(str(err) for err in errors)
        )
    return dags
