"""Score the staged challenger and the current champion on the same holdout and decide."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow.exceptions import version_not_in_stage
from cmms_mlflow.registry import model_registry
from cmms_mlflow.tracking.model_loading import load_version

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
    holdout_sha256: str | None = None,
    drift: Mapping[str, str] | None = None,
    spec_name: str | None = None,
    allow_unverified: bool = False,
    split: Mapping[str, Any] | None = None,
) -> DecisionRecord:
    """Compare challenger ``version`` (must be in Staging) with the champion; record the decision.

    Both are loaded by version number through :func:`cmms_mlflow.tracking.model_loading.load_version`
    (skops with the estimator's trusted types, provenance checked: the challenger must come from
    ``spec_name`` when given, the champion from any spec of this package, unless
    ``allow_unverified``) and scored on the same holdout. ``policy`` holds the metric,
    its threshold, the minimum improvement and the two switches (``RunConfig.thresholds``);
    ``drift`` the status (``ok``/``warn``/``block``/``none``) and reason from validate_data;
    ``holdout_sha256`` the holdout's digest in the batch manifest (checked before it is scored).
    """
    from cmms_pm.data import read_split
    from cmms_pm.policy import decide_promotion

    version = str(version)
    drift = dict(drift or {"status": "none", "reason": ""})
    candidate = client.get_model_version(name, version)
    if candidate.current_stage in ("Production", "Archived") and candidate.tags.get("validation_status"):
        # Re-run of a decided version (cleared DAG run): the recorded decision stands.
        earlier = recorded_decision(client, candidate.run_id)
        if earlier is not None and str(earlier.get("challenger_version")) == version:
            log.info(
                "%s v%s already decided (%s); reusing the decision record",
                name,
                version,
                candidate.current_stage,
            )
            return earlier
    if candidate.current_stage != "Staging":
        raise version_not_in_stage(name, version, "Staging", candidate.current_stage)

    metric = policy["metric"]
    costs = decision_costs(policy)
    holdout = read_split(holdout_uri, sha256=holdout_sha256)
    challenger_uri = f"models:/{name}/{version}"
    challenger = load_version(client, name, version, spec_name=spec_name, allow_unverified=allow_unverified)
    # Each model at its own decision threshold (its version tag; 0.5 for versions from before).
    challenger_metrics, challenger_proba = score_at_threshold(
        challenger,
        holdout,
        target=target,
        threshold=model_registry.decision_threshold(candidate),
        costs=costs,
    )
    champion = model_registry.get_champion(client, name)
    champion_version = str(champion.version) if champion is not None else None
    if champion_version == version:
        champion_version = champion = None
    challenger_data_end = candidate.tags.get("data_interval_end") or None
    champion_data_end = (champion.tags.get("data_interval_end") or None) if champion is not None else None
    champion_metrics = (
        score_at_threshold(
            load_version(client, name, champion_version, allow_unverified=allow_unverified),
            holdout,
            target=target,
            threshold=model_registry.decision_threshold(champion),
            costs=costs,
        )[0]
        if champion_version and champion is not None
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
        "holdout_sha256": holdout_sha256,
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
    card_with_holdout(client, record, holdout, challenger_proba)
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
    model_registry.set_tags(client, name, version, tags)
    log.info("Validation of %s v%s: %s (%s)", name, version, record["decision"], decision.reason)
    return record


def recorded_decision(client: MlflowClient, run_id: str) -> DecisionRecord | None:
    """The decision record an earlier validation wrote to ``run_id``, if any."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, DECISION_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())


def decision_costs(policy: Mapping[str, Any]) -> dict[str, float]:
    """The costs the expected cost is measured in: the policy's (the spec's ``decision.costs``, kept
    in the decision record) or the spec defaults."""
    from cmms_pm.thresholds import DecisionPolicy

    given = policy.get("costs") or {}
    return {**DecisionPolicy().costs, **{k: float(v) for k, v in given.items()}}


def score_at_threshold(
    model: Any, frame: Any, *, target: str, threshold: float, costs: Mapping[str, float]
) -> tuple[dict[str, float], Any]:
    """Metrics of ``model`` on a labelled frame at its ``threshold`` (plus ``threshold``,
    ``expected_cost`` a row and ``brier``), and its risks."""
    import numpy as np

    from cmms_pm.thresholds import metrics_at
    from cmms_pm.training import classification_metrics, positive_proba

    proba = positive_proba(model, frame)
    y = frame[target].to_numpy()
    metrics = classification_metrics(y, proba, threshold)
    metrics["threshold"] = float(threshold)
    metrics["expected_cost"] = metrics_at(y, proba, threshold, costs)["expected_cost"]
    metrics["brier"] = float(np.mean((np.asarray(proba, dtype=float) - np.asarray(y, dtype=float)) ** 2))
    return metrics, proba


def card_with_holdout(client: MlflowClient, record: Mapping[str, Any], holdout: Any, proba: Any) -> None:
    """Add the holdout section (metrics with intervals, slices, the gate) to the challenger's card."""
    from cmms_mlflow.tracking.card_logging import load_facts, log_card
    from cmms_pm.model_card import holdout_facts

    run_id = record["challenger_run_id"]
    facts = load_facts(client, run_id) if run_id else None
    if facts is None:
        return
    challenger = record["challenger_metrics"]
    section = holdout_facts(
        holdout,
        holdout[record["target"]].to_numpy(),
        proba,
        challenger["threshold"],
        decision_costs(record.get("thresholds") or {}),
        slice_columns=(facts.get("features") or {}).get("categorical") or [],
    )
    champion = record.get("champion_metrics")
    if champion:
        section["champion"] = {"version": record.get("champion_version"), **champion}
    section["decision"] = record["decision"]
    section["reason"] = record["reason"]
    facts.update(model_name=record["model_name"], version=record["challenger_version"], holdout=section)
    log_card(client, run_id, facts, step="validate_model")
