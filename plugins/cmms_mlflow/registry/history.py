"""The append-only history of a registered model, kept in MLflow itself.

Each event is one MLflow run in the experiment ``<model>__history``, created once (only its status
tags change, when an intent is completed): tags ``history_seq`` (zero-padded, so it sorts),
``history_key`` (the event's idempotency key), ``history_type``, ``history_version``,
``history_actor`` … and ``history_event`` (the whole :class:`~cmms_mlflow.records.HistoryEvent`
as compact JSON). The MLflow UI shows the experiment as a table of who did what, when and why.

Order without growth: each event run's ``start_time`` is set when it is appended, strictly after
the previous event's (the clock, or the previous one + 1 ms), so the runs' own start time — which
MLflow sorts and filters on a column — orders the history like ``seq``. :func:`read_page` reads one
page newest first with one bounded search, and its token (ours, not MLflow's offset) names where
the page ended, so paging a history that grows meanwhile returns every event once, in order, and
a late page costs what the first does. Sorting on the ``seq`` tag instead made MLflow join and sort
every event of the model on each read.

Events are appended by :func:`cmms_mlflow.registry.model_registry.apply` under the model lock, so sequence
numbers never collide (a number already taken — an event older code appended — is skipped), and a
retried step whose event is already recorded (same key) appends nothing. Deleting an event run (an
MLflow admin can) leaves a gap in ``seq``.

Intent first: an event whose request writes anything is appended ``pending`` (tag
``history_status``, the run ``RUNNING``) before the writes and completed after them
(:func:`complete`: ``done``, the run ``FINISHED``). A process that dies in between leaves the
intent; the next write of the model settles it under the lock (:func:`settle_pending`: ``done`` if
its writes took effect, else ``not_applied``, the run ``FAILED``). Reads show a pending event as
``status: pending``. Completing an event updates its own run's status tags (never its start time,
so its place in the order stays); no other event changes.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from cmms_pm.registry_plan import DONE_EVENT, PENDING_EVENT, PRUNE

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_mlflow.records import HistoryEvent

log = logging.getLogger(__name__)

EXPERIMENT_SUFFIX = "__history"
SEQ_TAG, KEY_TAG, EVENT_TAG = "history_seq", "history_key", "history_event"
STATUS_TAG = "history_status"
_SEQ_WIDTH = 10
#: MLflow keeps run tag values up to 8,000 characters; long free text is cut to fit.
_MAX_TEXT = 2000
MAX_LIMIT = 1000


def experiment_name(model: str) -> str:
    return f"{model}{EXPERIMENT_SUFFIX}"


def append(
    client: MlflowClient, model: str, event: Mapping[str, Any], *, status: str = DONE_EVENT
) -> HistoryEvent | None:
    """Record ``event`` (a plan's event, without ``seq``) unless its ``key`` is already recorded.

    Call under :func:`cmms_mlflow.registry.model_registry.model_lock`: the next sequence number is
    the newest + 1.
    ``status``: ``done``, or ``pending`` for an intent recorded before its writes (:func:`complete`).
    Returns the recorded event, or None when the key was recorded before (a retry).
    """

    experiment_id = _experiment_id(client, model, create=True)
    key = _checked_key(event["key"])
    if _find(client, experiment_id, key) is not None:
        log.info("History of %s already has event %s; not appending it again", model, key)
        return None
    seq, start_time = _next_position(client, experiment_id)
    recorded: dict[str, Any] = {
        **{k: event.get(k) for k in _FIELDS},
        "seq": seq,
        "key": key,
        "reason": _cut(str(event.get("reason") or "")),
        "repairs": [_cut(r, 500) for r in event.get("repairs") or []][:20],
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": status,
    }
    if status == PENDING_EVENT and event.get("expect"):
        recorded["expect"] = dict(event["expect"])
    tags = {
        SEQ_TAG: str(seq).zfill(_SEQ_WIDTH),
        KEY_TAG: key,
        STATUS_TAG: status,
        EVENT_TAG: json.dumps(recorded, separators=(",", ":"), sort_keys=True),
        "history_type": str(recorded["type"]),
        "history_version": str(recorded["version"] or ""),
        "history_champion": f"{recorded['champion_before'] or '-'} -> {recorded['champion_after'] or '-'}",
        "history_actor": _cut(str(recorded["actor"] or ""), 500),
        "history_at": str(recorded["at"] or ""),
        "mlflow.note.content": _sentence(recorded),
    }
    run = client.create_run(
        experiment_id,
        run_name=f"{seq:06d} {recorded['type']} v{recorded['version'] or '-'}",
        tags=tags,
        start_time=start_time,
    )
    if status != PENDING_EVENT:
        client.set_terminated(run.info.run_id, status="FINISHED")
    log.info("History of %s: #%d (%s) %s", model, seq, status, tags["mlflow.note.content"])
    return cast("HistoryEvent", recorded)  # every field of _FIELDS, and seq, status, recorded_at


def recorded(client: MlflowClient, model: str, key: str) -> HistoryEvent | None:
    """The event recorded under ``key`` (any status), or None."""
    experiment_id = _experiment_id(client, model, create=False)
    if experiment_id is None:
        return None
    run = _find(client, experiment_id, _checked_key(key))
    return _event_of(run) if run is not None else None


def complete(
    client: MlflowClient, model: str, key: str, *, status: str = DONE_EVENT, settled: str = ""
) -> HistoryEvent | None:
    """Mark the event of ``key`` ``done`` (its writes happened) or ``not_applied``; ``settled`` says
    who completed it when it was not its writer. Call under the model lock. None if not recorded."""
    experiment_id = _experiment_id(client, model, create=False)
    run = _find(client, experiment_id, _checked_key(key)) if experiment_id is not None else None
    if run is None:
        return None
    event = _event_of(run)
    if event is None or (event.get("status", DONE_EVENT) == status and not settled):
        return event
    if not settled and event.get("status", DONE_EVENT) != PENDING_EVENT:
        settled = "completed by a retry of the same step"
    completed: dict[str, Any] = {**event, "status": status}
    completed.pop("expect", None)
    if settled:
        completed["settled"] = settled
    from mlflow.entities import RunTag

    # One request for the three tags (a registry write completes its event on every apply).
    client.log_batch(
        run.info.run_id,
        tags=[
            RunTag(EVENT_TAG, json.dumps(completed, separators=(",", ":"), sort_keys=True)),
            RunTag(STATUS_TAG, status),
            RunTag("mlflow.note.content", _sentence(completed)),
        ],
    )
    client.set_terminated(run.info.run_id, status="FINISHED" if status == DONE_EVENT else "FAILED")
    return cast("HistoryEvent", completed)  # the recorded event, its status completed


def pending(client: MlflowClient, model: str) -> list[HistoryEvent]:
    """The events recorded as intents and never completed (their writer died in between), oldest first."""
    from mlflow.entities import ViewType

    experiment_id = _experiment_id(client, model, create=False)
    if experiment_id is None:
        return []
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{STATUS_TAG} = '{PENDING_EVENT}'",
        order_by=[f"tags.{SEQ_TAG} ASC"],
        run_view_type=ViewType.ALL,
        max_results=100,
    )
    return [event for event in map(_event_of, runs) if event is not None]


def settle_pending(client: MlflowClient, model: str) -> list[HistoryEvent]:
    """Complete every pending event of ``model`` from the registry as it is now (call under the model
    lock: a pending event's writer no longer holds it, so it died between its intent and its end)."""
    from mlflow.exceptions import MlflowException

    from cmms_pm.registry_plan import VersionState, settle

    settled = []
    for event in pending(client, model):
        if event.get("type") == PRUNE:
            done = _settle_prune(client, model, event)
            if done is not None:
                settled.append(done)
            continue
        state = None
        if event.get("version"):
            try:
                mv = client.get_model_version(model, str(event["version"]))
                state = VersionState(str(mv.version), str(mv.current_stage), dict(mv.tags or {}), mv.run_id)
            except MlflowException as err:
                if getattr(err, "error_code", "") not in (
                    "RESOURCE_DOES_NOT_EXIST",
                    "INVALID_PARAMETER_VALUE",
                ):
                    raise
        status, note = settle(event, state)
        log.warning("History of %s: event #%s was left pending by a writer that died: %s (%s)",
                    model, event.get("seq"), status, note)  # fmt: skip
        done = complete(client, model, str(event["key"]), status=status, settled=note)
        if done is not None:
            settled.append(done)
    return settled


def _settle_prune(client: MlflowClient, model: str, event: HistoryEvent) -> HistoryEvent | None:
    """Settle a pending ``prune`` event from its versions' retention tags, or leave it pending while one
    is still tagged ``pruning`` (the next retention run removes the rest and completes it)."""
    from mlflow.exceptions import MlflowException

    from cmms_pm.registry_plan import VersionState, settle_prune

    states: dict[str, VersionState | None] = {}
    for number in [str(v) for v in event.get("versions") or []][:1000]:
        try:
            mv = client.get_model_version(model, number)
            states[number] = VersionState(number, str(mv.current_stage), dict(mv.tags or {}), mv.run_id)
        except MlflowException as err:
            if getattr(err, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            states[number] = None
    answer = settle_prune(event, states)
    if answer is None:
        log.info("History of %s: prune event #%s stays pending: versions left mid-prune, which the next "
                 "retention run finishes", model, event.get("seq"))  # fmt: skip
        return None
    status, note = answer
    log.warning("History of %s: prune event #%s was left pending by a writer that died: %s (%s)",
                model, event.get("seq"), status, note)  # fmt: skip
    return complete(client, model, str(event["key"]), status=status, settled=note)


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
    """One page of events, newest first, and the token of the next page (None after the last).

    A token is where the previous page ended (its last event's start time, and the events of that
    instant already returned); an unreadable one is :class:`~cmms_mlflow.exceptions.MlflowRegistryError`.
    """
    limit = max(1, min(int(limit), MAX_LIMIT))
    cursor = _decode_token(page_token) if page_token else None
    experiment_id = _experiment_id(client, model, create=False)
    if experiment_id is None:
        return [], None
    # A version number is an integer: nothing from a caller reaches the filter as text.
    about = [f"tags.history_version = '{int(version)}'"] if version is not None else []
    seen = cursor.seen if cursor is not None else frozenset()
    bounded = [*about, f"attributes.start_time <= {cursor.start}"] if cursor is not None else about
    wanted = limit + len(seen) + 1
    rows = _search(client, model, experiment_id, bounded, wanted)
    more = len(rows) >= wanted
    rows = [r for r in rows if not (cursor is not None and r[0] == cursor.start and r[1] in seen)]
    page = rows[:limit]
    if not page:
        return [], None
    edge = page[-1][0]
    if more and rows[-1][0] == edge:
        # Several events recorded in the same millisecond (only events appended before start times
        # were made distinct) straddle the page's end: take that instant whole, ordered by seq.
        tied = _search(client, model, experiment_id, [*about, f"attributes.start_time = {edge}"], MAX_LIMIT)
        tied = [r for r in tied if not (cursor is not None and edge == cursor.start and r[1] in seen)]
        page = [r for r in page if r[0] != edge] + tied[: limit - sum(1 for r in page if r[0] != edge)]
        more = True
    later = more or len(rows) > len(page)
    if not later:
        return [r[2] for r in page], None
    taken = {r[1] for r in page if r[0] == edge} | (
        seen if cursor is not None and cursor.start == edge else set()
    )
    return [r[2] for r in page], _encode_token(_Cursor(edge, frozenset(taken)))


def _search(
    client: MlflowClient, model: str, experiment_id: str, filters: list[str], max_results: int
) -> list[tuple[int, int, HistoryEvent]]:
    """``(start_time, seq, event)`` of the newest events matching ``filters``, newest first."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=" and ".join(filters),
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )
    rows = []
    for run in runs:
        event = _event_of(run)
        if event is None or not isinstance(event.get("seq"), int):
            log.warning("History of %s: run %s is not an event; skipped", model, run.info.run_id)
        else:
            rows.append((int(run.info.start_time or 0), int(event["seq"]), event))
    return sorted(rows, key=lambda r: (-r[0], -r[1]))


def _next_position(client: MlflowClient, experiment_id: str) -> tuple[int, int]:
    """``(seq, start_time)`` of the next event: after the newest one, in number and in time."""
    from mlflow.entities import ViewType

    newest = client.search_runs(
        [experiment_id], order_by=["attributes.start_time DESC"], run_view_type=ViewType.ALL, max_results=1
    )
    seq, start = 1, 0
    if newest:
        seq = int(newest[0].data.tags.get(SEQ_TAG, "0")) + 1
        start = int(newest[0].info.start_time or 0) + 1
    while client.search_runs(  # a number already taken (an event appended out of time order): skip it
        [experiment_id],
        filter_string=f"tags.{SEQ_TAG} = '{str(seq).zfill(_SEQ_WIDTH)}'",
        run_view_type=ViewType.ALL,
        max_results=1,
    ):
        seq += 1
    return seq, max(start, int(time.time() * 1000))


@dataclass(frozen=True)
class _Cursor:
    start: int
    seen: frozenset[int]


_TOKEN_MAX_SEEN = 5000


def _encode_token(cursor: _Cursor) -> str:
    ranges: list[list[int]] = []
    for seq in sorted(cursor.seen):
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    raw = json.dumps({"t": cursor.start, "s": ranges}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str) -> _Cursor:
    from cmms_mlflow.exceptions import history_token_invalid

    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
        start, ranges = data["t"], data["s"]
        if type(start) is not int or not 0 <= start < 2**53 or not isinstance(ranges, list):
            raise ValueError("bad cursor")
        seen: set[int] = set()
        for low, high in ranges:
            if type(low) is not int or type(high) is not int or not 0 < low <= high < 2**53:
                raise ValueError("bad range")
            if high - low + len(seen) > _TOKEN_MAX_SEEN:
                raise ValueError("too many events")
            seen.update(range(low, high + 1))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:
        raise history_token_invalid() from err
    return _Cursor(start, frozenset(seen))


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
    "override",
)


def _checked_key(key: Any) -> str:
    key = str(key)
    if not key.isalnum():
        raise ValueError(f"history key {key!r} must be alphanumeric")
    return key


def _find(client: MlflowClient, experiment_id: str, key: str) -> Any:
    from mlflow.entities import ViewType

    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.{KEY_TAG} = '{key}'", run_view_type=ViewType.ALL, max_results=1
    )
    return runs[0] if runs else None


def _event_of(run: Any) -> HistoryEvent | None:
    """The event a history run holds (``status`` ``done`` for events from before intents existed)."""
    try:
        event = json.loads(run.data.tags[EVENT_TAG])
    except (KeyError, ValueError):
        return None
    event.setdefault("status", DONE_EVENT)
    event.setdefault("override", None)
    return event


@overload
def _experiment_id(client: MlflowClient, model: str, *, create: Literal[True]) -> str: ...
@overload
def _experiment_id(client: MlflowClient, model: str, *, create: bool) -> str | None: ...
def _experiment_id(client: MlflowClient, model: str, *, create: bool) -> str | None:
    """The history experiment's id; None when it does not exist and ``create`` is false."""
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
    status = event.get("status", DONE_EVENT)
    state = "" if status == DONE_EVENT else f" [{status.replace('_', ' ')}]"
    override = event.get("override") or {}
    overriding = f" (overriding a {override['of'].replace('_', ' ')} approval)" if override.get("of") else ""
    return _cut(
        f"{event['type']}{unchanged}{overriding}{state}: {moved}; {champion}; by {event.get('actor') or '?'} "
        f"at {event.get('at') or '?'}: {event.get('reason') or ''}",
        4000,
    )
