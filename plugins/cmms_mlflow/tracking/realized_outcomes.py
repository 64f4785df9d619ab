"""Realized outcomes in MLflow: the stored predictions and the failure log in, one monitoring run per
model version out (metrics with step = day, ``outcomes/performance.json``), and retraining requests
in the model's history.

The arithmetic is :mod:`cmms_pm.outcomes`; this side knows where things live:

* predictions: the scoring DAG's summary runs (experiment ``scoring.experiment``, tags ``model_name``,
  ``predictions_uri``) name each ``predictions.parquet``; a file retention removed is skipped and
  counted (the days it gave stay in the stored JSON);
* the failure log: the spec's ``outcomes.source`` through the package's source readers;
* results: experiment ``<model>__outcomes``, one run per version (tags ``outcomes_model``,
  ``outcomes_version``, ``outcomes_first_day``: the day of step 0), which ``GET
  /api/v1/ml/models/{name}/performance`` serves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from cmms_pm.outcomes import OutcomeReport
    from cmms_pm.spec import ModelSpec

log = logging.getLogger(__name__)

EXPERIMENT_SUFFIX = "__outcomes"
MODEL_TAG, VERSION_TAG, FIRST_DAY_TAG = "outcomes_model", "outcomes_version", "outcomes_first_day"
PERFORMANCE_ARTIFACT = "outcomes/performance.json"
#: The keys of a day's outcome (cmms_pm.outcomes.DayOutcome) that are logged as metrics.
DayKey = Literal[
    "precision", "recall", "f1", "alerts", "failures_caught", "failures_missed", "lead_time_hours_median",
    "predictions",
]  # fmt: skip
#: Realized metrics logged per day (MLflow metric name -> key of a day's outcome).
DAY_METRICS: dict[str, DayKey] = {
    "realized_precision": "precision",
    "realized_recall": "recall",
    "realized_f1": "f1",
    "alerts_raised": "alerts",
    "failures_caught": "failures_caught",
    "failures_missed": "failures_missed",
    "lead_time_hours_median": "lead_time_hours_median",
    "matured_predictions": "predictions",
}
#: History event type of a retraining request (cmms_mlflow.registry.history).
RETRAIN_EVENT = "retrain_request"
#: Scoring runs read per measurement at most (newest first).
MAX_SCORING_RUNS = 1000


def experiment_name(model: str) -> str:
    return f"{model}{EXPERIMENT_SUFFIX}"


def lookback_days(outcomes: Mapping[str, Any]) -> int:
    """Days of predictions one measurement reads: the window plus the horizon plus a day. Older days
    matured in earlier measurements and stay in the stored JSON, so the work does not grow with age."""
    return int(outcomes["window_days"]) + int(-(-float(outcomes["horizon_hours"]) // 24)) + 1


def read_predictions(
    client: MlflowClient, spec: ModelSpec, name: str, *, since: datetime
) -> tuple[pd.DataFrame, list[str]]:
    """The stored predictions of ``name`` scored since ``since`` (UTC), and the files that are gone."""
    import pandas as pd

    from cmms_pm.data import read_split
    from cmms_pm.exceptions import DataSourceError, DataSourceUnavailableError

    experiment = client.get_experiment_by_name(spec.scoring_experiment)
    if experiment is None:
        return pd.DataFrame(), []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.model_name = '{_quoted(name)}' and attributes.status = 'FINISHED' "
            f"and attributes.start_time >= {int((since - timedelta(days=1)).timestamp() * 1000)}"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=MAX_SCORING_RUNS,
    )
    entity = spec.id_columns[0]
    columns = [entity, "scored_at", "at_risk", "model_version", "decision_threshold"]
    frames, missing = [], []
    for uri in dict.fromkeys(
        r.data.tags["predictions_uri"] for r in runs if r.data.tags.get("predictions_uri")
    ):
        try:
            frame = read_split(uri)
        except DataSourceUnavailableError:
            raise  # storage down: retried
        except (DataSourceError, FileNotFoundError):
            missing.append(uri)  # removed by retention: those days were measured before
            continue
        frames.append(frame[[c for c in columns if c in frame.columns]])
    if not frames:
        return pd.DataFrame(columns=columns), missing
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[pd.to_datetime(rows["scored_at"], utc=True) >= pd.Timestamp(since)]
    return rows.reset_index(drop=True), missing


def read_failures(spec: ModelSpec, *, start: str, end: str) -> pd.DataFrame:
    """The spec's failure log, normalized (:func:`cmms_pm.outcomes.failure_log`); a SQL table is
    read for ``[start, end)`` by its time column."""
    from cmms_mlflow.exceptions import bad_data_fails_the_task
    from cmms_mlflow.integrations import source_access
    from cmms_pm.outcomes import failure_log

    outcomes = spec.outcomes or {}
    source = dict(outcomes["source"])
    if source["kind"] == "sql":
        if "table" in source:
            source.setdefault("timestamp_column", outcomes["time_column"])
        raw = source_access.read_sql_source(source, interval_start=start, interval_end=end)
    else:
        raw = source_access.read_file_source(
            source["path"], aws_conn_id=source.get("aws_conn_id", "aws_default")
        )
    with bad_data_fails_the_task():
        return failure_log(
            raw,
            entity_column=outcomes["entity_column"],
            time_column=outcomes["time_column"],
            component_column=outcomes.get("component_column"),
        )


def store(
    client: MlflowClient,
    name: str,
    report: OutcomeReport,
    *,
    window_days: int,
    tags: Mapping[str, str],
    artifact_location: str | None = None,
) -> dict[str, Any]:
    """Per version of ``report``: its monitoring run (created once), the newly matured days' metrics
    (step = day index), and the merged JSON (earlier days kept). Returns ``{version: summary}``."""
    from mlflow.entities import Metric

    from cmms_pm.outcomes import day_index, realized_over_window

    experiment_id = _experiment_id(client, name, create=True, artifact_location=artifact_location)
    if experiment_id is None:  # create=True always gives one
        raise RuntimeError(f"no outcomes experiment for {name!r}")
    stored: dict[str, Any] = {}
    for version in report["versions"]:
        run = _version_run(client, experiment_id, name, version["version"])
        if run is None:
            run = client.create_run(
                experiment_id,
                run_name=f"outcomes-{name}-v{version['version']}",
                tags={
                    **tags,
                    MODEL_TAG: name,
                    VERSION_TAG: version["version"],
                    FIRST_DAY_TAG: version["first_day"],
                    "model_name": name,
                    "model_version": version["version"],
                },
            )
        run_id = run.info.run_id
        first_day = run.data.tags.get(FIRST_DAY_TAG) or version["first_day"]
        earlier = _performance(client, run_id) or {}
        known = {d["day"]: d for d in earlier.get("days", [])}
        # A day is logged once: its step is in the metric history (not the JSON, which a process
        # killed between the two writes leaves behind).
        logged = {m.step for m in client.get_metric_history(run_id, "matured_predictions")}
        fresh = [d for d in version["days"] if day_index(d["day"], first_day) not in logged]
        merged = sorted({**known, **{d["day"]: d for d in version["days"]}}.values(), key=lambda d: d["day"])
        now = int(datetime.now().timestamp() * 1000)
        metrics = [
            Metric(metric, float(value), now, day_index(day["day"], first_day))
            for day in fresh
            for metric, key in DAY_METRICS.items()
            if (value := day[key]) is not None
        ]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        summary = {
            "model": name,
            "version": version["version"],
            "threshold": version["threshold"],
            "first_day": first_day,
            "monitoring_run_id": run_id,
            "known_until": report["known_until"],
            "horizon_hours": report["horizon_hours"],
            "pending": version["pending"],
            "window_days": int(window_days),
            "window": realized_over_window({**version, "days": merged}, window_days=window_days),
            "recent": version["totals"],
            "days": merged,
        }
        client.log_text(run_id, json.dumps(summary, sort_keys=True, default=str), PERFORMANCE_ARTIFACT)
        stored[version["version"]] = summary
    return stored


def read_performance(client: MlflowClient, name: str, *, limit: int = 10) -> list[dict[str, Any]]:
    """The stored JSON of the newest ``limit`` versions of ``name`` that have one, newest first."""
    experiment_id = _experiment_id(client, name, create=False)
    if experiment_id is None:
        return []
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.{MODEL_TAG} = '{_quoted(name)}'", max_results=1000
    )
    newest = sorted(runs, key=lambda r: _number(r.data.tags.get(VERSION_TAG)), reverse=True)[:limit]
    found = [_performance(client, run.info.run_id) for run in newest]
    return [f for f in found if f]


def performance_of(client: MlflowClient, name: str, version: str) -> dict[str, Any] | None:
    """The stored JSON of one version (None: its outcomes were never measured)."""
    experiment_id = _experiment_id(client, name, create=False)
    run = _version_run(client, experiment_id, name, str(version)) if experiment_id is not None else None
    return _performance(client, run.info.run_id) if run is not None else None


def request_retraining(
    client: MlflowClient,
    lock_dir: Any,
    *,
    spec: ModelSpec,
    name: str,
    version: str,
    reason: str,
    day: str,
    at: str,
    airflow: Mapping[str, str],
) -> bool:
    """Record the retraining request in the model's history, once per spec and day (the event's key):
    True when this call recorded it, False when the day already has one."""
    from cmms_mlflow.registry import history, model_registry
    from cmms_pm.outcomes import retrain_key

    key = retrain_key(spec.name, day)
    with model_registry.model_lock(lock_dir, name):
        champion = model_registry.champion_version(client, name)
        recorded = history.append(
            client,
            name,
            {
                "key": key,
                "type": RETRAIN_EVENT,
                "model": name,
                "version": version,
                "from_stage": None,
                "to_stage": None,
                "champion_before": champion,
                "champion_after": champion,
                "actor": f"{spec.outcomes_dag_id} (realized outcomes)",
                "at": at,  # the measuring run's time: a retry writes the same event
                "reason": reason,
                "changed": True,
                "airflow": dict(airflow),
                "override": None,
            },
        )
    return recorded is not None


def retrain_requested(client: MlflowClient, spec: ModelSpec, name: str, day: str) -> bool:
    """Whether ``day`` already has a retraining request of ``spec`` in ``name``'s history."""
    from cmms_mlflow.registry import history
    from cmms_pm.outcomes import retrain_key

    return history.recorded(client, name, retrain_key(spec.name, day)) is not None


def _performance(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    try:
        text = client.download_artifacts(run_id, PERFORMANCE_ARTIFACT)
    except (MlflowException, OSError):
        return None
    with open(text, encoding="utf-8") as handle:
        return json.load(handle)


def _version_run(client: MlflowClient, experiment_id: str, name: str, version: str) -> Any:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{MODEL_TAG} = '{_quoted(name)}' and tags.{VERSION_TAG} = '{_quoted(version)}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _experiment_id(
    client: MlflowClient, name: str, *, create: bool, artifact_location: str | None = None
) -> str | None:
    experiment = client.get_experiment_by_name(experiment_name(name))
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(
            experiment_name(name), artifact_location=artifact_location, tags={"cmms.outcomes_of": name}
        )
    except MlflowException:  # created meanwhile by another writer
        found = client.get_experiment_by_name(experiment_name(name))
        if found is None:
            raise
        return found.experiment_id


def _quoted(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def _number(value: str | None) -> int:
    return int(value) if value and value.isdigit() else -1
