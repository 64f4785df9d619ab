"""Score the staged challenger and the current champion on the same holdout and decide."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow import registry
from cmms_mlflow.exceptions import version_not_in_stage

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_mlflow.records import DecisionRecord

log = logging.getLogger(__name__)

DECISION_ARTIFACT = "validation/decision.json"


def load_registered(uri: str) -> Any:
    """Load a model through the registry (``models:/...`` URI)."""
    import mlflow.sklearn

    from cmms_mlflow.training_run import quiet_airflow_shims

    with quiet_airflow_shims():
        return mlflow.sklearn.load_model(uri)


def staged_model_uri(client: MlflowClient, name: str, version: str) -> str:
    """``models:/<name>/Staging`` when it resolves to ``version``; else the exact version's URI.

    The stage URI resolves to the newest staged version, which is another run's candidate when
    two runs overlap (backfills); validating that one instead would be wrong.
    """
    staged = registry.versions_in_stage(client, name, "Staging")
    if staged and str(staged[0].version) == version:
        return f"models:/{name}/Staging"
    log.warning(
        "%s: newer version %s is also in Staging; loading v%s by number",
        name,
        staged[0].version if staged else None,
        version,
    )
    return f"models:/{name}/{version}"


def validate_candidate(
    client: MlflowClient,
    *,
    name: str,
    version: str,
    holdout_uri: str,
    target: str,
    policy: Mapping[str, Any],
    drift: Mapping[str, str] | None = None,
) -> DecisionRecord:
    """Compare challenger ``version`` (must be in Staging) with the champion; record the decision.

    The staged model is loaded from the registry (see :func:`staged_model_uri`), the champion
    by its version number, and both are scored on the same holdout. ``policy`` holds the metric,
    its threshold, the minimum improvement and the two switches (``RunConfig.thresholds``);
    ``drift`` the status (``ok``/``warn``/``block``/``none``) and reason from validate_data.
    """
    from cmms_pm.data import read_split
    from cmms_pm.policy import decide_promotion
    from cmms_pm.training import score_model

    version = str(version)
    drift = dict(drift or {"status": "none", "reason": ""})
    candidate = client.get_model_version(name, version)
    if candidate.current_stage in ("Production", "Archived") and candidate.tags.get("validation_status"):
        # Re-run of a decided version (cleared DAG run): the recorded decision stands.
        record = recorded_decision(client, candidate.run_id)
        if record is not None and str(record.get("challenger_version")) == version:
            log.info(
                "%s v%s already decided (%s); reusing the decision record",
                name,
                version,
                candidate.current_stage,
            )
            return record
    if candidate.current_stage != "Staging":
        raise version_not_in_stage(name, version, "Staging", candidate.current_stage)

    metric = policy["metric"]
    holdout = read_split(holdout_uri)
    challenger_uri = staged_model_uri(client, name, version)
    challenger_metrics = score_model(load_registered(challenger_uri), holdout, target=target)
    champion = registry.get_champion(client, name)
    champion_version = str(champion.version) if champion is not None else None
    if champion_version == version:
        champion_version = champion = None
    challenger_data_end = candidate.tags.get("data_interval_end") or None
    champion_data_end = (champion.tags.get("data_interval_end") or None) if champion is not None else None
    champion_metrics = (
        score_model(load_registered(f"models:/{name}/{champion_version}"), holdout, target=target)
        if champion_version
        else None
    )
    decision = decide_promotion(
        challenger_score=challenger_metrics[metric],
        champion_score=champion_metrics[metric] if champion_metrics else None,
        threshold=float(policy["threshold"]),
        min_improvement=float(policy["min_improvement"]),
        allow_promotion=bool(policy["allow_promotion"]),
        metric=metric,
        challenger_data_end=challenger_data_end,
        champion_data_end=champion_data_end,
        allow_older_data=bool(policy.get("allow_older_data", False)),
        drift_status=drift.get("status", "none"),
        drift_reason=drift.get("reason", ""),
    )
    record: DecisionRecord = {
        "model_name": name,
        "challenger_version": version,
        "challenger_run_id": candidate.run_id,
        "challenger_uri": challenger_uri,
        "challenger_metrics": challenger_metrics,
        "champion_version": champion_version,
        "champion_metrics": champion_metrics,
        "challenger_data_end": challenger_data_end,
        "champion_data_end": champion_data_end,
        "holdout_uri": holdout_uri,
        "holdout_rows": len(holdout),
        "target": target,
        "thresholds": dict(policy),
        "drift": drift,
        "decision": "promote" if decision.promote else "reject",
        "reason": decision.reason,
    }
    client.log_dict(candidate.run_id, record, DECISION_ARTIFACT)
    tags = {f"validation_{k}": f"{v:.6f}" for k, v in challenger_metrics.items()}
    tags.update(
        {
            "champion_f1": f"{champion_metrics['f1']:.6f}" if champion_metrics else "",
            "champion_version": champion_version or "",
            "promotion_metric": metric,
            "metric_threshold": str(policy["threshold"]),
            "min_improvement": str(policy["min_improvement"]),
            "validation_status": "passed" if decision.promote else "rejected",
            "decision_reason": decision.reason,
        }
    )
    registry.set_tags(client, name, version, tags)
    log.info("Validation of %s v%s: %s (%s)", name, version, record["decision"], decision.reason)
    return record


def recorded_decision(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """The decision record an earlier validation wrote to ``run_id``, if any."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, DECISION_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())
