"""Retention of run folders under the data root: which a model keeps, which go, and how they go.

Pure domain code (no Airflow, no MLflow), like :mod:`cmms_pm.batch`. Every run of a training DAG
writes its batch to ``<data root>/<dag_id>/<run folder>/`` (:func:`cmms_pm.batch.batch_uri`), every
run of a scoring DAG its predictions beside it; a spec's ``retention.keep_batches`` keeps the
newest of them. The archived versions' artifacts are the registry's part
(:func:`cmms_pm.registry_plan.plan_prune`).

A folder says which run wrote it in its **run record** (:data:`RUN_RECORD`, written before
anything else, so even a run that failed halfway is recognised); folders written before records
existed are recognised by their batch manifest. Folders are ordered by the data interval they
hold (then the run's ``run_after``), never by their names. A folder with neither file is not
ours to judge: it is reported and left in place.

Removal is crash-safe: :data:`REMOVING` is written first (the intent), then the data files go,
then the records, then the folder. A folder found with the marker is finished by the next run,
whatever the policy says by then.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

log = logging.getLogger(__name__)

#: The run record of a folder: which DAG run wrote it, for which data interval.
RUN_RECORD = "run.json"
#: A training batch's manifest (:func:`cmms_pm.data.write_batch`): read for folders without a record.
MANIFEST = "manifest.json"
#: Written before a folder's files are removed; a folder holding it is removed by the next run.
REMOVING = ".removing"
_RECORDS = (RUN_RECORD, MANIFEST, REMOVING)
BATCH, SCORING = "batch", "scoring"


class RunRecord(TypedDict):
    """The run record (:data:`RUN_RECORD`) of a run folder."""

    kind: str  # BATCH | SCORING
    dag_id: str
    run_id: str
    run_after: str
    data_interval_start: str
    data_interval_end: str


@dataclass(frozen=True)
class RunFolder:
    """One run folder as its record (or, before records, its manifest) describes it."""

    uri: str
    run_id: str | None
    data_interval_start: str
    data_interval_end: str
    run_after: str = ""
    removing: bool = False
    described_by: str = RUN_RECORD

    def order(self) -> tuple[datetime, datetime, datetime, str]:
        """Sort key, oldest first: the data interval's end, its start, the run's ``run_after``."""
        return (
            _instant(self.data_interval_end),
            _instant(self.data_interval_start),
            _instant(self.run_after or self.data_interval_end),
            self.uri,
        )


@dataclass(frozen=True)
class FolderPlan:
    """What :func:`plan_folders` decided, each list newest first."""

    keep: int
    remove: tuple[str, ...]
    kept: tuple[str, ...]
    protected: Mapping[str, str] = field(default_factory=dict)  # uri -> why it stays


def run_record(
    *, kind: str, dag_id: str, run_id: str, run_after: str, data_interval_start: str, data_interval_end: str
) -> RunRecord:
    if kind not in (BATCH, SCORING):
        raise ValueError(f"run record kind {kind!r} is not {BATCH!r} or {SCORING!r}")
    return {
        "kind": kind,
        "dag_id": dag_id,
        "run_id": run_id,
        "run_after": run_after,
        "data_interval_start": data_interval_start,
        "data_interval_end": data_interval_end,
    }


def write_run_record(folder_uri: str, record: RunRecord) -> str:
    """Write ``record`` as ``<folder_uri>/run.json`` (creating the folder); return its URI."""
    from cmms_pm.data import _filesystem, _join

    filesystem, path = _filesystem(folder_uri)
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(_join(path, RUN_RECORD)) as stream:
        stream.write(json.dumps(record, sort_keys=True, indent=2).encode())
    return _join(folder_uri, RUN_RECORD)


def dag_folder(root: str, dag_id: str) -> str:
    """Where the run folders of ``dag_id`` live: ``<root>/<dag_id>``."""
    return f"{root.rstrip('/')}/{dag_id}"


def run_folders(root: str, dag_id: str) -> tuple[list[RunFolder], list[str]]:
    """The run folders of ``dag_id`` under ``root``, oldest first, and the URIs of the folders
    nothing describes (no record, no manifest: left alone)."""
    from pyarrow import fs

    from cmms_pm.data import _filesystem, _join

    base_uri = dag_folder(root, dag_id)
    filesystem, base = _filesystem(base_uri)
    entries = filesystem.get_file_info(fs.FileSelector(base, recursive=False, allow_not_found=True))
    folders, unknown = [], []
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.type != fs.FileType.Directory:
            continue
        uri = _join(base_uri, entry.base_name)
        local = _local_path(uri)
        if local is not None and os.path.islink(local):  # not a folder a run wrote: never followed
            unknown.append(uri)
            continue
        folder = _describe(filesystem, entry.path, uri)
        if folder is None:
            unknown.append(uri)
        else:
            folders.append(folder)
    return sorted(folders, key=RunFolder.order), unknown


def _describe(filesystem: Any, path: str, uri: str) -> RunFolder | None:
    from pyarrow import fs

    names = {
        info.base_name
        for info in filesystem.get_file_info([f"{path}/{name}" for name in _RECORDS])
        if info.type == fs.FileType.File
    }
    removing = REMOVING in names
    for name in (RUN_RECORD, MANIFEST):
        if name not in names:
            continue
        try:
            with filesystem.open_input_stream(f"{path}/{name}") as stream:
                data = json.loads(stream.read(1_000_000))
            start, end = str(data["data_interval_start"]), str(data["data_interval_end"])
            _instant(start), _instant(end)
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("Run folder %s: %s is unreadable (%s); trying the next description", uri, name, err)
            continue
        run_id = data.get("run_id")
        return RunFolder(
            uri=uri,
            run_id=str(run_id) if run_id else None,
            data_interval_start=start,
            data_interval_end=end,
            run_after=str(data.get("run_after") or ""),
            removing=removing,
            described_by=name,
        )
    if removing:  # its records are gone already: only the marker and the folder are left
        return RunFolder(uri=uri, run_id=None, data_interval_start="", data_interval_end="", removing=True,
                         described_by=REMOVING)  # fmt: skip
    return None


def plan_folders(
    folders: Iterable[RunFolder],
    keep: int | None,
    *,
    own_run_id: str,
    own_uri: str,
    is_active: Callable[[str], bool],
    others_active: bool,
) -> FolderPlan:
    """Which folders go: those beyond the newest ``keep`` (``None``: none), except the running run's
    own (``own_run_id``/``own_uri``), those of runs still active (``is_active(run_id)``) and, while
    other runs of the DAG are active (``others_active``), folders that do not say which run they are
    of. Folders found mid-removal always go (they are half-deleted already)."""
    if keep is not None and keep < 1:
        raise ValueError(f"keep_batches must be at least 1 (the running batch is needed), got {keep!r}")
    newest_first = sorted(folders, key=RunFolder.order, reverse=True)
    finishing = [f for f in newest_first if f.removing]
    whole = [f for f in newest_first if not f.removing]
    beyond = whole[keep:] if keep is not None else []
    kept = [f.uri for f in whole if f not in beyond]
    remove = [f.uri for f in finishing]
    protected: dict[str, str] = {}
    for folder in beyond:
        why = _protection(folder, own_run_id, own_uri, is_active, others_active)
        if why:
            protected[folder.uri] = why
            kept.append(folder.uri)
        else:
            remove.append(folder.uri)
    return FolderPlan(keep=keep or 0, remove=tuple(remove), kept=tuple(kept), protected=protected)


def _protection(
    folder: RunFolder, own_run_id: str, own_uri: str, is_active: Callable[[str], bool], others_active: bool
) -> str:
    if folder.run_id == own_run_id or folder.uri.rstrip("/") == own_uri.rstrip("/"):
        return "the running run's own folder"
    if folder.run_id is None:
        return (
            "other runs are active and its manifest does not say which run it is of" if others_active else ""
        )
    if is_active(folder.run_id):
        return f"its run {folder.run_id!r} is still active"
    return ""


def remove_folder(uri: str) -> None:
    """Remove a run folder: the intent marker first, then the data, then its records, then the folder.
    A crash at any point leaves the marker or a record, so :func:`run_folders` still finds it. Local
    symlinks are removed as links, never followed."""
    from pyarrow import fs

    from cmms_pm.data import _filesystem

    local = _local_path(uri)
    if local is not None:
        _remove_local(local)
        return
    filesystem, path = _filesystem(uri)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return
    with filesystem.open_output_stream(f"{path}/{REMOVING}") as stream:
        stream.write(_MARKER)
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True))
    files = [info.path for info in infos if info.type == fs.FileType.File]
    for file in _data_first(path, files):
        _delete(filesystem.delete_file, file)
    filesystem.delete_dir(path)


_MARKER = b"removed by retention (cmms_pm.retention)\n"


def _remove_local(path: str) -> None:
    import shutil

    if os.path.islink(path):  # a planted link: remove the link, not what it points at
        _delete(os.unlink, path)
        return
    if not os.path.isdir(path):
        return
    with open(os.path.join(path, REMOVING), "wb") as marker:
        marker.write(_MARKER)
    files = []
    for folder, dirs, names in os.walk(path, followlinks=False):
        files += [os.path.join(folder, name) for name in names]
        files += [os.path.join(folder, d) for d in dirs if os.path.islink(os.path.join(folder, d))]
    for file in _data_first(path, files):
        _delete(os.unlink, file)
    shutil.rmtree(path)  # empty folders by now; rmtree never follows links


def _data_first(path: str, files: list[str]) -> list[str]:
    """Data files, then the records, the intent marker last."""
    records = {
        f"{path.rstrip('/')}/{name}": rank for rank, name in enumerate((MANIFEST, RUN_RECORD, REMOVING), 1)
    }
    return sorted(files, key=lambda file: (records.get(file, 0), file))


def _delete(delete: Callable[[str], Any], path: str) -> None:
    """One deletion (a seam the crash tests cut between two of them)."""
    delete(path)


def _local_path(uri: str) -> str | None:
    """The absolute path of a local ``uri`` (links not resolved), or None for a remote one."""
    from urllib.parse import unquote, urlparse

    if "://" not in uri:
        return os.path.abspath(os.path.expanduser(uri))
    parts = urlparse(uri)
    return os.path.abspath(unquote(parts.path)) if parts.scheme == "file" else None


def settings(retention: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``(keep_batches, keep_archived_versions)`` of a spec's ``retention`` section."""
    return retention.get("keep_batches"), retention.get("keep_archived_versions")


def _instant(value: str) -> datetime:
    """An ISO 8601 instant (naive means UTC); ``""`` sorts first."""
    if not value:
        return datetime.min.replace(tzinfo=UTC)
    instant = datetime.fromisoformat(value)
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
