"""The registry planner: snapshot + request -> writes, repairs and history events (no MLflow)."""

from __future__ import annotations

import pytest

from cmms_pm import registry_plan as rp
from cmms_pm.registry_plan import ANY_CHAMPION, Request, Snapshot, VersionState, Write


def snap(stages: dict[str, str], aliases: dict[str, str] | None = None) -> Snapshot:
    return Snapshot(
        name="m",
        versions={v: VersionState(v, stage) for v, stage in stages.items()},
        aliases=dict(aliases or {}),
    )


def promote(version: str, expected=ANY_CHAMPION, **kwargs) -> Request:
    kwargs = {"actor": "alice", "at": "t", "reason": "better", "key": "k1"} | kwargs
    return Request(
        kind="promotion", version=version, stage="Production", expected_champion=expected, **kwargs
    )


def test_a_consistent_model_needs_no_repair():
    aliases = {"champion": "2", "previous_champion": "1", "challenger": "3"}
    writes, notes = rp.repair(snap({"1": "Archived", "2": "Production", "3": "Staging"}, aliases))
    assert (writes, notes) == ((), ())


def test_an_alias_left_on_the_replaced_champion_moves_forward_and_remembers_it():
    """The state a promotion killed between its stage change and its alias move leaves behind."""
    broken = snap({"1": "Archived", "2": "Production"}, {"champion": "1"})
    writes, notes = rp.repair(broken)
    assert writes == (Write("alias", "2", "champion"), Write("alias", "1", "previous_champion"))
    assert "alias champion pointed at v1 (Archived): moved to v2" in notes[0]
    assert rp.serving_version(broken) == ("2", notes)


def test_two_production_versions_keep_the_champion_and_archive_the_other():
    writes, notes = rp.repair(snap({"1": "Production", "2": "Production"}, {"champion": "1"}))
    assert writes == (Write("stage", "2", "Archived"),)
    assert notes == ("v2 was also in Production: archived (kept v1, the champion alias points at it)",)


def test_two_production_versions_without_alias_keep_the_newest():
    writes, _ = rp.repair(snap({"1": "Production", "2": "Production"}))
    assert writes == (Write("stage", "1", "Archived"), Write("alias", "2", "champion"))


def test_a_champion_alias_without_any_production_version_is_removed_not_invented():
    writes, notes = rp.repair(snap({"1": "Archived"}, {"champion": "1"}))
    assert writes == (Write("unalias", None, "champion"),)
    assert rp.serving_version(snap({"1": "Archived"}, {"champion": "1"}))[0] is None
    assert "no version is in Production" in notes[0]


def test_the_challenger_is_the_newest_staged_version():
    writes, notes = rp.repair(snap({"3": "Staging", "10": "Staging"}, {"challenger": "3"}))
    assert writes == (Write("alias", "10", "challenger"),)  # 10 > 3 numerically, not as text
    assert rp.repair(snap({"3": "Archived"}, {"challenger": "3"}))[0] == (
        Write("unalias", None, "challenger"),
    )


def test_previous_champion_never_names_the_champion():
    writes, _ = rp.repair(snap({"2": "Production"}, {"champion": "2", "previous_champion": "2"}))
    assert writes == (Write("unalias", None, "previous_champion"),)


def test_a_promotion_changes_the_stage_first_then_the_aliases_then_the_tags():
    plan = rp.plan(snap({"1": "Production", "2": "Staging"}, {"champion": "1", "challenger": "2"}),
                   promote("2", expected="1", tags={"promoted_by": "alice"}))  # fmt: skip
    assert plan.refusal is None and plan.repairs == ()
    assert [w.describe() for w in plan.writes] == [
        "v2 -> Production (archiving other Production versions)",
        "alias champion -> v2",
        "alias previous_champion -> v1",
        "tags on v1: ['replaced_by_version']",
        "alias challenger removed",
        "tags on v2: ['promoted_by', 'replaced_version']",
    ]
    (step,) = plan.steps
    assert not step.event_first
    keys = ("type", "version", "champion_before", "champion_after", "changed")
    assert {k: step.event[k] for k in keys} == {
        "type": "promotion", "version": "2", "champion_before": "1", "champion_after": "2", "changed": True,
    }  # fmt: skip
    assert plan.outcome["replaced"] == "1" and plan.outcome["unchanged"] is False


def test_a_stale_expected_champion_is_refused_and_only_repairs_are_written():
    plan = rp.plan(snap({"1": "Archived", "2": "Production", "3": "None"}, {"champion": "1"}),
                   promote("3", expected="1"))  # fmt: skip
    assert plan.refusal.code == "champion_changed"
    assert plan.refusal.details == {"name": "m", "expected": "1", "actual": "2"}
    (repair_step,) = plan.steps
    assert repair_step.event_first and repair_step.event["type"] == "repair"
    assert all(w.op == "alias" for w in plan.writes)


def test_promoting_the_champion_again_is_a_no_op_that_is_still_recorded_once():
    plan = rp.plan(snap({"1": "Production"}, {"champion": "1"}), promote("1", expected="7"))
    assert plan.refusal is None and plan.writes == ()
    assert plan.outcome["unchanged"] is True and plan.steps[0].event["changed"] is False


def test_the_champion_cannot_be_moved_out_of_production():
    plan = rp.plan(snap({"1": "Production"}, {"champion": "1"}),
                   Request(kind="stage_change", version="1", stage="Archived"))  # fmt: skip
    assert plan.refusal.code == "champion_cannot_leave_production"


def test_a_rejection_rerun_leaves_a_decided_version_alone():
    rejection = Request(kind="rejection", version="1", stage="Archived", from_stages=("None", "Staging"))
    plan = rp.plan(snap({"1": "Production"}, {"champion": "1"}), rejection)
    assert plan.refusal is None and plan.writes == () and plan.outcome["stage"] == "Production"


@pytest.mark.parametrize("stage", ["Gold", "production", None])
def test_unknown_or_unreachable_stages_and_versions_are_refused(stage):
    plan = rp.plan(snap({"1": "None"}), Request(kind="stage_change", version="1", stage=stage))
    assert plan.refusal.code == "unknown_stage"
    plan = rp.plan(snap({"1": "None"}), Request(kind="stage_change", version="9", stage="Staging"))
    assert plan.refusal.details == {"name": "m", "version": "9"}


def test_a_retry_recomputes_the_same_repair_event_key_and_another_request_a_new_one():
    broken = snap({"1": "Archived", "2": "Production"}, {"champion": "1"})
    first = rp.plan(broken, promote("2", key="k1")).steps[0].event["key"]
    retry = rp.plan(broken, promote("2", key="k1")).steps[0].event["key"]
    other = rp.plan(broken, promote("2", key="k2")).steps[0].event["key"]
    assert first == retry != other and first.isalnum()


def test_the_planner_imports_neither_mlflow_nor_airflow():
    import subprocess
    import sys

    code = "import sys, cmms_pm.registry_plan; print([m for m in ('mlflow', 'airflow') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_an_approval_records_tags_and_an_event_and_moves_nothing():
    state = snap({"1": "Production", "2": "Staging"}, {"champion": "1", "challenger": "2"})
    request = Request(
        kind="approval", version="2", actor="approver", at="t", reason="approved by approver: ok",
        key="a1", tags={"approval_status": "approved"},
    )  # fmt: skip
    plan = rp.plan(state, request)
    assert plan.refusal is None and plan.repairs == ()
    ((writes, event),) = [(step.writes, step.event) for step in plan.steps]
    assert writes == (Write("tags", "2", tags={"approval_status": "approved"}),)
    assert not any(w.op in ("stage", "alias", "unalias") for w in writes)
    assert (event["type"], event["from_stage"], event["to_stage"], event["changed"]) == (
        "approval", "Staging", "Staging", False,
    )  # fmt: skip
    assert (event["champion_before"], event["champion_after"], event["actor"]) == ("1", "1", "approver")


def test_an_approval_of_an_unknown_version_is_refused():
    plan = rp.plan(snap({"1": "Staging"}), Request(kind="approval", version="9", key="a2"))
    assert plan.refusal is not None and plan.refusal.code == "version_not_found"


def test_a_version_waiting_for_approval_cannot_be_promoted_around_the_request():
    asked = {"approval_status": "pending", "approval_requested_by": "airflow:pm_training/run_1"}
    versions = {"1": VersionState("1", "Production"), "2": VersionState("2", "Staging", asked)}
    state = Snapshot(name="m", versions=versions, aliases={"champion": "1", "challenger": "2"})
    plan = rp.plan(state, promote("2"))
    assert plan.refusal is not None and plan.refusal.code == "approval_pending"
    assert plan.refusal.details == {"name": "m", "version": "2", "requested_by": "airflow:pm_training/run_1"}
    assert plan.writes == ()
    # Once answered (the approval path records "approved" first), the promotion goes through; and a
    # pending version may still be archived by hand.
    answered = {**asked, "approval_status": "approved"}
    versions["2"] = VersionState("2", "Staging", answered)
    assert rp.plan(Snapshot("m", versions, {"champion": "1"}), promote("2")).refusal is None
    versions["2"] = VersionState("2", "Staging", asked)
    archive = Request(kind="stage_change", version="2", stage="Archived")
    assert rp.plan(Snapshot("m", versions, {"champion": "1"}), archive).refusal is None


# --- authority: approval-required specs, rejected and timed-out approvals ---------------------------


def _approval_snapshot(status: str | None) -> Snapshot:
    tags = {"approval_status": status, "approval_by": "jdoe"} if status else {}
    versions = {"1": VersionState("1", "Production"), "2": VersionState("2", "Archived", tags)}
    return Snapshot(name="m", versions=versions, aliases={"champion": "1"})


def _by(approver: bool, *, required: bool = True, override: str = "", step: bool = False) -> rp.Authority:
    return rp.Authority(
        spec="pm", approval_required=required, is_approver=approver, approvers=("jdoe", "asmith"),
        override_reason=override, approval_step=step,
    )  # fmt: skip


def test_only_an_approver_moves_a_model_of_an_approval_spec_to_production():
    refused = rp.plan(_approval_snapshot(None), promote("2", authority=_by(False), actor="mallory"))
    assert refused.refusal.code == "not_an_approver" and refused.writes == ()
    assert (
        refused.refusal.details["approvers"] == ["jdoe", "asmith"] and refused.refusal.details["spec"] == "pm"
    )
    allowed = rp.plan(_approval_snapshot(None), promote("2", authority=_by(True)))
    assert allowed.refusal is None and allowed.outcome["champion_after"] == "2"
    # Staging or archiving by hand needs no approver; a spec without approval needs none either.
    archive = Request(kind="stage_change", version="2", stage="Staging", authority=_by(False))
    assert rp.plan(_approval_snapshot(None), archive).refusal is None
    assert (
        rp.plan(_approval_snapshot(None), promote("2", authority=_by(False, required=False))).refusal is None
    )


@pytest.mark.parametrize("status", ["rejected", "timed_out"])
def test_a_rejected_or_timed_out_version_needs_an_approvers_explicit_override(status):
    snapshot = _approval_snapshot(status)
    for authority in (_by(True), _by(True, required=False), _by(False, required=False)):
        refused = rp.plan(snapshot, promote("2", authority=authority))
        assert refused.refusal.code == "approval_not_granted" and refused.writes == ()
        assert (
            refused.refusal.details["status"] == status and refused.refusal.details["answered_by"] == "jdoe"
        )
    # An override by someone who is not an approver is still refused.
    not_approver = rp.plan(
        snapshot, promote("2", authority=_by(False, override="we need it", required=False))
    )
    assert not_approver.refusal.code == "not_an_approver"

    overridden = rp.plan(
        snapshot, promote("2", actor="asmith", at="t9", authority=_by(True, override="recall fixed"))
    )
    assert overridden.refusal is None
    (step,) = overridden.steps
    assert step.event["override"] == {
        "of": status, "by": "asmith", "reason": "recall fixed", "approval_by": "jdoe",
        "approval_reason": None,
    }  # fmt: skip
    (tags,) = [w.tags for w in step.writes if w.op == "tags" and w.version == "2"]
    assert {k: v for k, v in tags.items() if k.startswith("approval_override")} == {
        "approval_override": status, "approval_override_by": "asmith", "approval_override_at": "t9",
        "approval_override_reason": "recall fixed",
    }  # fmt: skip
    assert overridden.outcome["override"]["of"] == status


def test_the_training_dags_promotion_of_an_approval_spec_needs_the_version_approved():
    for status in (None, "rejected", "timed_out", "pending"):
        plan = rp.plan(_approval_snapshot(status), promote("2", authority=_by(False, step=True)))
        assert plan.refusal is not None and plan.refusal.code in ("approval_missing", "approval_pending"), (
            status
        )
    approved = rp.plan(_approval_snapshot("approved"), promote("2", authority=_by(False, step=True)))
    assert approved.refusal is None
    # A spec without required approval: the step promotes what validation passed.
    assert (
        rp.plan(
            _approval_snapshot(None), promote("2", authority=_by(False, required=False, step=True))
        ).refusal
        is None
    )


def test_a_former_champion_is_recognised_so_re_promoting_it_is_a_rollback():
    versions = {
        "1": VersionState("1", "Archived", {"promoted_at": "t1", "replaced_by_version": "2"}),
        "2": VersionState("2", "Archived", {"promoted_at": "t2"}),
        "3": VersionState("3", "Production", {"promoted_at": "t3"}),
        "4": VersionState("4", "Archived", {"validation_status": "rejected"}),
        "5": VersionState("5", "Staging"),
    }
    snapshot = Snapshot("m", versions, {"champion": "3", "previous_champion": "2"})
    assert [v for v in versions if rp.former_champion(snapshot, v)] == ["1", "2"]
    assert not rp.former_champion(snapshot, "9")


# --- reruns and pending history events ----------------------------------------------------------------


def test_a_rerun_of_a_promotion_that_was_superseded_since_writes_nothing_and_says_so():
    snapshot = snap(
        {"1": "Archived", "2": "Archived", "3": "Production"}, {"champion": "3", "previous_champion": "2"}
    )
    recorded = {
        "type": "promotion",
        "to_stage": "Production",
        "changed": True,
        "status": "done",
        "seq": 4,
        "at": "t1",
    }
    # The rerun's request: the same key, the compare-and-set of its first validation (no champion).
    plan = rp.plan(snapshot, promote("1", expected=None, recorded=recorded))
    assert plan.refusal is None and plan.writes == () and plan.steps == ()
    assert plan.outcome | {} == {
        "name": "m", "repairs": [], "champion_before": "3", "version": "1", "previous_stage": "Archived",
        "stage": "Archived", "unchanged": True, "replaced": None, "champion_after": "3", "superseded": True,
        "superseded_by": "3", "promoted_at": "t1", "recorded_seq": 4,
    }  # fmt: skip
    # Without a recorded promotion of its own, the same request is the conflict it always was.
    assert rp.plan(snapshot, promote("1", expected=None)).refusal.code == "champion_changed"
    not_applied = {**recorded, "status": "not_applied"}
    assert (
        rp.plan(snapshot, promote("1", expected=None, recorded=not_applied)).refusal.code
        == "champion_changed"
    )


def test_a_request_that_writes_is_recorded_as_an_intent_and_settled_from_the_version():
    plan = rp.plan(snap({"1": "Production", "2": "Staging"}, {"champion": "1", "challenger": "2"}),
                   promote("2", tags={"promoted_by": "alice"}))  # fmt: skip
    (step,) = plan.steps
    assert step.intent and not step.event_first
    event = step.event
    assert event["expect"]["stage"] == "Production"
    assert event["expect"]["tag_keys"] == ["promoted_by", "replaced_version"]
    promoted = {"promoted_by": "alice", "replaced_version": "1"}
    assert rp.settle(event, VersionState("2", "Production", promoted))[0] == "done"
    status, note = rp.settle(event, VersionState("2", "Production", {}))  # died before its tags
    assert status == "done" and "stage change had taken effect" in note
    assert rp.settle(event, VersionState("2", "Staging", {}))[0] == "not_applied"  # died before the stage
    assert rp.settle(event, None)[0] == "not_applied"
    # An approval moves no stage: its tags decide.
    approval = Request(kind="approval", version="2", key="a", tags={"approval_status": "approved"})
    note_event = rp.plan(snap({"2": "Staging"}, {"challenger": "2"}), approval).steps[0].event
    assert rp.settle(note_event, VersionState("2", "Staging", {"approval_status": "approved"}))[0] == "done"
    assert (
        rp.settle(note_event, VersionState("2", "Staging", {"approval_status": "pending"}))[0]
        == "not_applied"
    )
    # A request that changes nothing is recorded after the fact, not as an intent.
    unchanged = rp.plan(snap({"1": "Production"}, {"champion": "1"}), promote("1"))
    assert not unchanged.steps[0].intent and "expect" not in unchanged.steps[0].event
