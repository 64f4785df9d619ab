"""Operator of the ``predictive_maintenance_scoring`` DAG: batch scoring with the champion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cmms_mlflow import training_run
from cmms_mlflow.links import RUN_URL_KEY, MlflowModelVersionLink, MlflowRunLink
from cmms_mlflow.operators.base import MlflowBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient


class MlflowBatchScoreOperator(MlflowBaseOperator):
    """Score the latest telemetry of the fleet with each affected model's champion (by alias).

    The models are those named by the triggering champion Asset events, else ``model_name``.
    Writes ``<data root>/<dag_id>/<run_id>/<model>/predictions.parquet`` and logs a summary run.
    """

    template_fields: Sequence[str] = (
        *MlflowBaseOperator.template_fields,
        "model_name",
        "n_units",
        "risk_threshold",
        "experiment_name",
    )
    operator_extra_links: ClassVar = (MlflowRunLink(), MlflowModelVersionLink())

    def __init__(
        self,
        *,
        model_name: str,
        n_units: Any,
        risk_threshold: Any,
        experiment_name: str = "predictive_maintenance_scoring",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.n_units = n_units
        self.risk_threshold = risk_threshold
        self.experiment_name = experiment_name

    def models_to_score(self, context: Context) -> list[str]:
        names: list[str] = []
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:
                name = (event.extra or {}).get("model_name")
                if name and name not in names:
                    names.append(name)
        return names or [self.model_name]

    def execute_mlflow(self, client: MlflowClient, context: Context) -> list[dict[str, Any]]:
        from cmms_mlflow.champion_scoring import load_champion, log_summary
        from cmms_pm.batch import batch_uri, data_root
        from cmms_pm.data import write_frame
        from cmms_pm.fleet import latest_telemetry, score_fleet, summarize

        dag_run = context["dag_run"]
        scored_at = dag_run.run_after.isoformat()
        threshold = float(self.risk_threshold)
        telemetry = latest_telemetry(scored_at, n_units=int(self.n_units))
        experiment_id = self.hook.get_or_create_experiment(client, self.experiment_name)
        run_dir = batch_uri(data_root(), dag_run.dag_id, dag_run.run_id)
        tags = training_run.airflow_tags(context)
        results = []
        for name in self.models_to_score(context):
            model, version = load_champion(client, name, self.hook.lock_dir)
            predictions = score_fleet(
                model, telemetry, model_name=name, model_version=version, scored_at=scored_at,
                threshold=threshold,
            )  # fmt: skip
            out = write_frame(predictions, f"{run_dir}/{name}/predictions.parquet")
            summary = summarize(predictions, threshold=threshold)
            run_id = log_summary(
                client,
                experiment_id=experiment_id,
                summary=summary,
                predictions_uri=out,
                tags=tags,
                earlier_runs=[
                    r for r in training_run.find_task_runs(client, experiment_id, tags)
                    if r.data.tags.get("model_name") == name
                ],
            )  # fmt: skip
            context["ti"].xcom_push(key=RUN_URL_KEY, value=self.hook.run_url(experiment_id, run_id))
            self.push_model_version_link(context, name, version)
            self.log.info(
                "%s v%s scored %d units: %d at risk (threshold %.2f) -> %s",
                name, version, summary["units"], summary["at_risk"], threshold, out,
            )  # fmt: skip
            results.append({**summary, "predictions_uri": out, "mlflow_run_id": run_id})
        return results
