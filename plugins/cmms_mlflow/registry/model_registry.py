"""Model-registry state changes: the one place where stages and aliases are written.

Stages (None/Staging/Production/Archived, the workflow the seed README teaches) and MLflow 3
aliases are two views of one state, changed together here:

* ``Staging``    <-> alias ``challenger`` (the newest staged version)
* ``Production`` <-> alias ``champion`` (exactly one version); the champion it replaced keeps
  alias ``previous_champion`` and is ``Archived``
* ``Archived``   -> no ``challenger``/``champion`` alias

Every change is snapshot → plan → apply under :func:`model_lock`: :func:`read_snapshot` reads
the model once (a lean snapshot: the versions a change can touch, in a few bounded queries, so a
write costs the same at 10 versions and at 365), :func:`cmms_pm.registry_plan.plan` (pure)
decides the writes, the repairs of broken invariants and the history events, and :func:`apply`
writes them and appends the events
to the model's history (:mod:`cmms_mlflow.registry.history`). Every function is idempotent: calling it
twice for the same Airflow run leaves the registry (and the history) as one call would.
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow.exceptions import MlflowRegistryError, ModelNotFoundError, model_not_found, refused
from cmms_mlflow.hooks import locks
from cmms_mlflow.records import Stage
from cmms_pm import registry_plan
from cmms_pm.registry_plan import ANY_CHAMPION, Outcome, Plan, Request, Snapshot, VersionState, Write

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

    from cmms_mlflow.hooks.locks import HeldLock

log = logging.getLogger(__name__)

STAGES = tuple(Stage)
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
#: Registered-model tag given a new random value after every write made here (:func:`apply`,
#: :func:`set_tags`), in whichever process or host: a reader that keeps what it read (the model
#: API's champion, :mod:`cmms_mlflow.www.serving_cache`) compares it to know the registry moved.
GENERATION_TAG = "cmms.registry_generation"


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
    """The version serving production: the Production version (see
    :func:`cmms_pm.registry_plan.serving_version`), never an archived one an alias still names."""
    try:
        return serving(client, name)[0]
    except ModelNotFoundError:
        return None


def serving(client: MlflowClient, name: str) -> tuple[ModelVersion | None, tuple[str, ...]]:
    """``(the Production version or None, what is inconsistent)`` from one snapshot, without
    writing anything (the next write path repairs). ``ModelNotFoundError`` for an unknown model."""
    version, problems, _ = serving_of(client, name)
    return version, problems


def serving_of(
    client: MlflowClient, name: str, model: RegisteredModel | None = None
) -> tuple[ModelVersion | None, tuple[str, ...], dict[str, str]]:
    """:func:`serving` and the snapshot's aliases (alias -> version); ``model``: the registered
    model if the caller has just read it (saves reading it again)."""
    snapshot, entities = _read(client, name, model, versions=(), window=0)
    version, problems = registry_plan.serving_version(snapshot)
    return (entities[version] if version is not None else None), problems, dict(snapshot.aliases)


def get_model(client: MlflowClient, name: str) -> RegisteredModel:
    """The registered model (aliases, tags, last update); ``ModelNotFoundError`` if unknown."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if _is_not_found(err):
            raise model_not_found(name) from err
        raise


def bump_generation(client: MlflowClient, name: str) -> None:
    """Give :data:`GENERATION_TAG` a new value: whoever cached a read of ``name`` reads it again."""
    client.set_registered_model_tag(name, GENERATION_TAG, uuid.uuid4().hex)


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
        # Has its artifacts: the retention index (cmms_pm.registry_plan.KEPT) starts at registration.
        tags={**tags, registry_plan.RETENTION_TAG: registry_plan.KEPT},
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
    """Tag a version (validation, approval, ...); readers that cached the model see it at once."""
    try:
        _set_tags(client, name, version, tags)
    finally:
        if tags:
            bump_generation(client, name)


def _set_tags(client: MlflowClient, name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, "" if value is None else str(value))


#: How many of the newest versions a lean snapshot reads besides those it reads by name.
LEAN_WINDOW = 20


def read_snapshot(client: MlflowClient, name: str, *, versions: Iterable[str] | None = None) -> Snapshot:
    """One read of ``name``: its aliases and versions (stage, tags, run).

    ``versions=None``: every version (a complete snapshot; its cost grows with the model's age).
    Otherwise a lean snapshot (:class:`cmms_pm.registry_plan.Snapshot`): ``versions`` and every version
    a change can touch, read with a few bounded queries whatever the model's age.
    """
    return _read(client, name, versions=versions)[0]


def _read(
    client: MlflowClient,
    name: str,
    model: RegisteredModel | None = None,
    *,
    versions: Iterable[str] | None = None,
    window: int | None = None,
) -> tuple[Snapshot, dict[str, ModelVersion]]:
    if model is None:
        model = get_model(client, name)
    aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    if versions is None:
        entities = {str(v.version): v for v in client.search_model_versions(f"name = '{_quote(name)}'")}
    else:
        wanted = {*aliases.values(), *(str(v) for v in versions)}
        entities = lean_versions(client, name, model, wanted, window=window)
    states = {
        number: VersionState(number, mv.current_stage, dict(mv.tags or {}), mv.run_id or None)
        for number, mv in entities.items()
    }
    return Snapshot(name=name, versions=states, aliases=aliases, complete=versions is None), entities


def lean_versions(
    client: MlflowClient, name: str, model: RegisteredModel, wanted: set[str], *, window: int | None = None
) -> dict[str, ModelVersion]:
    """The versions a change can touch, in bounded reads: the newest ``window`` (default
    :data:`LEAN_WINDOW`; 0: none) and those waiting for approval (a tag-filtered search), the newest
    of each stage (the registered model's own ``latest_versions``, tags included: an old version
    moved to Production outside this package is seen), and ``wanted`` (aliased, requested)."""
    from mlflow.exceptions import MlflowException

    from cmms_pm.approval import PENDING

    window = LEAN_WINDOW if window is None else window
    quoted = _quote(name)
    found: dict[str, ModelVersion] = {}
    if window:
        recent = client.search_model_versions(
            f"name = '{quoted}'", max_results=window, order_by=["version_number DESC"]
        )
        pending = client.search_model_versions(f"name = '{quoted}' and tags.approval_status = '{PENDING}'")
        found.update((str(mv.version), mv) for mv in [*pending, *recent])
    for mv in model.latest_versions or []:
        found.setdefault(str(mv.version), mv)
    for number in sorted(wanted - found.keys(), key=lambda v: int(v) if v.isdigit() else -1):
        if not number.isdigit():
            continue
        try:
            found[number] = client.get_model_version(name, number)
        except MlflowException as err:
            if not _is_not_found(err) and getattr(err, "error_code", "") != "INVALID_PARAMETER_VALUE":
                raise
    return found


@contextmanager
def model_lock(lock_dir: Path, name: str, *, timeout: float | None = None) -> Iterator[HeldLock]:
    """Exclusive lock on one registered model, for every writer on every host.

    The per-host file lock in ``lock_dir`` and, when the Airflow connection
    ``cmms_registry_lock`` exists (:func:`cmms_mlflow.hooks.locks.registry_lock_target`), a PostgreSQL
    advisory lock that every worker and the api-server share. Both are taken within one
    ``timeout`` (default :data:`cmms_mlflow.hooks.locks.DEFAULT_LOCK_TIMEOUT`); past it,
    :class:`~cmms_mlflow.exceptions.LockTimeoutError`. Yields the held lock, whose ``verify()``
    :func:`apply` calls before each step.
    """
    timeout = locks.DEFAULT_LOCK_TIMEOUT if timeout is None else timeout
    started = time.monotonic()
    target = locks.registry_lock_target()
    with locks.file_lock(lock_dir, locks.lock_file_name(name, "registry"), timeout=timeout):
        if target is None:
            yield locks.HeldLock(f"file lock of {name!r} in {str(lock_dir)!r}")
            return
        left = max(timeout - (time.monotonic() - started), 0.0)
        with locks.advisory_lock(target, name, timeout=left) as held:
            yield held


def execute(client: MlflowClient, name: str, request: Request, *, lock: HeldLock | None) -> Outcome:
    """Snapshot → plan → apply for one request; the caller holds :func:`model_lock` (``lock``)."""
    versions = [request.version] if request.version is not None else []
    plan = registry_plan.plan(read_snapshot(client, name, versions=versions), request)
    return apply(client, plan, lock=lock)


def apply(client: MlflowClient, plan: Plan, *, lock: HeldLock | None) -> Outcome:
    """Write ``plan``: repairs (their history event first), then the request's writes and event.

    First the history events a writer that died left pending are settled (:func:`history.settle_pending`).
    A request's event is recorded as an intent before its writes and completed after them. A refused
    request raises its typed error after the repairs are written. Stages and aliases are written here
    and nowhere else.
    """
    from cmms_mlflow.registry import history

    if lock is not None:
        lock.verify()
    history.settle_pending(client, plan.name)
    if plan.repairs:
        log.warning("Repairing registered model %s: %s", plan.name, "; ".join(plan.repairs))
    written = False
    try:
        for step in plan.steps:
            if lock is not None:
                lock.verify()
            if step.event is not None and step.event_first:
                history.append(client, plan.name, step.event)
            if step.event is not None and step.intent:
                history.append(client, plan.name, step.event, status=registry_plan.PENDING_EVENT)
            for write in step.writes:
                if lock is not None and write.op == registry_plan.DELETE_ARTIFACTS:
                    lock.verify()  # a pruning step removes many locations: still ours before each
                log.info("%s: %s", plan.name, write.describe())
                written = True
                _write(client, plan.name, write)
            if step.event is not None and step.intent:
                # ``settled``: a step that finishes an earlier writer's intent says so (a resumed prune).
                history.complete(
                    client, plan.name, str(step.event["key"]), settled=str(step.event.get("settled") or "")
                )
            elif step.event is not None and not step.event_first:
                history.append(client, plan.name, step.event)
    except BaseException:
        if written:  # a partial write: caches must still read again (the next write repairs)
            try:
                bump_generation(client, plan.name)
            except Exception:
                log.exception("Could not mark %s as changed after a failed write", plan.name)
        raise
    if written:  # after the last write, so a reader that sees the new value sees every write
        bump_generation(client, plan.name)
    if plan.refusal is not None:
        raise refused(plan.refusal.code, dict(plan.refusal.details))
    return plan.outcome.copy()


def _write(client: MlflowClient, name: str, write: Write) -> None:
    from mlflow.exceptions import MlflowException

    if write.op == "stage":
        _set_stage(client, name, str(write.version), str(write.value), archive=write.archive_others)
    elif write.op == "alias":
        client.set_registered_model_alias(name, str(write.value), str(write.version))
    elif write.op == "unalias":
        try:
            client.delete_registered_model_alias(name, str(write.value))
        except MlflowException as err:
            if not _is_not_found(err):
                raise
    elif write.op == "tags":
        _set_tags(client, name, str(write.version), write.tags)
    elif write.op == registry_plan.DELETE_ARTIFACTS:
        delete_artifacts(str(write.value))
    elif write.op == registry_plan.MODEL_TAGS:
        for key, value in write.tags.items():
            client.set_registered_model_tag(name, key, str(value))
    else:
        raise ValueError(f"unknown write {write.op!r}")


def transition(
    client: MlflowClient,
    name: str,
    version: str,
    stage: str,
    *,
    expected_champion: str | None = None,
    check_champion: bool = False,
    from_stages: tuple[str, ...] | None = None,
    lock: HeldLock | None = None,
    actor: str = "",
    at: str = "",
    reason: str = "",
    key: str = "",
    airflow: Mapping[str, str] | None = None,
) -> Outcome:
    """Move ``version`` to ``stage`` and make the aliases agree; return what changed.

    For ``Production``, ``check_champion=True`` makes it a compare-and-set: the current champion
    must still be ``expected_champion`` (``None`` = no champion), else
    :class:`~cmms_mlflow.exceptions.PromotionConflictError` and nothing changes. The caller holds
    :func:`model_lock` (or, in tests, nobody else writes).
    """
    kind = {"Staging": "staging", "Archived": "stage_change", "None": "stage_change"}.get(stage, "promotion")
    request = Request(
        kind=kind,
        version=str(version),
        stage=stage,
        expected_champion=expected_champion if check_champion else ANY_CHAMPION,
        from_stages=from_stages,
        actor=actor,
        at=at,
        reason=reason,
        key=key or registry_plan.event_key("transition", name, version, stage, _now()),
        airflow=airflow,
    )
    return execute(client, name, request, lock=lock)


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    expected_champion: str | None,
    lock_dir: Path | None,
    audit: Mapping[str, Any],
    kind: str = "promotion",
    key: str = "",
    airflow: Mapping[str, str] | None = None,
) -> Outcome:
    """Guarded promotion: lock, compare-and-set against ``expected_champion``, tag, record.

    ``audit`` tags (who, when, why: ``promoted_by``, ``promoted_at``, ``promotion_reason``) are
    written by the call that actually promotes, and go into the history event.
    ``lock_dir=None`` means the caller already holds :func:`model_lock` for ``name``.
    """
    tags = {k: "" if v is None else str(v) for k, v in audit.items()}
    request = Request(
        kind=kind,
        version=str(version),
        stage="Production",
        expected_champion=expected_champion,
        actor=tags.get("promoted_by", ""),
        at=tags.get("promoted_at", ""),
        reason=tags.get("promotion_reason", ""),
        key=key or registry_plan.event_key("promote", name, version, tags),
        airflow=airflow,
        tags=tags,
    )
    with _maybe_locked(lock_dir, name) as lock:
        return execute(client, name, request, lock=lock)


def reject(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    reason: str,
    lock_dir: Path | None,
    actor: str = "",
    at: str = "",
    key: str = "",
    airflow: Mapping[str, str] | None = None,
) -> Outcome:
    """Archive a challenger that failed validation (if still ``None``/``Staging``), with the reason."""
    request = Request(
        kind="rejection",
        version=str(version),
        stage="Archived",
        from_stages=("None", "Staging"),
        actor=actor,
        at=at,
        reason=reason,
        key=key or registry_plan.event_key("reject", name, version, reason),
        airflow=airflow,
        tags={"validation_status": "rejected", "rejection_reason": reason},
    )
    with _maybe_locked(lock_dir, name) as lock:
        return execute(client, name, request, lock=lock)


def record_approval(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    outcome: Mapping[str, Any],
    lock_dir: Path | None,
    key: str,
    airflow: Mapping[str, str] | None = None,
) -> Outcome:
    """Record a person's answer on ``version`` (approved, rejected or timed out): its tags and one
    ``approval`` history event, under the model lock; no stage moves here (promote or reject does)."""
    from cmms_pm.approval import approval_tags

    request = Request(
        kind="approval",
        version=str(version),
        stage=None,
        actor=str(outcome.get("by") or "nobody (timed out)"),
        at=str(outcome.get("at") or _now()),
        reason=str(outcome["reason"]),
        key=key,
        airflow=airflow,
        tags=approval_tags(outcome),
    )
    with _maybe_locked(lock_dir, name) as lock:
        return execute(client, name, request, lock=lock)


@contextmanager
def _maybe_locked(lock_dir: Path | None, name: str) -> Iterator[HeldLock | None]:
    if lock_dir is None:  # the caller already holds model_lock(name)
        yield None
    else:
        with model_lock(lock_dir, name) as lock:
            yield lock


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


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


def delete_artifacts(uri: str) -> None:
    """Remove everything at artifact ``uri`` through MLflow's artifact repository of its scheme (a local
    folder, ``s3://``, ``mlflow-artifacts:`` of a tracking server, ...). Removing what is already gone
    is a no-op, so a rerun after a crash finishes the job (:func:`cmms_pm.registry_plan.plan_prune`)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        get_artifact_repository(uri).delete_artifacts()
    except MlflowException as err:
        if not _is_not_found(err):
            raise


#: Version tag (copied from the training run's tag) holding the alert threshold the version was
#: given on its validation split (``cmms_pm.thresholds``); MLmodel metadata carries it too.
DECISION_THRESHOLD_TAG = "decision_threshold"


def decision_threshold(model_version: ModelVersion) -> float:
    """The alert threshold of a version: its ``decision_threshold`` tag, 0.5 for a version from before
    thresholds were chosen; a tag that is not a number strictly inside (0, 1) is refused."""
    from cmms_mlflow.exceptions import invalid_decision_threshold
    from cmms_pm.thresholds import DEFAULT_THRESHOLD, valid_threshold

    raw = (model_version.tags or {}).get(DECISION_THRESHOLD_TAG)
    if raw is None or raw == "":
        return DEFAULT_THRESHOLD
    threshold = valid_threshold(raw)
    if threshold is None:
        raise invalid_decision_threshold(model_version.name, str(model_version.version), raw)
    return threshold
