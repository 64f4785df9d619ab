"""Registry changes as snapshot → plan: what to write, what to repair, and the history that explains it.

Pure domain code (no MLflow, no Airflow), like :mod:`cmms_pm.policy`. The plugin reads one
:class:`Snapshot` of a registered model under its lock, calls :func:`plan` with a
:class:`Request`, and applies the returned :class:`Plan` in one place
(``cmms_mlflow.registry.model_registry.apply``). A crash between two writes is harmless: the next write path
reads the next snapshot, and :func:`repair` puts the invariants back before anything else.

Invariants (stages are the truth; aliases are a view of them):

* **R1** at most one version is in ``Production``. If several are, the one the ``champion`` alias
  points at stays (else the newest) and the others are archived.
* **R2** ``champion`` points at the Production version, and exists only if one does. A promotion
  moves the stage first (one atomic write that also archives the old champion) and the alias
  second; when the alias still points at the version it replaced, the alias is moved forward.
* **R3** ``previous_champion`` is the champion an interrupted promotion (R2) replaced, and never
  the champion itself.
* **R4** ``challenger`` points at the newest ``Staging`` version (several may be staged when runs
  overlap; the newest is the one under validation last) and exists only if one is staged.

Authority (``Request.authority``, :func:`_authority_refusal`): a model whose spec requires approval
goes to Production outside its approval step only by one of the spec's approvers, and a version
whose approval was rejected or timed out only when an approver overrides it with a reason
(recorded on the version and in the history event).

History intent first: a request's event is recorded *pending* before its writes (``Step.intent``)
and completed after them; :func:`settle` tells the next writer whether a pending event left by a
process that died in between took effect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from cmms_pm.approval import APPROVED, PENDING, REJECTED, TIMED_OUT

PRODUCTION, STAGING, ARCHIVED, NONE = "Production", "Staging", "Archived", "None"
STAGES = (NONE, STAGING, PRODUCTION, ARCHIVED)
CHAMPION, CHALLENGER, PREVIOUS_CHAMPION = "champion", "challenger", "previous_champion"
#: ``Request.expected_champion`` meaning "whatever the champion is now" (no compare-and-set).
ANY_CHAMPION = "*"

#: History event types (``Request.kind`` of a request, plus ``repair``).
EVENT_TYPES = ("promotion", "rejection", "rollback", "stage_change", "staging", "approval", "repair", "prune")
#: Request kinds that record a decision about a version without moving a stage or an alias.
NOTE_KINDS = ("approval",)
#: ``approval_status`` values of a person's "no" (nobody answering counts as one).
REFUSED_APPROVALS = (REJECTED, TIMED_OUT)
#: ``status`` of a history event: recorded before its writes, after them, or found not applied.
PENDING_EVENT, DONE_EVENT, NOT_APPLIED_EVENT = "pending", "done", "not_applied"


@dataclass(frozen=True)
class VersionState:
    """One model version as the snapshot saw it."""

    version: str
    stage: str
    tags: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A registered model's versions (stage, tags) and aliases, read at one moment.

    ``complete``: every version is in ``versions``. A lean snapshot (``complete=False``) holds the
    versions a change can touch — the newest of each stage, the aliased ones, the recent ones, those
    waiting for approval and the one requested — and is what a write path reads, so its cost does not
    grow with the model's age; archived history beyond those is left out (pruning reads it all).
    """

    name: str
    versions: Mapping[str, VersionState]
    aliases: Mapping[str, str]
    complete: bool = True

    def in_stage(self, stage: str) -> list[str]:
        """Version numbers in ``stage``, newest first."""
        return _newest_first(v.version for v in self.versions.values() if v.stage == stage)


@dataclass(frozen=True)
class Authority:
    """Who asks for a Production change, as the model's spec sees it (the caller decides each flag
    with Airflow's own checks; the planner applies the rule).

    ``approval_step``: the training DAG's own promotion (after its approval step when the spec
    requires one); otherwise a person's change (model API, Models page, ``model_promotion``).
    ``approval_required``: the spec requires approval. ``is_approver``: the actor is one of the
    spec's approvers. ``override_reason``: an approver's explicit override of a rejected or timed-out
    approval ("" = none).
    """

    spec: str | None = None
    approval_required: bool = False
    approval_step: bool = False
    is_approver: bool = False
    approvers: tuple[str, ...] = ()
    override_reason: str = ""

    @classmethod
    def of(
        cls, spec: Any | None, *, is_approver: bool = False, override: str = "", approval_step: bool = False
    ) -> Authority:
        """The authority of a caller for ``spec`` (a ``cmms_pm.spec.ModelSpec``, or None when no spec owns
        the model): its approval settings, and what the caller established about the person."""
        if spec is None:
            return cls(is_approver=False, override_reason=override, approval_step=approval_step)
        return cls(
            spec=spec.name,
            approval_required=bool(spec.approval["required"]),
            approval_step=approval_step,
            is_approver=is_approver,
            approvers=tuple(spec.approval["approvers"]),
            override_reason=override,
        )


@dataclass(frozen=True)
class Request:
    """What a caller wants done to one version (or ``kind="repair"``: only the repairs).

    ``expected_champion`` makes a Production change a compare-and-set (``None`` = no champion;
    :data:`ANY_CHAMPION` = no check). ``from_stages``: act only while the version is in one of
    these stages (a rerun must not pull a decided version back); otherwise the request is a no-op.
    ``key`` identifies the request across retries: its history event is recorded once.
    ``tags`` are written on the version when the request changes it ("latest" convenience tags).
    ``authority``: who asks, for the approval rules (None: no rule, e.g. a repair or a test).
    ``recorded``: the history event already recorded under ``key`` (a rerun of a step that did its
    work): a promotion it made that a later one superseded is left alone.
    """

    kind: str
    version: str | None = None
    stage: str | None = None
    expected_champion: str | None = ANY_CHAMPION
    from_stages: tuple[str, ...] | None = None
    actor: str = ""
    at: str = ""
    reason: str = ""
    key: str = ""
    airflow: Mapping[str, str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    authority: Authority | None = None
    recorded: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Write:
    """One registry write: ``stage`` (``value`` = stage; ``archive_others`` archives the versions
    already in that stage in the same atomic call), ``alias``/``unalias`` (``value`` = alias name),
    or ``tags`` on a version."""

    op: str
    version: str | None = None
    value: str | None = None
    archive_others: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.op == "stage":
            extra = f" (archiving other {self.value} versions)" if self.archive_others else ""
            return f"v{self.version} -> {self.value}{extra}"
        if self.op == "alias":
            return f"alias {self.value} -> v{self.version}"
        if self.op == "unalias":
            return f"alias {self.value} removed"
        if self.op == "delete_artifacts":  # retention (plan_prune)
            return f"artifacts of v{self.version} removed: {self.value}"
        if self.op == "model_tags":  # retention (plan_prune)
            return f"tags on the model: {sorted(self.tags)}"
        return f"tags on v{self.version}: {sorted(self.tags)}"


@dataclass(frozen=True)
class Step:
    """Writes and the history event that explains them. A repair's event is recorded before its
    writes (a retry recomputes the same repair and finds it recorded). A request's that writes
    anything is recorded *pending* before its writes and completed after them (``intent``), so a
    process that dies in between leaves the intent, which the next writer settles (:func:`settle`);
    one that writes nothing is recorded after the fact."""

    writes: tuple[Write, ...]
    event: Mapping[str, Any] | None
    event_first: bool = False
    intent: bool = False


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: ``code`` names the error, ``details`` its identifiers."""

    # version_not_found | unknown_stage | champion_changed | champion_cannot_leave_production |
    # approval_pending | not_an_approver | approval_not_granted | approval_missing
    code: str
    details: Mapping[str, Any]


class Outcome(TypedDict, total=False):
    """What a plan did (:attr:`Plan.outcome`): what a registry write returns, and the registry steps
    return through XCom. Every plan has the first four keys; a request about one version the next
    six; a rerun of a promotion replaced since the ``superseded`` ones; a prune the last six
    (``registered``: False when the model does not exist, so nothing was planned)."""

    name: str
    repairs: list[str]
    champion_before: str | None
    champion_after: str | None
    version: str
    previous_stage: str
    stage: str
    unchanged: bool
    replaced: str | None
    override: dict[str, Any]  # the rejected or timed-out approval a promotion overrode (of, by, reason)
    superseded: bool
    superseded_by: str | None
    promoted_at: str | None
    recorded_seq: int | None
    keep_archived_versions: int | None
    pruned: list[str]
    protected: dict[str, str]
    skipped: dict[str, str]
    resumed: dict[str, Any]  # the earlier prune whose intent this one finished (key, seq, versions)
    registered: bool


@dataclass(frozen=True)
class Plan:
    """Everything one write path does: repairs first, then the request (unless refused)."""

    name: str
    repairs: tuple[str, ...]
    steps: tuple[Step, ...]
    outcome: Outcome
    refusal: Refusal | None = None

    @property
    def writes(self) -> tuple[Write, ...]:
        return tuple(w for step in self.steps for w in step.writes)


@dataclass
class _State:
    """The mutable view the planner works on: stages and aliases after the writes planned so far."""

    stages: dict[str, str]
    aliases: dict[str, str]

    def in_stage(self, stage: str) -> list[str]:
        return _newest_first(v for v, s in self.stages.items() if s == stage)

    def champion(self) -> str | None:
        production = self.in_stage(PRODUCTION)
        return production[0] if production else None


def repair(snapshot: Snapshot) -> tuple[tuple[Write, ...], tuple[str, ...]]:
    """The writes that restore R1–R4 on ``snapshot``, and one sentence per fix."""
    state = _state(snapshot)
    writes, notes = _repair(state)
    return tuple(writes), tuple(notes)


def serving_version(snapshot: Snapshot) -> tuple[str | None, tuple[str, ...]]:
    """The version that serves (the Production version, R1) and what is inconsistent, if anything.

    Read paths use it instead of trusting the ``champion`` alias: an alias left on an archived
    version by an interrupted promotion is never reported as the production model.
    """
    state = _state(snapshot)
    _, notes = _repair(state)
    return state.champion(), tuple(notes)


def plan(snapshot: Snapshot, request: Request) -> Plan:
    """Repairs of ``snapshot``, then ``request`` applied to the repaired state."""
    state = _state(snapshot)
    repair_writes, notes = _repair(state)
    steps: list[Step] = []
    if notes:
        steps.append(
            Step(tuple(repair_writes), _repair_event(snapshot, request, notes, state), event_first=True)
        )
    champion = state.champion()
    outcome: Outcome = {"name": snapshot.name, "repairs": list(notes), "champion_before": champion}
    if request.kind == "repair":
        return Plan(snapshot.name, tuple(notes), tuple(steps), {**outcome, "champion_after": champion})

    version = str(request.version)
    target = request.stage
    if request.kind in NOTE_KINDS:  # a decision about the version that moves nothing: tags + event
        return _note(snapshot, state, request, version, steps, notes, outcome)
    superseded = _superseded(state, request, version, champion)
    if superseded is not None:
        outcome.update(superseded)
        return Plan(snapshot.name, tuple(notes), tuple(steps), outcome)
    refusal = _refusal(snapshot, state, request, version, champion)
    if refusal is not None:
        return Plan(snapshot.name, tuple(notes), tuple(steps), outcome, refusal)
    current = state.stages[version]
    outcome.update({"version": version, "previous_stage": current, "replaced": None})

    writes: list[Write] = []
    override = None
    if request.from_stages is not None and current not in (*request.from_stages, target):
        changed = False  # a rerun of an earlier step finds the version decided: leave it
    elif target == PRODUCTION:
        changed = not (champion == version and current == PRODUCTION)
        if changed:
            writes.append(Write("stage", version, PRODUCTION, archive_others=True))
            writes.append(Write("alias", version, CHAMPION))
            state.stages[version] = PRODUCTION
            if champion is not None:
                state.stages[champion] = ARCHIVED
                writes.append(Write("alias", champion, PREVIOUS_CHAMPION))
                writes.append(Write("tags", champion, tags={"replaced_by_version": version}))
                outcome["replaced"] = champion
            state.aliases[CHAMPION] = version
            writes.extend(_challenger_follows_staging(state))
            override = _override(snapshot.versions[version].tags, request)
            tags = {**request.tags, "replaced_version": champion or ""}
            if override is not None:
                tags.update(
                    approval_override=override["of"],
                    approval_override_by=request.actor,
                    approval_override_at=request.at,
                    approval_override_reason=override["reason"],
                )
            writes.append(Write("tags", version, tags=tags))
        else:
            outcome["replaced"] = state.aliases.get(PREVIOUS_CHAMPION)
    else:
        changed = current != target
        if changed:
            writes.append(Write("stage", version, target))
            state.stages[version] = str(target)
            writes.extend(_challenger_follows_staging(state))
            if request.tags:
                writes.append(Write("tags", version, tags=dict(request.tags)))
    outcome.update(
        {"stage": state.stages[version], "unchanged": not changed, "champion_after": state.champion()}
    )
    if override is not None:
        outcome["override"] = override
    event: dict[str, Any] = {
        "key": request.key,
        "type": request.kind,
        "model": snapshot.name,
        "version": version,
        "from_stage": current,
        "to_stage": state.stages[version],
        "champion_before": champion,
        "champion_after": state.champion(),
        "actor": request.actor,
        "at": request.at,
        "reason": request.reason,
        "changed": changed,
        "airflow": dict(request.airflow) if request.airflow else None,
        "override": override,
        "repairs": [],
    }
    if writes:
        event["expect"] = _expectation(version, state.stages[version], writes)
    steps.append(Step(tuple(writes), event, intent=bool(writes)))
    return Plan(snapshot.name, tuple(notes), tuple(steps), outcome)


def former_champion(snapshot: Snapshot, version: str) -> bool:
    """Whether ``version`` served as champion before and does not now (the ``previous_champion``, a
    version a promotion replaced, or an archived version once promoted): promoting it is a rollback."""
    state = snapshot.versions.get(str(version))
    if state is None or serving_version(snapshot)[0] == str(version):
        return False
    if snapshot.aliases.get(PREVIOUS_CHAMPION) == str(version) or state.tags.get("replaced_by_version"):
        return True
    return state.stage == ARCHIVED and bool(state.tags.get("promoted_at"))


def settle(event: Mapping[str, Any], version: VersionState | None) -> tuple[str, str]:
    """``(status, note)`` of a *pending* history event whose writer died between recording it and
    completing it, from the version as it is now (read under the model lock, so nobody else wrote
    since): ``done`` when its stage change (and, for a note, its tags) took effect, else
    ``not_applied``."""
    expect = event.get("expect") or {}
    if version is None:
        return NOT_APPLIED_EVENT, "completed by the next write: the version no longer exists"
    stage_ok = version.stage == expect.get("stage", event.get("to_stage"))
    keys = sorted(expect.get("tag_keys") or [])
    tags_ok = not keys or _tags_digest({k: version.tags.get(k, "") for k in keys}) == expect.get(
        "tags_digest"
    )
    moved = event.get("from_stage") != event.get("to_stage")
    if stage_ok and tags_ok:
        return DONE_EVENT, "completed by the next write: every write had taken effect"
    if moved and stage_ok:
        return (
            DONE_EVENT,
            "completed by the next write: the stage change had taken effect, later writes repaired",
        )
    return NOT_APPLIED_EVENT, "completed by the next write: its writes had not taken effect"


def _expectation(version: str, stage: str, writes: list[Write]) -> dict[str, Any]:
    """What a pending event's writes leave on its version (for :func:`settle`): the stage, and the
    tags of its last tag write (a digest: values may be long)."""
    tags: dict[str, str] = {}
    for write in writes:
        if write.op == "tags" and write.version == version:
            tags = {k: "" if v is None else str(v) for k, v in write.tags.items()}
    return {"stage": stage, "tag_keys": sorted(tags), "tags_digest": _tags_digest(tags)}


def _tags_digest(tags: Mapping[str, Any]) -> str:
    return event_key("tags", {k: "" if v is None else str(v) for k, v in tags.items()})[:16]


def _superseded(state: _State, request: Request, version: str, champion: str | None) -> Outcome | None:
    """The outcome of a rerun of a promotion that already took effect and was replaced since (its
    key's event is recorded, changed, and another version serves): nothing is written."""
    recorded = request.recorded
    if request.stage != PRODUCTION or recorded is None or version not in state.stages:
        return None
    if not recorded.get("changed") or recorded.get("status") == NOT_APPLIED_EVENT:
        return None
    if recorded.get("to_stage") != PRODUCTION or champion == version:
        return None
    return {
        "version": version,
        "previous_stage": state.stages[version],
        "stage": state.stages[version],
        "unchanged": True,
        "replaced": None,
        "champion_after": champion,
        "superseded": True,
        "superseded_by": champion,
        "promoted_at": recorded.get("at"),
        "recorded_seq": recorded.get("seq"),
    }


def _override(tags: Mapping[str, str], request: Request) -> dict[str, Any] | None:
    """The approval override this promotion carries out, if any (an approver's, with a reason, of a
    rejected or timed-out approval; :func:`_authority_refusal` has allowed it)."""
    authority = request.authority
    status = tags.get("approval_status")
    if authority is None or not authority.override_reason or status not in REFUSED_APPROVALS:
        return None
    return {
        "of": status,
        "by": request.actor,
        "reason": authority.override_reason,
        "approval_by": tags.get("approval_by") or None,
        "approval_reason": tags.get("approval_reason") or None,
    }


def _note(
    snapshot: Snapshot,
    state: _State,
    request: Request,
    version: str,
    steps: list[Step],
    notes: list[str],
    outcome: Outcome,
) -> Plan:
    """A request of a :data:`NOTE_KINDS` kind: record it (tags on the version, one history event) without
    moving any stage or alias."""
    if version not in state.stages:
        return Plan(
            snapshot.name,
            tuple(notes),
            tuple(steps),
            outcome,
            Refusal("version_not_found", {"name": snapshot.name, "version": version}),
        )
    stage, champion = state.stages[version], state.champion()
    writes = (Write("tags", version, tags=dict(request.tags)),) if request.tags else ()
    event: dict[str, Any] = {
        "key": request.key,
        "type": request.kind,
        "model": snapshot.name,
        "version": version,
        "from_stage": stage,
        "to_stage": stage,
        "champion_before": champion,
        "champion_after": champion,
        "actor": request.actor,
        "at": request.at,
        "reason": request.reason,
        "changed": False,
        "airflow": dict(request.airflow) if request.airflow else None,
        "override": None,
        "repairs": [],
    }
    if writes:
        event["expect"] = _expectation(version, stage, list(writes))
    steps.append(Step(writes, event, intent=bool(writes)))
    outcome.update(
        {
            "version": version,
            "previous_stage": stage,
            "stage": stage,
            "unchanged": True,
            "champion_after": champion,
        }
    )
    return Plan(snapshot.name, tuple(notes), tuple(steps), outcome)


def event_key(*parts: Any) -> str:
    """A stable key (hex) for a history event made of ``parts`` (JSON-able values)."""
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _refusal(
    snapshot: Snapshot, state: _State, request: Request, version: str, champion: str | None
) -> Refusal | None:
    target = request.stage
    if target not in STAGES:
        return Refusal("unknown_stage", {"stage": target})
    if version not in state.stages:
        return Refusal("version_not_found", {"name": snapshot.name, "version": version})
    current = state.stages[version]
    if request.from_stages is not None and current not in (*request.from_stages, target):
        return None
    pruned = _pruned_refusal(snapshot, version, target)
    if pruned is not None:
        return pruned
    if target == PRODUCTION:
        already = champion == version and current == PRODUCTION
        expected = request.expected_champion
        if not already and expected != ANY_CHAMPION and champion != (str(expected) if expected else None):
            return Refusal(
                "champion_changed", {"name": snapshot.name, "expected": expected, "actual": champion}
            )
        tags = snapshot.versions[version].tags
        if not already and tags.get("approval_status") == PENDING:
            # A person was asked; a promotion from anywhere else (API, page, model_promotion DAG)
            # would decide for them, and their later Reject could not take it back.
            return Refusal(
                "approval_pending",
                {
                    "name": snapshot.name,
                    "version": version,
                    "requested_by": tags.get("approval_requested_by") or None,
                },
            )
        if not already:
            return _authority_refusal(snapshot.name, version, tags, request)
    elif champion == version:
        return Refusal(
            "champion_cannot_leave_production", {"name": snapshot.name, "version": version, "stage": target}
        )
    return None


def _authority_refusal(name: str, version: str, tags: Mapping[str, str], request: Request) -> Refusal | None:
    """The approval rules of a Production change (``request.authority``; None = no rule):

    * the training DAG's own promotion of a model whose spec requires approval needs the version
      approved (``approval_missing``: a run that skipped the step, whatever its conf said);
    * anyone else's needs one of the spec's approvers (``not_an_approver``);
    * a version whose approval was rejected or timed out goes to Production only when an approver
      overrides it with a reason (``approval_not_granted`` without one).
    """
    authority = request.authority
    if authority is None:
        return None
    status = tags.get("approval_status") or None
    details = {
        "name": name,
        "version": version,
        "spec": authority.spec,
        "actor": request.actor,
        "approvers": list(authority.approvers),
        "status": status,
        "answered_by": tags.get("approval_by") or None,
    }
    if authority.approval_step:
        if authority.approval_required and status != APPROVED:
            return Refusal("approval_missing", details)
        return None
    if authority.approval_required and not authority.is_approver:
        return Refusal("not_an_approver", details)
    if status in REFUSED_APPROVALS:
        if not authority.override_reason:
            return Refusal("approval_not_granted", details)
        if not authority.is_approver:
            return Refusal("not_an_approver", details)
    return None


def _repair(state: _State) -> tuple[list[Write], list[str]]:
    writes: list[Write] = []
    notes: list[str] = []
    production = state.in_stage(PRODUCTION)
    alias = state.aliases.get(CHAMPION)
    if len(production) > 1:  # R1
        keep = alias if alias in production else production[0]
        why = "the champion alias points at it" if keep == alias else "the newest"
        for version in production:
            if version != keep:
                writes.append(Write("stage", version, ARCHIVED))
                state.stages[version] = ARCHIVED
                notes.append(f"v{version} was also in Production: archived (kept v{keep}, {why})")
    champion = state.champion()
    if alias != champion:  # R2
        where = f"v{alias} ({state.stages.get(alias, 'deleted')})" if alias else "no version"
        if champion is None:
            writes.append(Write("unalias", None, CHAMPION))
            state.aliases.pop(CHAMPION, None)
            notes.append(f"alias champion pointed at {where} but no version is in Production: removed")
        else:
            writes.append(Write("alias", champion, CHAMPION))
            state.aliases[CHAMPION] = champion
            notes.append(f"alias champion pointed at {where}: moved to v{champion}, the Production version")
            if alias is not None and alias in state.stages:  # R3: the champion it replaced
                writes.append(Write("alias", alias, PREVIOUS_CHAMPION))
                state.aliases[PREVIOUS_CHAMPION] = alias
                notes.append(f"alias previous_champion set to v{alias}, the champion v{champion} replaced")
    previous = state.aliases.get(PREVIOUS_CHAMPION)
    if previous is not None and (previous == champion or previous not in state.stages):  # R3
        writes.append(Write("unalias", None, PREVIOUS_CHAMPION))
        state.aliases.pop(PREVIOUS_CHAMPION, None)
        why = "the champion" if previous == champion else "a deleted version"
        notes.append(f"alias previous_champion pointed at v{previous}, {why}: removed")
    for write in _challenger_follows_staging(state):  # R4
        writes.append(write)
        was = f"v{write.version}" if write.op == "alias" else "nothing"
        notes.append(f"alias challenger set to {was}, the newest Staging version")
    return writes, notes


def _challenger_follows_staging(state: _State) -> list[Write]:
    staged = state.in_stage(STAGING)
    wanted = staged[0] if staged else None
    if state.aliases.get(CHALLENGER) == wanted:
        return []
    if wanted is None:
        state.aliases.pop(CHALLENGER, None)
        return [Write("unalias", None, CHALLENGER)]
    state.aliases[CHALLENGER] = wanted
    return [Write("alias", wanted, CHALLENGER)]


def _repair_event(snapshot: Snapshot, request: Request, notes: list[str], state: _State) -> dict[str, Any]:
    champion = state.champion()
    return {
        "key": event_key("repair", snapshot.name, request.key, notes),
        "type": "repair",
        "model": snapshot.name,
        "version": champion,
        "from_stage": None,
        "to_stage": None,
        # What the champion alias said before the repair (what a reader of the alias saw).
        "champion_before": snapshot.aliases.get(CHAMPION),
        "champion_after": champion,
        "actor": request.actor,
        "at": request.at,
        "reason": "; ".join(notes),
        "changed": True,
        "airflow": dict(request.airflow) if request.airflow else None,
        "override": None,
        "repairs": list(notes),
    }


def _state(snapshot: Snapshot) -> _State:
    return _State(
        stages={v: s.stage for v, s in snapshot.versions.items()},
        aliases={a: str(v) for a, v in snapshot.aliases.items()},
    )


def _newest_first(versions: Any) -> list[str]:
    return sorted((str(v) for v in versions), key=int, reverse=True)


# --- retention: the artifacts of old archived versions (cmms_mlflow.registry.pruning) ---------------------

#: Version tag of retention: :data:`PRUNING` while the version's artifacts are being removed (the
#: intent, written first), :data:`PRUNED` once they are gone. The version, its tags, metrics and
#: history stay; it can no longer be loaded, staged or promoted.
RETENTION_TAG = "retention_status"
PRUNING, PRUNED = "pruning", "pruned"
#: :data:`RETENTION_TAG` of a version that has its artifacts: written at registration, so that once
#: the model carries :data:`RETENTION_INDEX_TAG` every version not pruned has the tag and pruning reads
#: them with one tag-filtered search instead of every version the model ever had.
KEPT = "kept"
RETENTION_INDEX_TAG = "cmms.retention_index"
#: ``Write.op`` that sets tags on the registered model itself (``tags``).
MODEL_TAGS = "model_tags"
PRUNE = "prune"
#: ``Write.op`` that removes one artifact location (``value``: its URI) of a version.
DELETE_ARTIFACTS = "delete_artifacts"


@dataclass(frozen=True)
class PruneRequest:
    """Remove the artifacts of archived versions beyond the newest ``keep_archived_versions``
    (``None``: only finish versions an earlier run left mid-prune).

    ``artifacts``: each candidate's artifact URIs (what the plugin resolved and checked);
    ``skipped``: candidates whose artifacts are left alone, and why (e.g. not this package's model).
    """

    keep_archived_versions: int | None
    artifacts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    #: The snapshot read every version (the model had no retention index yet): tag the versions that
    #: have no retention status ``kept`` and mark the model indexed, before pruning.
    build_index: bool = False
    actor: str = ""
    at: str = ""
    key: str = ""
    airflow: Mapping[str, str] | None = None
    #: The ``pending`` prune event of an earlier run that died after marking its versions ``pruning``:
    #: when this run finishes every one of them, it completes that event (same key) instead of
    #: recording another (:func:`settle_prune` leaves such an event pending for it).
    resume: Mapping[str, Any] | None = None


def prune_candidates(snapshot: Snapshot, keep: int | None) -> tuple[list[str], dict[str, str]]:
    """``(versions whose artifacts go, newest first; {archived version kept although beyond keep: why})``.

    Candidates: archived versions beyond the newest ``keep`` archived ones, not pruned yet, and every
    version left mid-prune. Never: the champion, the challenger, a version waiting for approval, the
    previous champion (alias ``previous_champion``, or the version the champion replaced) — judged on
    the repaired state, as the plan applies it.
    """
    if keep is not None and keep < 0:
        raise ValueError(f"keep_archived_versions must be 0 or more, got {keep!r}")
    if not snapshot.complete:
        raise ValueError("pruning needs a complete snapshot (every version not pruned), not a lean one")
    state = _state(snapshot)
    _repair(state)
    champion = state.champion()
    guarded: dict[str, str] = {champion: "the champion"} if champion is not None else {}
    for alias, why in (
        (CHALLENGER, "the challenger"),
        (PREVIOUS_CHAMPION, "the previous champion (rollback target)"),
    ):
        if state.aliases.get(alias):
            guarded.setdefault(state.aliases[alias], why)
    champion_tags = (
        snapshot.versions[champion].tags if champion is not None and champion in snapshot.versions else {}
    )
    if champion_tags.get("replaced_version"):
        replaced = str(champion_tags["replaced_version"])
        guarded.setdefault(replaced, "the previous champion (the version the champion replaced)")
    for number, version in snapshot.versions.items():
        if version.tags.get("approval_status") == PENDING:
            guarded.setdefault(number, "waiting for approval")
    # The archived versions that still have their artifacts, newest first: the newest ``keep`` of them
    # keep them. Pruned (and half-pruned) versions no longer count.
    archived = [
        v
        for v in state.in_stage(ARCHIVED)
        if snapshot.versions[v].tags.get(RETENTION_TAG) not in (PRUNING, PRUNED)
    ]
    beyond = archived[keep:] if keep is not None else []
    candidates, protected = [], {}
    for number in _newest_first(snapshot.versions):
        status = snapshot.versions[number].tags.get(RETENTION_TAG)
        if status == PRUNING:
            candidates.append(number)  # half-deleted already: finish it
        elif status != PRUNED and number in beyond:
            if number in guarded:
                protected[number] = guarded[number]
            else:
                candidates.append(number)
    return candidates, protected


def plan_prune(snapshot: Snapshot, request: PruneRequest) -> Plan:
    """Repairs of ``snapshot``, then the pruning as one intent step (:func:`_prune_writes`): its ``prune``
    event is recorded *pending* before anything is written, the candidates are tagged ``pruning``, their
    artifacts removed, they are tagged ``pruned``, and the event is completed.

    A crash at any point leaves the event pending and the versions tagged ``pruning`` (or not yet
    marked, and then :func:`settle_prune` settles the event ``not_applied``): the next retention plan
    finishes them (removing what is already gone is a no-op), whatever the policy says by then, and
    completes the earlier event (``request.resume``) instead of recording another.
    """
    state = _state(snapshot)
    repair_writes, notes = _repair(state)
    steps: list[Step] = []
    blank = Request(
        kind="repair", actor=request.actor, at=request.at, key=request.key, airflow=request.airflow
    )
    if notes:
        steps.append(
            Step(tuple(repair_writes), _repair_event(snapshot, blank, notes, state), event_first=True)
        )
    champion = state.champion()
    candidates, protected = prune_candidates(snapshot, request.keep_archived_versions)
    skipped = {v: request.skipped[v] for v in candidates if v in request.skipped}
    pruned = [v for v in candidates if v not in skipped]
    if request.build_index:
        unmarked = [
            v for v in _newest_first(snapshot.versions) if RETENTION_TAG not in snapshot.versions[v].tags
        ]
        writes = [Write("tags", v, tags={RETENTION_TAG: KEPT}) for v in unmarked if v not in pruned]
        steps.append(Step((*writes, Write(MODEL_TAGS, None, tags={RETENTION_INDEX_TAG: "1"})), None))
    outcome: Outcome = {
        "name": snapshot.name,
        "repairs": list(notes),
        "keep_archived_versions": request.keep_archived_versions,
        "pruned": pruned,
        "protected": protected,
        "skipped": skipped,
        "champion_before": champion,
        "champion_after": champion,
    }
    if not pruned:
        return Plan(snapshot.name, tuple(notes), tuple(steps), outcome)
    resumed: list[str] = []
    if request.resume is not None:
        earlier = [str(v) for v in request.resume.get("versions") or []]
        # Every version of the earlier intent is finished here or was already (pruned, or gone: a
        # retention snapshot leaves pruned versions out); otherwise it stays pending for settle_prune.
        unfinished = [
            v
            for v in earlier
            if v in snapshot.versions
            and v not in pruned
            and snapshot.versions[v].tags.get(RETENTION_TAG) != PRUNED
        ]
        if earlier and not unfinished and set(earlier) & set(pruned):
            resumed = [v for v in pruned if v in earlier]
            outcome["resumed"] = {"key": request.resume.get("key"), "seq": request.resume.get("seq"),
                                  "versions": resumed}  # fmt: skip
    fresh = [v for v in pruned if v not in resumed]
    if resumed and request.resume is not None:  # (resumed versions come from request.resume)
        # The earlier run's intent, already recorded (pending): its versions are all tagged ``pruning``
        # or ``pruned``; finish their deletions and complete that event (apply appends nothing twice).
        event = {
            **{k: v for k, v in request.resume.items() if k not in ("seq", "status", "expect")},
            "settled": f"finished by the next retention run ({request.actor or '?'} at {request.at or '?'})",
        }
        steps.append(Step(_prune_writes(snapshot, resumed, request), event, intent=True))
    if fresh:
        keep = request.keep_archived_versions
        why = (
            f"archived beyond the newest {keep} (retention.keep_archived_versions)"
            if keep is not None
            else "left mid-prune by an earlier run"
        )
        reason = f"artifacts of {', '.join(f'v{v}' for v in fresh)} removed: {why}"
        if protected:
            reason += "; kept: " + ", ".join(f"v{v} ({w})" for v, w in protected.items())
        if skipped:
            reason += "; left alone: " + ", ".join(f"v{v} ({w})" for v, w in skipped.items())
        event = {
            "key": event_key(PRUNE, snapshot.name, request.key, fresh),
            "type": PRUNE,
            "model": snapshot.name,
            "version": None,
            "versions": fresh,
            "from_stage": None,
            "to_stage": None,
            "champion_before": champion,
            "champion_after": champion,
            "actor": request.actor,
            "at": request.at,
            "reason": reason,
            "changed": True,
            "airflow": dict(request.airflow) if request.airflow else None,
            "repairs": [],
        }
        steps.append(Step(_prune_writes(snapshot, fresh, request), event, intent=True))
    return Plan(snapshot.name, tuple(notes), tuple(steps), outcome)


def _prune_writes(snapshot: Snapshot, versions: list[str], request: PruneRequest) -> tuple[Write, ...]:
    """One pruning, in the order a crash can stop anywhere in: the ``pruning`` tag on each version (the
    intent on the registry's side; its history event is recorded pending before it), each version's
    artifact removals, then the ``pruned`` tags. Removing what is already gone is a no-op."""
    intent = {RETENTION_TAG: PRUNING, "pruning_started_at": request.at}
    writes = [
        Write("tags", v, tags=intent)
        for v in versions
        if snapshot.versions[v].tags.get(RETENTION_TAG) != PRUNING
    ]
    for version in versions:
        writes.extend(
            Write(DELETE_ARTIFACTS, version, value=uri) for uri in request.artifacts.get(version, ())
        )
    done = {RETENTION_TAG: PRUNED, "pruned_at": request.at, "pruned_by": request.actor}
    writes.extend(Write("tags", v, tags=done) for v in versions)
    return tuple(writes)


def settle_prune(
    event: Mapping[str, Any], versions: Mapping[str, VersionState | None]
) -> tuple[str, str] | None:
    """``(status, note)`` of a *pending* ``prune`` event whose writer died, from its versions as they are
    now (``None``: a version deleted since), or ``None`` to leave it pending: a version still tagged
    ``pruning`` has artifacts only a retention run can finish removing, and that run completes the
    event (:attr:`PruneRequest.resume`)."""
    status = {v: (s.tags.get(RETENTION_TAG) if s is not None else PRUNED) for v, s in versions.items()}
    if any(value == PRUNING for value in status.values()):
        return None
    if all(value == PRUNED for value in status.values()):
        return DONE_EVENT, "completed by the next write: every version had been pruned"
    pruned = ", ".join(f"v{v}" for v, value in status.items() if value == PRUNED)
    if not pruned:
        return NOT_APPLIED_EVENT, "completed by the next write: no version had been marked for pruning"
    return NOT_APPLIED_EVENT, f"completed by the next write: only {pruned} pruned (by a later run)"


def _pruned_refusal(snapshot: Snapshot, version: str, target: str | None) -> Refusal | None:
    """A version whose artifacts retention removed (or is removing) can serve no more."""
    status = snapshot.versions[version].tags.get(RETENTION_TAG) if version in snapshot.versions else None
    if status in (PRUNING, PRUNED) and target in (PRODUCTION, STAGING):
        return Refusal("version_pruned", {"name": snapshot.name, "version": version, "stage": target})
    return None
