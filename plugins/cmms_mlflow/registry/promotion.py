"""Promotions: a validated challenger (the training DAG), and a person's decision (API, rollback).

Every Production change takes one of these paths, all under :func:`registry.model_lock` (the
per-host file lock plus, when configured, the PostgreSQL advisory lock every host shares) and all
ending in :func:`registry.apply` (the only writer of stages and aliases):

* :func:`promote_validated` — read one snapshot; if the champion is not the one the validation
  compared against, score the challenger against the new champion again and decide afresh; then
  plan and apply the promotion or the rejection.
* :func:`change_stage` — a manual move of one version (``Production``, ``Staging``, ``Archived``)
  with who/when/why; refuses to leave the model without a champion. Promoting a former champion
  (:func:`previous_champion`, or any archived version that once served) is recorded as a
  ``rollback``; a human approval uses ``kind="approval"``. ``authority`` carries who asks, for the
  approval rules of the model's spec (:class:`cmms_pm.registry_plan.Authority`).
* :func:`repair` — only the repairs of broken invariants (an interrupted promotion).

Each records its history event (:mod:`cmms_mlflow.registry.history`); ``key`` makes a retried step
record it once (Airflow tasks pass ``<dag_id>/<run_id>/<task_id>``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow.exceptions import model_not_found, no_previous_champion, unknown_stage, version_not_found
from cmms_mlflow.registry import model_registry
from cmms_mlflow.tracking.model_evaluation import validate_candidate
from cmms_pm import registry_plan
from cmms_pm.registry_plan import ANY_CHAMPION, Authority, Outcome, Request

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_mlflow.records import DecisionRecord, PromotionOutcome, StageChange

log = logging.getLogger(__name__)

__all__ = ["ANY_CHAMPION", "MANUAL_STAGES", "change_stage", "promote_validated", "repair"]


def promote_validated(
    client: MlflowClient,
    *,
    name: str,
    record: DecisionRecord,
    lock_dir: Path,
    audit: dict[str, str],
    key: str = "",
    airflow: Mapping[str, str] | None = None,
    load_options: Mapping[str, Any] | None = None,
    authority: Authority | None = None,
) -> PromotionOutcome:
    """Promote ``record``'s challenger, or reject it if a re-validation says so; return the outcome.

    ``audit`` holds ``promoted_by``/``promoted_at`` (tags on the version and the history's who and
    when); ``load_options`` are passed to the re-validation's model loads; ``authority`` says
    whether the spec requires the version approved (the training DAG's approval step).

    A rerun of a step that promoted and was superseded since (its ``key``'s event is recorded, another
    version serves) changes nothing: the outcome says ``superseded`` and by which version.
    """
    from cmms_mlflow.registry import history

    version = str(record["challenger_version"])
    revalidated = False
    with model_registry.model_lock(lock_dir, name) as lock:
        history.settle_pending(client, name)
        snapshot = model_registry.read_snapshot(client, name, versions=[version])
        current, _ = registry_plan.serving_version(snapshot)
        done_before = history.recorded(client, name, key) if key else None
        superseded = (
            done_before is not None
            and bool(done_before.get("changed"))
            and done_before.get("to_stage") == "Production"
            and current != version
        )
        if current not in (record["champion_version"], version) and not superseded:
            log.warning(
                "Champion of %s changed since validation (%s -> %s); re-validating v%s",
                name, record["champion_version"], current, version,
            )  # fmt: skip
            record = validate_candidate(
                client,
                name=name,
                version=version,
                holdout_uri=record["holdout_uri"],
                holdout_sha256=record.get("holdout_sha256"),
                target=record["target"],
                policy=record["thresholds"],
                drift=record.get("drift"),
                **dict(load_options or {}),
            )
            revalidated = True
            snapshot = model_registry.read_snapshot(client, name, versions=[version])
        who: dict[str, Any] = {  # the history's who, when, why: Request's keyword arguments
            "actor": audit.get("promoted_by", ""),
            "at": audit.get("promoted_at", ""),
            "reason": record["reason"],
            "key": key or registry_plan.event_key("promote_validated", name, version, audit),
            "airflow": airflow,
        }
        if record["decision"] != "promote":
            request = Request(
                kind="rejection",
                version=version,
                stage="Archived",
                from_stages=("None", "Staging"),
                tags={"validation_status": "rejected", "rejection_reason": record["reason"]},
                **who,
            )
        else:
            request = Request(
                kind="promotion",
                version=version,
                stage="Production",
                expected_champion=record["champion_version"],
                tags={**audit, "promotion_reason": record["reason"]},
                authority=authority,
                recorded=done_before,
                **who,
            )
        outcome = model_registry.apply(client, registry_plan.plan(snapshot, request), lock=lock)
    result: PromotionOutcome = {
        **outcome,
        "decision": record["decision"],
        "reason": record["reason"],
        "revalidated": revalidated,
    }
    if outcome.get("superseded"):
        result["reason"] = (
            f"already promoted by this step (history event #{outcome.get('recorded_seq')}, "
            f"at {outcome.get('promoted_at')}); superseded since by v{outcome['superseded_by']}: "
            "nothing changed"
        )
        result["validation_reason"] = record["reason"]
        log.info("%s v%s: %s", name, version, result["reason"])
    return result


#: Stages a person may move a version to (``None`` is only the state of a fresh registration).
MANUAL_STAGES = ("Staging", "Production", "Archived")


def existing_version(client: MlflowClient, name: str, version: str) -> Any:
    """The model version, or ``ModelNotFoundError`` naming the model or the version."""
    from mlflow.exceptions import MlflowException

    if not model_registry.model_exists(client, name):
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
    key: str = "",
    airflow: Mapping[str, str] | None = None,
    lock_timeout: float | None = None,
    authority: Authority | None = None,
) -> StageChange:
    """Move ``version`` to ``stage`` for a person; tag who (``actor``), when (``at``) and why.

    ``Production`` is a compare-and-set against ``expected_champion`` (``ANY_CHAMPION`` = the
    champion found under the lock); promoting the champion again changes nothing. Moving the
    champion itself out of Production is refused: the model would have no champion. ``kind``:
    ``manual``, ``rollback`` or ``approval`` (the history's event type for a Production change); a
    ``manual`` promotion of a former champion is a ``rollback``. ``authority``: who asks, for the
    approval rules (refused: ``ApprovalAuthorityError`` or ``PromotionConflictError``).
    """
    version = str(version)
    if stage not in MANUAL_STAGES:
        raise unknown_stage(stage)
    with model_registry.model_lock(lock_dir, name, timeout=lock_timeout) as lock:
        snapshot = model_registry.read_snapshot(client, name, versions=[version])
        champion, _ = registry_plan.serving_version(snapshot)
        current = snapshot.versions.get(version)
        previous_stage = current.stage if current is not None else None
        if stage == "Production":
            if kind == "manual" and registry_plan.former_champion(snapshot, version):
                kind = "rollback"
            event_type = {"rollback": "rollback", "approval": "approval"}.get(kind, "promotion")
            tags = {
                "promoted_at": at,
                "promoted_by": actor,
                "promotion_reason": reason,
                "promotion_kind": kind,
            }
        else:
            event_type = "stage_change"
            tags = {
                "stage_changed_at": at,
                "stage_changed_by": actor,
                "stage_change_reason": reason,
                "stage_changed_from": previous_stage or "",
            }
        request = Request(
            kind=event_type,
            version=version,
            stage=stage,
            expected_champion=expected_champion,
            actor=actor,
            at=at,
            reason=reason,
            key=key or registry_plan.event_key("change_stage", name, version, stage, actor, at, reason),
            airflow=airflow,
            tags=tags,
            authority=authority if stage == "Production" else None,
        )
        outcome = model_registry.apply(client, registry_plan.plan(snapshot, request), lock=lock)
    log.info("%s v%s -> %s by %s (%s): %s", name, version, stage, actor, kind, reason)
    return {
        "name": name,
        "version": version,
        "stage": outcome["stage"],
        "previous_stage": previous_stage,
        "champion_before": champion,
        "actor": actor,
        "at": at,
        "reason": reason,
        "kind": kind,
        "replaced": outcome.get("replaced"),
        "unchanged": bool(outcome.get("unchanged")),
        "repairs": outcome.get("repairs", []),
        "override": outcome.get("override"),
    }


def repair(client: MlflowClient, *, name: str, lock_dir: Path, actor: str, at: str, key: str = "") -> Outcome:
    """Repair the invariants of ``name`` under the lock (nothing else); the outcome lists the fixes."""
    with model_registry.model_lock(lock_dir, name) as lock:
        snapshot = model_registry.read_snapshot(
            client, name
        )  # complete: an explicit repair audits every version
        request = Request(
            kind="repair", actor=actor, at=at, key=key or registry_plan.event_key("repair", name, actor, at)
        )
        return model_registry.apply(client, registry_plan.plan(snapshot, request), lock=lock)


def previous_champion(client: MlflowClient, name: str) -> str:
    """Version of the champion the current one replaced, or ``PromotionConflictError``."""
    if not model_registry.model_exists(client, name):
        raise model_not_found(name)
    previous = model_registry.get_version_by_alias(client, name, model_registry.PREVIOUS_CHAMPION)
    if previous is None:
        raise no_previous_champion(name)
    return str(previous.version)
