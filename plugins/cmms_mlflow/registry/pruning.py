"""Retention: what a model's DAGs remove as the model ages (the spec's ``retention`` section).

* **Run folders** (``keep_batches``): the training DAG's batches and the scoring DAG's outputs under
  the data root, beyond the newest ``keep_batches`` — never the running run's own, nor one a
  still-active run of the DAG uses (:mod:`cmms_pm.retention`).
* **Artifacts of archived versions** (``keep_archived_versions``): the logged model and the training
  run's artifacts (all but the decision record, :data:`KEPT_RUN_ARTIFACTS`) of archived versions
  beyond the newest ones; the version, its tags, metrics and history stay, tagged ``pruned``. Through
  the serialized registry path: snapshot → :func:`cmms_pm.registry_plan.plan_prune` → ``registry.apply``
  under the model lock, one ``prune`` history event per pruning run.

Only artifacts this package wrote are removed: a version is pruned only if its provenance holds
(``model_loading.provenance_problems``) and every location lies inside the deployment's local
artifact root (a local path) or the run's experiment's artifact location (``s3://``,
``mlflow-artifacts:`` — a tracking server confines those to its own root). Anything else is left
alone and reported: whoever can register a version must not be able to make a worker delete a path
of their choice.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from cmms_mlflow.exceptions import ModelNotFoundError
from cmms_mlflow.registry import model_registry
from cmms_pm import registry_plan
from cmms_pm import retention as folders

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_pm.spec import ModelSpec

log = logging.getLogger(__name__)

#: Top-level artifacts of a training run that outlive pruning: the decision record (why the version
#: was promoted or rejected) is history, and it is a few kB.
KEPT_RUN_ARTIFACTS = ("validation",)


def artifact_locations(
    client: MlflowClient, name: str, version: str, spec: ModelSpec, *, local_root: str | None
) -> tuple[tuple[str, ...], str | None]:
    """``(artifact URIs of the version to remove, None)``, or ``((), why they are left alone)``.

    ``local_root``: the local artifact root this deployment writes to (the hook's), the only place
    where a local artifact may be removed; remote locations must lie inside the run's experiment's.
    """
    from cmms_mlflow.tracking.model_loading import provenance_problems

    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id) if mv.run_id else None
    problems = provenance_problems(client, mv, run, spec.name)
    if problems or run is None:
        return (), "not this package's model: " + "; ".join(problems)
    root = client.get_experiment(run.info.experiment_id).artifact_location
    uris: list[str] = []
    source = mv.source or ""
    if source.startswith("models:/m-"):
        uris.append(client.get_logged_model(source.removeprefix("models:/")).artifact_location)
    run_root = run.info.artifact_uri.rstrip("/")
    for info in client.list_artifacts(run.info.run_id):
        if info.path.split("/")[0] not in KEPT_RUN_ARTIFACTS:
            uris.append(f"{run_root}/{info.path}")
    for uri in uris:
        allowed = local_root if _is_local(uri) else root
        if not allowed or not inside(uri, allowed):
            where = "the MLflow artifact root" if _is_local(uri) else "its experiment's artifact location"
            return (), f"{uri!r} is outside {where} {allowed!r}"
    return tuple(uris), None


def _is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


def inside(uri: str, root: str) -> bool:
    """Whether artifact ``uri`` lies strictly inside ``root`` (same scheme and place; local paths
    with symlinks resolved; no ``..``)."""
    uri_parts, root_parts = urlparse(uri), urlparse(root)
    if uri_parts.scheme in ("", "file") and root_parts.scheme in ("", "file"):
        path = os.path.realpath(unquote(uri_parts.path) if uri_parts.scheme else uri)
        base = os.path.realpath(unquote(root_parts.path) if root_parts.scheme else root)
        return path.startswith(base.rstrip(os.sep) + os.sep)
    if (uri_parts.scheme, uri_parts.netloc) != (root_parts.scheme, root_parts.netloc):
        return False
    if ".." in uri_parts.path.split("/"):
        return False
    path, base = posixpath.normpath(uri_parts.path), posixpath.normpath(root_parts.path or "/")
    return path.startswith(base.rstrip("/") + "/")


def prune_snapshot(client: MlflowClient, name: str) -> tuple[registry_plan.Snapshot, bool]:
    """``(every version not pruned, whether the model still needs its retention index)``.

    Once the model carries :data:`~cmms_pm.registry_plan.RETENTION_INDEX_TAG`, every version not pruned
    has a retention status, so one tag-filtered search reads them (plus the newest of each stage and
    the aliased ones, whatever their tags): its cost follows what is kept, not the model's age.
    Before that (a model registered by older code), every version is read and the plan indexes them.
    """
    model = model_registry.get_model(client, name)
    if (model.tags or {}).get(registry_plan.RETENTION_INDEX_TAG) != "1":
        return model_registry.read_snapshot(client, name), True
    quoted = name.replace("'", "\\'")
    entities = {
        str(mv.version): mv
        for mv in client.search_model_versions(
            f"name = '{quoted}' and tags.{registry_plan.RETENTION_TAG} != '{registry_plan.PRUNED}'"
        )
    }
    aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    others = model_registry.lean_versions(
        client, name, model, set(aliases.values()) - entities.keys(), window=0
    )
    for number, mv in others.items():
        entities.setdefault(number, mv)
    versions = {
        number: registry_plan.VersionState(number, mv.current_stage, dict(mv.tags or {}), mv.run_id or None)
        for number, mv in entities.items()
    }
    return registry_plan.Snapshot(name=name, versions=versions, aliases=aliases), False


def prune_versions(
    client: MlflowClient,
    name: str,
    *,
    spec: ModelSpec,
    keep: int | None,
    lock_dir: Path,
    local_root: str | None,
    actor: str,
    at: str,
    key: str,
    airflow: Mapping[str, str] | None = None,
) -> registry_plan.Outcome:
    """Remove the artifacts of ``name``'s archived versions beyond the newest ``keep`` (and finish any
    version an earlier run left mid-prune); return the plan's outcome. Reads once without the lock to
    see whether there is anything to do, then snapshot → plan → apply under it."""
    nothing: registry_plan.Outcome = {"name": name, "pruned": [], "protected": {}, "skipped": {}}
    try:
        if keep is None and not _left_mid_prune(client, name):
            return nothing  # no policy, nothing half-done: not even a read of the versions
        snapshot, build = prune_snapshot(client, name)
    except ModelNotFoundError:
        return {**nothing, "registered": False}
    candidates, protected = registry_plan.prune_candidates(snapshot, keep)
    if not candidates and not (build and keep is not None):
        return {**nothing, "protected": protected}
    with model_registry.model_lock(lock_dir, name) as lock:
        snapshot, build = prune_snapshot(client, name)
        candidates, _ = registry_plan.prune_candidates(snapshot, keep)
        artifacts: dict[str, tuple[str, ...]] = {}
        skipped: dict[str, str] = {}
        for version in candidates:
            uris, problem = artifact_locations(client, name, version, spec, local_root=local_root)
            if problem is not None:
                log.warning("Retention leaves the artifacts of %s v%s alone: %s", name, version, problem)
                skipped[version] = problem
            else:
                artifacts[version] = uris
        request = registry_plan.PruneRequest(
            keep_archived_versions=keep, artifacts=artifacts, skipped=skipped, actor=actor, at=at, key=key,
            airflow=airflow, build_index=build and keep is not None, resume=_interrupted(client, name),
        )  # fmt: skip
        return model_registry.apply(client, registry_plan.plan_prune(snapshot, request), lock=lock)


def _interrupted(client: MlflowClient, name: str) -> Mapping[str, Any] | None:
    """The newest ``prune`` event an earlier run recorded as its intent and died before completing."""
    from cmms_mlflow.registry import history

    earlier = [e for e in history.pending(client, name) if e.get("type") == registry_plan.PRUNE]
    return earlier[-1] if earlier else None


def _left_mid_prune(client: MlflowClient, name: str) -> bool:
    """Whether a version of ``name`` is tagged ``pruning`` (one tag-filtered search)."""
    model_registry.get_model(client, name)  # ModelNotFoundError for an unknown model
    quoted = name.replace("'", "\\'")
    return bool(
        client.search_model_versions(
            f"name = '{quoted}' and tags.{registry_plan.RETENTION_TAG} = '{registry_plan.PRUNING}'",
            max_results=1,
        )
    )


def prune_folders(
    root: str,
    dag_id: str,
    *,
    keep: int | None,
    own_run_id: str,
    own_uri: str,
    active_runs: Callable[[list[str] | None], int],
) -> dict[str, Any]:
    """Remove ``dag_id``'s run folders beyond the newest ``keep`` under ``root`` (and finish folders an
    earlier run left mid-removal). ``active_runs(run_ids)``: how many of those runs of the DAG
    (``None``: of all its runs, this one included) are queued or running."""
    found, unknown = folders.run_folders(root, dag_id)
    if unknown:
        log.warning("Retention leaves %d folder(s) of %s alone (no run record): %s", len(unknown), dag_id,
                    unknown[:5])  # fmt: skip
    candidates = [f.run_id for f in found if f.run_id and f.run_id != own_run_id]
    any_active = bool(candidates) and active_runs(candidates) > 0

    def is_active(run_id: str) -> bool:
        return any_active and active_runs([run_id]) > 0

    others_active = keep is not None and active_runs(None) > 1
    plan = folders.plan_folders(
        found, keep, own_run_id=own_run_id, own_uri=own_uri, is_active=is_active, others_active=others_active
    )
    for uri in plan.remove:
        log.info("Retention removes run folder %s", uri)
        folders.remove_folder(uri)
    return {
        "dag_id": dag_id,
        "keep": keep,
        "removed": list(plan.remove),
        "kept": list(plan.kept),
        "protected": dict(plan.protected),
        "unknown": unknown,
    }
