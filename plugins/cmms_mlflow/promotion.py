"""Promotions: a validated challenger (the training DAG), and a person's decision (API, rollback).

Every promotion takes one of these paths, all under the model lock and all ending in
``registry.promote``/``registry.transition`` (the only writers of stages and aliases):

* :func:`promote_validated` — re-read the champion; if it is not the one the validation compared
  against, score the challenger against the new champion again and decide afresh.
* :func:`change_stage` — a manual move of one version (``Production``, ``Staging``, ``Archived``)
  with who/when/why tags; refuses to leave the model without a champion. A rollback is a
  change to :func:`previous_champion` with ``kind="rollback"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow import registry
from cmms_mlflow.exceptions import (
    champion_cannot_leave_production,
    champion_changed,
    model_not_found,
    no_previous_champion,
    unknown_stage,
    version_not_found,
)
from cmms_mlflow.model_evaluation import validate_candidate

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
            record = validate_candidate(
                client,
                name=name,
                version=version,
                holdout_uri=record["holdout_uri"],
                target=record["target"],
                policy=record["thresholds"],
                drift=record.get("drift"),
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


#: Stages a person may move a version to (``None`` is only the state of a fresh registration).
MANUAL_STAGES = ("Staging", "Production", "Archived")
#: ``expected_champion`` value meaning "whatever the champion is when the lock is taken".
ANY_CHAMPION = "*"


def existing_version(client: MlflowClient, name: str, version: str) -> Any:
    """The model version, or ``ModelNotFoundError`` naming the model or the version."""
    from mlflow.exceptions import MlflowException

    if not registry.model_exists(client, name):
        raise model_not_found(name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as err:
        if getattr(err, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise version_not_found(name, str(version)) from err
        raise


def change_stage(
    client: MlflowClient,
    *,
    name: str,
    version: str,
    stage: str,
    lock_dir: Path,
    actor: str,
    reason: str,
    at: str,
    expected_champion: str | None = ANY_CHAMPION,
    kind: str = "manual",
) -> dict[str, Any]:
    """Move ``version`` to ``stage`` for a person; tag who (``actor``), when (``at``) and why.

    ``Production`` goes through :func:`registry.promote` (a compare-and-set against
    ``expected_champion``; ``ANY_CHAMPION`` = the champion found under the lock). Moving the
    champion itself out of Production is refused: the model would have no champion.
    """
    version = str(version)
    if stage not in MANUAL_STAGES:
        raise unknown_stage(stage)
    with registry.model_lock(lock_dir, name):
        current = existing_version(client, name, version)
        champion = registry.get_champion(client, name)
        champion_version = str(champion.version) if champion is not None else None
        outcome: dict[str, Any] = {
            "name": name,
            "version": version,
            "stage": stage,
            "previous_stage": current.current_stage,
            "champion_before": champion_version,
            "actor": actor,
            "at": at,
            "reason": reason,
            "kind": kind,
        }
        if stage == "Production":
            # A rerun of a promotion that already happened finds its version champion: no conflict.
            if expected_champion not in (ANY_CHAMPION, champion_version) and champion_version != version:
                raise champion_changed(name, expected_champion, champion_version)
            changes = registry.promote(
                client,
                name,
                version,
                expected_champion=champion_version,
                lock_dir=None,
                audit={
                    "promoted_at": at,
                    "promoted_by": actor,
                    "promotion_reason": reason,
                    "promotion_kind": kind,
                },
            )
        else:
            if champion_version == version:
                raise champion_cannot_leave_production(name, version, stage)
            changes = registry.transition(client, name, version, stage)
            if current.current_stage != stage:
                registry.set_tags(
                    client,
                    name,
                    version,
                    {
                        "stage_changed_at": at,
                        "stage_changed_by": actor,
                        "stage_change_reason": reason,
                        "stage_changed_from": current.current_stage,
                    },
                )
            registry.check_invariants(client, name)
        outcome["replaced"] = changes.get("replaced")
        outcome["unchanged"] = bool(changes.get("unchanged")) or current.current_stage == stage
    log.info("%s v%s -> %s by %s (%s): %s", name, version, stage, actor, kind, reason)
    return outcome


def previous_champion(client: MlflowClient, name: str) -> str:
    """Version of the champion the current one replaced, or ``PromotionConflictError``."""
    if not registry.model_exists(client, name):
        raise model_not_found(name)
    previous = registry.get_version_by_alias(client, name, registry.PREVIOUS_CHAMPION)
    if previous is None:
        raise no_previous_champion(name)
    return str(previous.version)
