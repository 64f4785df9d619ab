"""Registry changes as snapshot → plan: what to write, what to repair, and the history that explains it.

Pure domain code (no MLflow, no Airflow), like :mod:`cmms_pm.policy`. The plugin reads one
:class:`Snapshot` of a registered model under its lock, calls :func:`plan` with a
:class:`Request`, and applies the returned :class:`Plan` in one place
(``cmms_mlflow.registry.apply``). A crash between two writes is harmless: the next write path
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
from typing import Any

from cmms_pm.approval import APPROVED, PENDING, REJECTED, TIMED_OUT

PRODUCTION, STAGING, ARCHIVED, NONE = "Production", "Staging", "Archived", "None"
STAGES = (NONE, STAGING, PRODUCTION, ARCHIVED)
CHAMPION, CHALLENGER, PREVIOUS_CHAMPION = "champion", "challenger", "previous_champion"
#: ``Request.expected_champion`` meaning "whatever the champion is now" (no compare-and-set).
ANY_CHAMPION = "*"

#: History event types (``Request.kind`` of a request, plus ``repair``).
EVENT_TYPES = ("promotion", "rejection", "rollback", "stage_change", "staging", "approval", "repair")
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
    """A registered model's versions (stage, tags) and aliases, read at one moment."""

    name: str
    versions: Mapping[str, VersionState]
    aliases: Mapping[str, str]

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


@dataclass(frozen=True)
class Plan:
    """Everything one write path does: repairs first, then the request (unless refused)."""

    name: str
    repairs: tuple[str, ...]
    steps: tuple[Step, ...]
    outcome: Mapping[str, Any]
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
    outcome: dict[str, Any] = {"name": snapshot.name, "repairs": list(notes), "champion_before": champion}
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
    outcome.update(version=version, previous_stage=current, replaced=None)

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
        stage=state.stages[version],
        unchanged=not changed,
        champion_after=state.champion(),
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


def _superseded(state: _State, request: Request, version: str, champion: str | None) -> dict[str, Any] | None:
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
    outcome: dict[str, Any],
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
        version=version, previous_stage=stage, stage=stage, unchanged=True, champion_after=champion
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
