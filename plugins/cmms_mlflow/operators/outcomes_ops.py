"""Operators of a model's outcomes DAG: realized performance measured, retraining asked on evidence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypedDict, cast

from cmms_mlflow.integrations.links import RUN_URL_KEY, MlflowRunLink
from cmms_mlflow.operators.base import MlflowBaseOperator, SpecOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from cmms_pm.outcomes import VersionOutcome


class RetrainVerdict(TypedDict):
    reason: str
    version: str
    day: str


class Measured(TypedDict):
    """What ``measure_outcomes`` returns (small, JSON, through XCom)."""

    model_name: str
    champion: str | None
    known_until: str | None
    versions: dict[str, Any]  # version -> {"window": counts, "pending": n, "days": n, "monitoring_run_id"}
    future: int
    unknown_assets: int
    unreadable: int
    missing_prediction_files: int
    retrain: RetrainVerdict | None


class MlflowMeasureOutcomesOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Score the stored predictions of ``model_name`` against the spec's failure log (``outcomes``).

    Reads the predictions scored in the last window + horizon days (older days are kept from earlier
    runs), measures them (:func:`cmms_pm.outcomes.measure`; odd failures reported, not fatal), logs
    each version's newly matured days to its monitoring run (step = day index) with the merged
    ``outcomes/performance.json``, sends the champion's window figures as metrics, and returns the
    verdict of the spec's floor for the champion (``retrain``: None, or the reason).
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "model_name")
    operator_extra_links = (MlflowRunLink(),)

    def __init__(self, *, spec: Mapping[str, Any], model_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.model_name = model_name

    def execute_mlflow(self, client: MlflowClient, context: Context) -> Measured:
        import pandas as pd

        from cmms_mlflow.exceptions import bad_data_fails_the_task
        from cmms_mlflow.integrations import metrics
        from cmms_mlflow.registry import model_registry
        from cmms_mlflow.tracking import realized_outcomes, training_run
        from cmms_pm.outcomes import measure, retrain_reason

        spec, name = self.model_spec, str(self.model_name)
        settings = spec.outcomes
        if not settings:
            raise ValueError(f"spec {spec.name!r} has no outcomes section")
        now = pd.Timestamp(context["dag_run"].run_after).tz_convert(UTC)
        since = now - pd.Timedelta(days=realized_outcomes.lookback_days(settings))
        predictions, missing = realized_outcomes.read_predictions(
            client, spec, name, since=since.to_pydatetime()
        )
        if missing:
            self.log.warning(
                "%d prediction file(s) of %s are gone (retention); their days stay as measured before: %s",
                len(missing), name, missing[:5],
            )  # fmt: skip
        failures = realized_outcomes.read_failures(spec, start=since.isoformat(), end=now.isoformat())
        with bad_data_fails_the_task():
            report = measure(
                predictions, failures, entity_column=spec.id_columns[0],
                horizon_hours=settings["horizon_hours"], now=now,
            )  # fmt: skip
        for odd in ("future", "unknown_assets"):
            if report[odd]["count"]:
                self.log.warning(
                    "failure log: %d failure(s) %s were left out, e.g. %s",
                    report[odd]["count"],
                    "stamped after this run" if odd == "future" else "of assets no prediction names",
                    report[odd]["listed"][:3],
                )
        stored = realized_outcomes.store(
            client,
            name,
            report,
            window_days=settings["window_days"],
            tags=training_run.airflow_tags(context),
            artifact_location=self.hook.settings.artifact_location,
        )
        champion = model_registry.champion_version(client, name)
        retrain = None
        floor = settings.get("floor")
        if champion is not None and champion in stored:
            metrics.outcomes(name, stored[champion]["window"])
            context["ti"].xcom_push(
                key=RUN_URL_KEY,
                value=self.hook.run_url(
                    client.get_run(stored[champion]["monitoring_run_id"]).info.experiment_id,
                    stored[champion]["monitoring_run_id"],
                ),
            )
            if floor:
                merged = cast(
                    "VersionOutcome", {**_version(report, champion), "days": stored[champion]["days"]}
                )
                reason = retrain_reason(
                    {**report, "versions": [merged]},
                    version=champion, window_days=settings["window_days"], metric=floor["metric"],
                    floor=floor["value"], min_failures=floor["min_failures"],
                )  # fmt: skip
                if reason:
                    retrain = RetrainVerdict(reason=reason, version=champion, day=now.strftime("%Y-%m-%d"))
                    self.log.warning("Retraining on evidence: %s", reason)
        self.log.info(
            "%s outcomes known until %s: %s", name, report["known_until"],
            {v: s["window"] for v, s in stored.items()},
        )  # fmt: skip
        return Measured(
            model_name=name,
            champion=champion,
            known_until=report["known_until"],
            versions={
                v: {
                    "window": s["window"],
                    "pending": s["pending"],
                    "days": len(s["days"]),
                    "monitoring_run_id": s["monitoring_run_id"],
                }
                for v, s in stored.items()
            },
            future=report["future"]["count"],
            unknown_assets=report["unknown_assets"]["count"],
            unreadable=report["unreadable"],
            missing_prediction_files=len(missing),
            retrain=retrain,
        )


def _version(report: Any, version: str) -> dict[str, Any]:
    return next(v for v in report["versions"] if v["version"] == version)


class MlflowRequestRetrainingOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Ask the training DAG for a new model when ``measured`` says so: its outlet (the spec's retrain
    Asset, which schedules the training DAG) gets an event whose ``extra`` has the reason, and the
    model's history records the request.

    At most one request per spec and day (the history event's key), and none while a training run
    is queued or running: the task is skipped then, so no Asset event is emitted. A retry of a task
    that recorded its request but died before the event emits it (the recorded run is its own).
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "model_name", "measured")

    def __init__(self, *, spec: Mapping[str, Any], model_name: str, measured: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.model_name = model_name
        self.measured = measured

    def execute_mlflow(self, client: MlflowClient, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from cmms_mlflow.integrations import metrics
        from cmms_mlflow.integrations.assets import retrain_asset
        from cmms_mlflow.registry import history
        from cmms_mlflow.tracking import realized_outcomes
        from cmms_pm.outcomes import retrain_key

        spec, name = self.model_spec, str(self.model_name)
        verdict = (self.measured or {}).get("retrain")
        if not verdict:
            raise AirflowSkipException("realized performance is not below the floor: nothing to request")
        ref = self.airflow_ref(context)
        earlier = history.recorded(client, name, retrain_key(spec.name, verdict["day"]))
        if earlier is not None and (earlier.get("airflow") or {}).get("run_id") != ref["run_id"]:
            raise AirflowSkipException(
                f"a retraining of {spec.name!r} was already requested on {verdict['day']} "
                f"(history #{earlier['seq']}): at most one a day"
            )
        busy = context["ti"].get_dr_count(dag_id=spec.training_dag_id, states=["queued", "running"])
        if earlier is None and busy:
            raise AirflowSkipException(
                f"{busy} run(s) of {spec.training_dag_id} queued or running: no second training is asked"
            )
        realized_outcomes.request_retraining(
            client, self.hook.lock_dir, spec=spec, name=name, version=verdict["version"],
            reason=verdict["reason"], day=verdict["day"], airflow=ref, at=_run_time(context),
        )  # fmt: skip
        extra = {"model_name": name, "spec": spec.name, **verdict}
        context["outlet_events"][retrain_asset(spec.name)].extra.update(extra)
        metrics.retrain_requested(name)
        self.notify(context, name, verdict)
        self.log.warning("Asked %s for a new model: %s", spec.training_dag_id, verdict["reason"])
        return extra

    def notify(self, context: Context, name: str, verdict: RetrainVerdict) -> None:
        """Tell the spec's channels (``retrain_requested``); a retried task resends the same event id."""
        from cmms_mlflow.integrations.notifiers import (
            NOTIFICATIONS_KEY,
            ModelEventNotifier,
            airflow_run,
            now_iso,
        )
        from cmms_pm.notifications import RETRAIN_REQUESTED, model_event

        notifier = ModelEventNotifier.for_spec(self.model_spec)
        if notifier is None:
            return
        event = model_event(
            RETRAIN_REQUESTED, model=name, version=verdict["version"], spec=self.model_spec.name,
            reason=verdict["reason"], airflow=airflow_run(context), occurred_at=now_iso(),
            links={"mlflow": self.hook.model_version_url(name, verdict["version"])},
        )  # fmt: skip
        context["ti"].xcom_push(key=NOTIFICATIONS_KEY, value=notifier.send(event, context))


def _run_time(context: Context) -> str:
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None)
    return run_after.isoformat() if run_after is not None else ""
