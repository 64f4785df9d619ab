"""A version's model card among its training run's artifacts: written by training, completed by
validation (holdout metrics, slices) and by the run's report step (approval, promotion).

Each step reads the facts the previous one stored (``model_card.json``), adds its own, and writes
the facts, then the rendered card (``model_card.md``, :func:`cmms_pm.model_card.render`). A step
killed between the two writes leaves facts newer than the card; its retry writes both again.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_mlflow.records import DataReport
    from cmms_pm.batch import Manifest
    from cmms_pm.calibration import Decided
    from cmms_pm.contract import DataContract
    from cmms_pm.spec import FeatureSpec, ModelSpec

log = logging.getLogger(__name__)

CARD_ARTIFACT = "model_card.md"
FACTS_ARTIFACT = "model_card.json"
#: Manifest ``split`` keys shown on the card (a time split's boundaries; issue 18).
SPLIT_KEYS = (
    "strategy",
    "train_end",
    "validation_start",
    "holdout_start",
    "gap_hours",
    "label_horizon_hours",
    "time_column",
    "entity_column",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def log_card(
    client: MlflowClient, run_id: str, facts: Mapping[str, Any], *, step: str = "train_model"
) -> str:
    """Store ``facts`` and the card rendered from them in ``run_id``; returns the card's text."""
    from cmms_pm.model_card import render

    facts = {**facts, "updated_by": step, "updated_at": _now()}
    client.log_dict(run_id, facts, FACTS_ARTIFACT)
    card = render(facts)
    client.log_text(run_id, card, CARD_ARTIFACT)
    return card


def load_facts(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """The card facts a run stored, or None (a run from before model cards, or unreadable facts)."""
    text = _artifact_text(client, run_id, FACTS_ARTIFACT)
    if text is None:
        return None
    try:
        facts = json.loads(text)
    except ValueError:
        log.warning("Run %s has an unreadable %s; its card is not updated", run_id, FACTS_ARTIFACT)
        return None
    return facts if isinstance(facts, dict) else None


def read_card(client: MlflowClient, run_id: str) -> str | None:
    """The text of a run's ``model_card.md``, or None."""
    return _artifact_text(client, run_id, CARD_ARTIFACT)


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text(encoding="utf-8", errors="replace")


def update_card(client: MlflowClient, run_id: str, step: str, **sections: Any) -> str | None:
    """Replace ``sections`` of a run's card facts and rewrite the card (no card yet: nothing)."""
    facts = load_facts(client, run_id)
    if facts is None:
        return None
    facts.update(sections)
    return log_card(client, run_id, facts, step=step)


def training_card_facts(
    *,
    spec: ModelSpec,
    manifest: Manifest,
    features: FeatureSpec,
    estimator: str,
    decided: Decided,
    contract: DataContract,
    validation: Any,
    checks: DataReport | None,
    run_id: str,
) -> dict[str, Any]:
    """What training knows for the card: intended use, data, split, features, threshold,
    calibration and the limitations it can see (unseen categories, few failures, drift, notes)."""
    from cmms_pm.contract import check_batch
    from cmms_pm.estimators import estimator as estimator_kind
    from cmms_pm.model_card import limitations

    splits = manifest.get("splits") or {}
    rows = int(manifest.get("rows", sum(int(s.get("rows", 0)) for s in splits.values())))
    positives = sum(int(s.get("positives", 0)) for s in splits.values())
    split = {k: v for k, v in dict(manifest.get("split") or {}).items() if k in SPLIT_KEYS}
    unseen = check_batch(validation, contract, ignore=[spec.target, *spec.id_columns]).unseen_categories
    checks = checks or {}
    drift = {"status": checks.get("drift_status", "none"), "reason": checks.get("drift_reason", "")}
    choice = decided.threshold
    leakage = spec.raw.get("leakage") or {}
    return {
        "model_name": None,
        "version": None,
        "run_id": run_id,
        "spec": spec.name,
        "description": spec.description,
        "estimator": estimator,
        "estimator_title": estimator_kind(estimator).title,
        "target": {"column": spec.target, "positive": str(spec.positive_label)},
        "data": {
            "source": manifest.get("source", ""),
            "data_version": manifest.get("data_version", ""),
            "period_start": manifest.get("data_interval_start", ""),
            "period_end": manifest.get("data_interval_end", ""),
            "rows": rows,
            "positives": positives,
            "positive_rate": positives / rows if rows else None,
            "digest": manifest.get("digest", ""),
            "splits": {
                name: {"rows": int(s.get("rows", 0)), "positives": int(s.get("positives", 0))}
                for name, s in splits.items()
            },
        },
        "split": split or {"strategy": "random"},
        "features": {
            "categorical": list(features.categorical),
            "numeric": list(features.numeric),
            "integer": list(features.integer),
        },
        "excluded": list(spec.drop),
        "threshold": dict(choice),
        "calibration": dict(decided.calibration),
        "limitations": limitations(
            validation_positives=int(choice["positives"]),
            unseen={name: _values(found) for name, found in unseen.items()},
            drift=drift,
            notes=list(checks.get("notes") or []),
            excluded=list(spec.drop),
            accepted_leaks=list(leakage.get("accept") or []),
            threshold_note=None if choice["met"] else choice["note"],
        ),
        "holdout": None,
        "approval": None,
    }


def _values(found: Any) -> list[str]:
    """The unseen values of one column of a contract check (``{"rows": n, "values": [...]}``)."""
    return [str(value) for value in (found.get("values") or [])]
