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
from cmms_mlflow.model_loading import load_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_mlflow.records import DecisionRecord

log = logging.getLogger(__name__)

DECISION_ARTIFACT = "validation/decision.json"


def validate_candidate(
    client: MlflowClient,
    *,
    name: str,
    version: str,
    holdout_uri: str,
    target: str,
    policy: Mapping[str, Any],
    drift: Mapping[str, str] | None = None,
    spec_name: str | None = None,
    allow_unverified: bool = False,
    split: Mapping[str, Any] | None = None,
) -> DecisionRecord:
    """Compare challenger ``version`` (must be in Staging) with the champion; record the decision.

    Both are loaded by version number through :func:`cmms_mlflow.model_loading.load_version`
    (skops with the estimator's trusted types, provenance checked: the challenger must come from
    ``spec_name`` when given, the champion from any spec of this package, unless
    ``allow_unverified``) and scored on the same holdout. ``policy`` holds the metric,
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
    challenger_uri = f"models:/{name}/{version}"
    challenger = load_version(client, name, version, spec_name=spec_name, allow_unverified=allow_unverified)
    challenger_metrics = score_model(challenger, holdout, target=target)
    champion = registry.get_champion(client, name)
    champion_version = str(champion.version) if champion is not None else None
    if champion_version == version:
        champion_version = champion = None
    challenger_data_end = candidate.tags.get("data_interval_end") or None
    champion_data_end = (champion.tags.get("data_interval_end") or None) if champion is not None else None
    champion_metrics = (
        score_model(
            load_version(client, name, champion_version, allow_unverified=allow_unverified),
            holdout,
            target=target,
        )
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
    if split:
        # The periods the challenger was trained, validated and judged on (a time split).
        record["split"] = dict(split)
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
