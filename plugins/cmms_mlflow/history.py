"""The append-only history of a registered model, kept in MLflow itself.

Each event is one MLflow run in the experiment ``<model>__history``, created once and never
updated: tags ``history_seq`` (zero-padded, so it sorts), ``history_key`` (the event's
idempotency key), ``history_type``, ``history_version``, ``history_actor`` … and ``history_event``
(the whole :class:`~cmms_mlflow.records.HistoryEvent` as compact JSON). The MLflow UI shows the
experiment as a table of who did what, when and why; :func:`read` returns the newest first with
one search (``order_by`` on the sequence tag, ``max_results`` = the page size; :func:`read_page`
also returns MLflow's token of the next page).

Events are appended by :func:`cmms_mlflow.registry.apply` under the model lock, so sequence
numbers never collide, and a retried step whose event is already recorded (same key) appends
nothing. Deleting an event run (an MLflow admin can) leaves a gap in ``seq``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_mlflow.records import HistoryEvent

log = logging.getLogger(__name__)

EXPERIMENT_SUFFIX = "__history"
SEQ_TAG, KEY_TAG, EVENT_TAG = "history_seq", "history_key", "history_event"
_SEQ_WIDTH = 10
#: MLflow keeps run tag values up to 8,000 characters; long free text is cut to fit.
_MAX_TEXT = 2000
MAX_LIMIT = 1000


def experiment_name(model: str) -> str:
    return f"{model}{EXPERIMENT_SUFFIX}"


def append(client: MlflowClient, model: str, event: Mapping[str, Any]) -> HistoryEvent | None:
    """Record ``event`` (a plan's event, without ``seq``) unless its ``key`` is already recorded.

    Call under :func:`cmms_mlflow.registry.model_lock`: the next sequence number is the newest + 1.
    Returns the recorded event, or None when the key was recorded before (a retry).
    """
    from mlflow.entities import ViewType

    experiment_id = _experiment_id(client, model, create=True)
    key = str(event["key"])
    if not key.isalnum():
        raise ValueError(f"history key {key!r} must be alphanumeric")
    if client.search_runs(
        [experiment_id], filter_string=f"tags.{KEY_TAG} = '{key}'", run_view_type=ViewType.ALL, max_results=1
    ):
        log.info("History of %s already has event %s; not appending it again", model, key)
        return None
    newest = client.search_runs(
        [experiment_id], order_by=[f"tags.{SEQ_TAG} DESC"], run_view_type=ViewType.ALL, max_results=1
    )
    seq = int(newest[0].data.tags.get(SEQ_TAG, "0")) + 1 if newest else 1
    recorded: dict[str, Any] = {
        **{k: event.get(k) for k in _FIELDS},
        "seq": seq,
        "key": key,
        "reason": _cut(str(event.get("reason") or "")),
        "repairs": [_cut(r, 500) for r in event.get("repairs") or []][:20],
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tags = {
        SEQ_TAG: str(seq).zfill(_SEQ_WIDTH),
        KEY_TAG: key,
        EVENT_TAG: json.dumps(recorded, separators=(",", ":"), sort_keys=True),
        "history_type": str(recorded["type"]),
        "history_version": str(recorded["version"] or ""),
        "history_champion": f"{recorded['champion_before'] or '-'} -> {recorded['champion_after'] or '-'}",
        "history_actor": _cut(str(recorded["actor"] or ""), 500),
        "history_at": str(recorded["at"] or ""),
        "mlflow.note.content": _sentence(recorded),
    }
    run = client.create_run(
        experiment_id, run_name=f"{seq:06d} {recorded['type']} v{recorded['version'] or '-'}", tags=tags
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    log.info("History of %s: #%d %s", model, seq, tags["mlflow.note.content"])
    return recorded  # type: ignore[return-value]


def read(
    client: MlflowClient, model: str, *, limit: int = 50, version: str | None = None
) -> list[HistoryEvent]:
    """The newest ``limit`` events of ``model`` (only those about ``version`` if given), newest first
    (``[]`` for a model without history)."""
    return read_page(client, model, limit=limit, version=version)[0]


def read_page(
    client: MlflowClient,
    model: str,
    *,
    limit: int = 50,
    page_token: str | None = None,
    version: str | None = None,
) -> tuple[list[HistoryEvent], str | None]:
    """One page of events, newest first, and the token of the next page (None after the last)."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    experiment_id = _experiment_id(client, model, create=False)
    if experiment_id is None:
        return [], None
    runs = client.search_runs(
        [experiment_id],
        # A version number is an integer: nothing from a caller reaches the filter as text.
        filter_string=f"tags.history_version = '{int(version)}'" if version is not None else "",
        order_by=[f"tags.{SEQ_TAG} DESC"],
        max_results=limit,
        page_token=page_token or None,
    )
    events = []
    for run in runs:
        try:
            events.append(json.loads(run.data.tags[EVENT_TAG]))
        except (KeyError, ValueError):
            log.warning("History of %s: run %s is not an event; skipped", model, run.info.run_id)
    token = runs.token.decode() if isinstance(runs.token, bytes) else runs.token
    return events, token or None


_FIELDS = (
    "type",
    "model",
    "version",
    "versions",  # a prune event's versions (cmms_pm.registry_plan.plan_prune)
    "from_stage",
    "to_stage",
    "champion_before",
    "champion_after",
    "actor",
    "at",
    "changed",
    "airflow",
)


def _experiment_id(client: MlflowClient, model: str, *, create: bool) -> str | None:
    from mlflow.exceptions import MlflowException

    name = experiment_name(model)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted" and create:
            log.warning("History experiment %r was deleted; restoring it", name)
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    if not create:
        return None
    try:
        return client.create_experiment(name, tags={"cmms.history_of": model})
    except MlflowException:  # created meanwhile by a reader-less race (outside the lock)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _cut(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sentence(event: Mapping[str, Any]) -> str:
    """One line a person reads in the MLflow UI."""
    moved = (
        f"v{event['version']} {event['from_stage']} -> {event['to_stage']}"
        if event.get("from_stage") and event.get("version")
        else f"v{event.get('version') or '-'}"
    )
    champion = f"champion {event.get('champion_before') or '-'} -> {event.get('champion_after') or '-'}"
    unchanged = "" if event.get("changed", True) else " (already in effect)"
    return _cut(
        f"{event['type']}{unchanged}: {moved}; {champion}; by {event.get('actor') or '?'} at "
        f"{event.get('at') or '?'}: {event.get('reason') or ''}",
        4000,
    )
