"""Promotion of a validated challenger, re-validated if the champion changed meanwhile.

The one path every promotion takes (the DAG's promote task, and any other caller): under the
model lock, re-read the champion; if it is not the one the validation compared against, score
the challenger against the new champion again and promote or reject on that fresh decision.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow import registry
from cmms_mlflow.validation import validate_candidate

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def promote_validated(
    client: MlflowClient,
    *,
    name: str,
    record: dict[str, Any],
    lock_dir: Path,
    audit: dict[str, str],
) -> dict[str, Any]:
    """Promote ``record``'s challenger, or reject it if a re-validation says so; return the outcome."""
    version = str(record["challenger_version"])
    revalidated = False
    with registry.model_lock(lock_dir, name):
        champion = registry.get_champion(client, name)
        current = str(champion.version) if champion is not None else None
        if current not in (record["champion_version"], version):
            log.warning(
                "Champion of %s changed since validation (%s -> %s); re-validating v%s",
                name, record["champion_version"], current, version,
            )  # fmt: skip
            thresholds = record["thresholds"]
            record = validate_candidate(
                client,
                name=name,
                version=version,
                holdout_uri=record["holdout_uri"],
                f1_threshold=thresholds["f1_threshold"],
                min_improvement=thresholds["min_improvement"],
                allow_promotion=thresholds["allow_promotion"],
                allow_older_data=thresholds.get("allow_older_data", False),
            )
            revalidated = True
        if record["decision"] != "promote":
            changes = registry.reject(client, name, version, reason=record["reason"], lock_dir=None)
        else:
            changes = registry.promote(
                client,
                name,
                version,
                expected_champion=record["champion_version"],
                lock_dir=None,
                audit={**audit, "promotion_reason": record["reason"]},
            )
    return {**changes, "decision": record["decision"], "reason": record["reason"], "revalidated": revalidated}
