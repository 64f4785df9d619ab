"""Batch scoring with the champion: load its Production version (trusted loading), score, log a summary."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from cmms_mlflow.exceptions import no_production_version
from cmms_mlflow.registry import model_registry

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SUMMARY_ARTIFACT = "scoring/summary.json"


def load_champion(
    client: MlflowClient, name: str, *, spec_name: str | None = None, allow_unverified: bool = False
) -> tuple[Any, Any]:
    """``(model, model version)`` of the version serving ``name`` (its Production version).

    Loaded by version number (:func:`cmms_mlflow.tracking.model_loading.load_version`: skops, trusted types,
    provenance of ``spec_name`` or any spec of this package), so the version written with each
    prediction is the one that made it, whatever a promotion does meanwhile: no lock needed.
    """
    from cmms_mlflow.tracking.model_loading import load_version

    champion = model_registry.get_champion(client, name)
    if champion is None:
        raise no_production_version(name)
    model = load_version(
        client, name, str(champion.version), spec_name=spec_name, allow_unverified=allow_unverified
    )
    return model, champion


def log_summary(
    client: MlflowClient,
    *,
    experiment_id: str,
    summary: dict[str, Any],
    predictions_uri: str,
    tags: dict[str, str],
    earlier_runs: list[Any],
) -> str:
    """One MLflow run per scoring task (reused by a retry): counts as metrics, summary as artifact."""
    from cmms_mlflow.tracking.training_run import resume_or_close

    earlier = resume_or_close(client, earlier_runs)
    if earlier is not None:
        return earlier.info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"score-{summary['model_name']}-v{summary['model_version']}",
        tags={
            **tags,
            "model_name": summary["model_name"],
            "model_version": summary["model_version"],
            "predictions_uri": predictions_uri,
        },
    )
    run_id = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        now = run.info.start_time
        client.log_batch(
            run_id,
            metrics=[
                Metric("units_scored", summary["units"], now, 0),
                Metric("units_at_risk", summary["at_risk"], now, 0),
                Metric("at_risk_rate", summary["at_risk_rate"], now, 0),
                Metric("rows_flagged", summary["flagged"], now, 0),
                *(Metric(f"rows_{reason}", n, now, 0) for reason, n in summary["flagged_by_reason"].items()),
            ],
            params=[Param("risk_threshold", str(summary["threshold"]))],
        )
        client.log_text(run_id, json.dumps(summary, indent=2, sort_keys=True), SUMMARY_ARTIFACT)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id
