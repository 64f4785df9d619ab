"""Model-registry state changes: the one place where stages and aliases are written.

Stages (None/Staging/Production/Archived, the workflow the seed README teaches) and MLflow 3
aliases are two views of one state, changed together here:

* ``Staging``    <-> alias ``challenger``
* ``Production`` <-> alias ``champion`` (exactly one version); the champion it replaced keeps
  alias ``previous_champion`` and is ``Archived``
* ``Archived``   -> no ``challenger``/``champion`` alias

Every function takes an ``MlflowClient`` and is idempotent: calling it twice for the same
Airflow run leaves the registry as one call would.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow import locks
from cmms_mlflow.exceptions import (
    MlflowRegistryError,
    champion_changed,
    unknown_stage,
)
from cmms_mlflow.records import Stage

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

STAGES = tuple(Stage)
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"


def _set_stage(client: MlflowClient, name: str, version: str, stage: str, *, archive: bool = False) -> None:
    """``transition_model_version_stage`` without MLflow 3's "stages will be removed" warning,
    which we silence on purpose: we keep stages and aliases in step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]tage.*", category=FutureWarning)
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=archive)


def _is_not_found(err: Exception) -> bool:
    return getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def get_version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if _is_not_found(err) or getattr(err, "error_code", "") == "INVALID_PARAMETER_VALUE":
            return None
        raise


def get_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version serving production: alias ``champion``, else the newest Production version."""
    champion = get_version_by_alias(client, name, CHAMPION)
    if champion is not None:
        return champion
    production = versions_in_stage(client, name, "Production")
    return production[0] if production else None


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The champion's version number as a string, or None when the model has no champion."""
    champion = get_champion(client, name)
    return str(champion.version) if champion is not None else None


def versions_in_stage(client: MlflowClient, name: str, stage: str) -> list[ModelVersion]:
    """Versions of ``name`` in ``stage``, newest first."""
    if not model_exists(client, name):
        return []
    versions = client.search_model_versions(f"name = '{_quote(name)}'")
    matching = [v for v in versions if v.current_stage == stage]
    return sorted(matching, key=lambda v: int(v.version), reverse=True)


def model_exists(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if _is_not_found(err):
            return False
        raise
    return True


def aliases_of(client: MlflowClient, name: str) -> dict[str, str]:
    """Alias -> version. Read from the registered model (``search_model_versions`` omits aliases)."""
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def register_version(
    client: MlflowClient,
    *,
    name: str,
    source: str,
    run_id: str,
    description: str,
    tags: Mapping[str, str],
    run_link: str | None = None,
) -> ModelVersion:
    """Register ``source`` as a version of ``name``, or return the version this run already made.

    ``source`` is the logged model's URI (``models:/m-<id>``), as ``mlflow.register_model`` uses.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name, description="Predictive maintenance: equipment failure within the horizon"
        )
    except MlflowException as err:
        if getattr(err, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{run_id}'")
    if existing:
        version = min(existing, key=lambda v: int(v.version))
        log.info("Run %s already registered %s version %s; reusing it", run_id, name, version.version)
        return version
    model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    created = client.create_model_version(
        name,
        source,
        run_id=run_id,
        tags=dict(tags),
        run_link=run_link or None,
        description=description,
        model_id=model_id,
    )
    return _deduplicate(client, name, run_id) or created


def _deduplicate(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """Keep the oldest version registered from ``run_id``; delete the others.

    Two executions of the same task, or an HTTP retry of a create whose reply was lost, can
    each create a version. Every creator converges on the same survivor.
    """
    from mlflow.exceptions import MlflowException

    versions = sorted(
        client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{run_id}'"),
        key=lambda v: int(v.version),
    )
    for extra in versions[1:]:
        log.warning("Deleting duplicate %s version %s of run %s", name, extra.version, run_id)
        try:
            client.delete_model_version(name, str(extra.version))
        except MlflowException as err:
            if not _is_not_found(err):  # another creator deleted it first
                raise
    return versions[0] if versions else None


def set_tags(client: MlflowClient, name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, "" if value is None else str(value))


def transition(
    client: MlflowClient,
    name: str,
    version: str,
    stage: str,
    *,
    expected_champion: str | None = None,
    check_champion: bool = False,
    from_stages: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Move ``version`` to ``stage`` and make the aliases agree; return what changed.

    For ``Production``, ``check_champion=True`` makes it a compare-and-set: the current champion
    must still be ``expected_champion`` (``None`` = no champion), else
    :class:`~cmms_mlflow.exceptions.PromotionConflictError` and nothing changes.
    """
    if stage not in STAGES:
        raise unknown_stage(stage)
    version = str(version)
    current = client.get_model_version(name, version)
    changes: dict[str, Any] = {"name": name, "version": version, "stage": stage, "replaced": None}
    if from_stages is not None and current.current_stage not in (*from_stages, stage):
        # A rerun of an earlier step must not pull a decided version back (e.g. to Staging).
        log.info(
            "%s version %s is already %s; not moving it to %s", name, version, current.current_stage, stage
        )
        return {**changes, "stage": current.current_stage, "unchanged": True}

    if stage == "Production":
        champion = get_champion(client, name)
        champion_version = str(champion.version) if champion is not None else None
        if champion_version == version and current.current_stage == "Production":
            log.info("%s version %s is already the champion", name, version)
            changes["replaced"] = _previous_champion_version(client, name)
            changes["unchanged"] = True
            return changes
        if check_champion and champion_version != (str(expected_champion) if expected_champion else None):
            raise champion_changed(name, expected_champion, champion_version)
        _set_stage(client, name, version, "Production", archive=True)
        client.set_registered_model_alias(name, CHAMPION, version)
        if champion_version and champion_version != version:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, champion_version)
            _archive_if_needed(client, name, champion_version)
            set_tags(client, name, champion_version, {"replaced_by_version": version})
            changes["replaced"] = champion_version
        _drop_alias_if_points_to(client, name, CHALLENGER, version)
        return changes

    if current.current_stage != stage:
        _set_stage(client, name, version, stage)
    if stage == "Staging":
        if aliases_of(client, name).get(CHALLENGER) != version:
            client.set_registered_model_alias(name, CHALLENGER, version)
    else:
        # None/Archived: this version serves in no role any more.
        _drop_alias_if_points_to(client, name, CHALLENGER, version)
        _drop_alias_if_points_to(client, name, CHAMPION, version)
    return changes


@contextmanager
def model_lock(lock_dir: Path, name: str, *, timeout: float | None = None) -> Iterator[None]:
    """Exclusive lock on one registered model for every process and thread on this machine.

    Across machines (Celery/Kubernetes workers), promotions are serialized by the Airflow pool
    ``mlflow_promotion`` (one slot); this lock also covers code that runs outside Airflow.
    Waits at most ``timeout`` seconds (default :data:`cmms_mlflow.locks.DEFAULT_LOCK_TIMEOUT`).
    """
    with locks.file_lock(lock_dir, locks.lock_file_name(name, "registry"), timeout=timeout):
        yield


@contextmanager
def _maybe_locked(lock_dir: Path | None, name: str) -> Iterator[None]:
    if lock_dir is None:  # the caller already holds model_lock(name)
        yield
    else:
        with model_lock(lock_dir, name):
            yield


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    expected_champion: str | None,
    lock_dir: Path | None,
    audit: Mapping[str, Any],
) -> dict[str, Any]:
    """Guarded promotion: lock, compare-and-set against ``expected_champion``, tag, verify.

    ``audit`` tags (who, when, why) are written once, by the call that actually promotes.
    ``lock_dir=None`` means the caller already holds :func:`model_lock` for ``name``.
    """
    version = str(version)
    with _maybe_locked(lock_dir, name):
        changes = transition(
            client, name, version, "Production", expected_champion=expected_champion, check_champion=True
        )
        if not changes.get("unchanged"):
            set_tags(client, name, version, {**audit, "replaced_version": changes["replaced"] or ""})
        check_invariants(client, name)
    return changes


def reject(
    client: MlflowClient, name: str, version: str, *, reason: str, lock_dir: Path | None
) -> dict[str, Any]:
    """Archive a challenger that failed validation, keeping the reason as tags."""
    version = str(version)
    with _maybe_locked(lock_dir, name):
        changes = transition(client, name, version, "Archived", from_stages=("None", "Staging"))
        if changes["stage"] == "Archived":
            set_tags(client, name, version, {"validation_status": "rejected", "rejection_reason": reason})
        check_invariants(client, name)
    return changes


def _archive_if_needed(client: MlflowClient, name: str, version: str) -> None:
    mv = client.get_model_version(name, version)
    if mv.current_stage != "Archived":
        _set_stage(client, name, version, "Archived")


def _previous_champion_version(client: MlflowClient, name: str) -> str | None:
    previous = get_version_by_alias(client, name, PREVIOUS_CHAMPION)
    return str(previous.version) if previous is not None else None


def _drop_alias_if_points_to(client: MlflowClient, name: str, alias: str, version: str) -> None:
    if aliases_of(client, name).get(alias) == str(version):
        client.delete_registered_model_alias(name, alias)


def check_invariants(client: MlflowClient, name: str) -> None:
    """Raise if stages and aliases disagree: one Production version, ``champion`` on it."""
    production = versions_in_stage(client, name, "Production")
    aliases = aliases_of(client, name)
    champion = aliases.get(CHAMPION)
    if len(production) > 1:
        raise MlflowRegistryError(
            f"model {name!r} has {len(production)} Production versions: "
            f"{[str(v.version) for v in production]!r}"
        )
    production_version = str(production[0].version) if production else None
    if champion != production_version:
        raise MlflowRegistryError(
            f"model {name!r}: alias 'champion' -> {champion!r} but Production -> {production_version!r}"
        )


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
