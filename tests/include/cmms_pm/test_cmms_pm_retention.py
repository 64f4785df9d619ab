"""Retention, the pure parts: which archived versions lose their artifacts (the prune planner) and which
run folders under the data root go (cmms_pm.retention). No MLflow, no Airflow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cmms_pm import registry_plan as rp
from cmms_pm import retention
from cmms_pm.registry_plan import PruneRequest, Request, Snapshot, VersionState, Write


def snap(stages: dict[str, str], aliases: dict[str, str] | None = None, tags=None) -> Snapshot:
    tags = tags or {}
    return Snapshot(
        name="m",
        versions={v: VersionState(v, stage, dict(tags.get(v, {}))) for v, stage in stages.items()},
        aliases=dict(aliases or {}),
    )


def _year(archived: int) -> Snapshot:
    """v1..v<archived> archived, then the champion, a pending version and the challenger; v3 is the
    previous champion (the rollback target), far behind the newest archived ones."""
    stages = {str(v): "Archived" for v in range(1, archived + 1)}
    champion, pending, challenger = (str(archived + i) for i in (1, 2, 3))
    stages.update({champion: "Production", pending: "Staging", challenger: "Staging"})
    return snap(
        stages,
        {"champion": champion, "previous_champion": "3", "challenger": challenger},
        {champion: {"replaced_version": "3"}, pending: {"approval_status": "pending"}},
    )


def test_only_archived_versions_beyond_the_newest_keep_are_candidates_and_the_rollback_target_never():
    candidates, protected = rp.prune_candidates(_year(10), keep=2)
    # v10, v9 are the newest two archived; v3 is the previous champion; v11-v13 are not archived.
    assert candidates == ["8", "7", "6", "5", "4", "2", "1"]
    assert protected == {"3": "the previous champion (rollback target)"}


def test_keep_zero_prunes_every_archived_version_but_the_protected_ones():
    snapshot = snap(
        {"1": "Archived", "2": "Archived", "3": "Archived", "4": "Production"},
        {"champion": "4"},
        {"4": {"replaced_version": "2"}, "3": {"approval_status": "pending"}},
    )
    candidates, protected = rp.prune_candidates(snapshot, keep=0)
    assert candidates == ["1"]
    assert protected == {
        "3": "waiting for approval",
        "2": "the previous champion (the version the champion replaced)",
    }


def test_no_keep_setting_prunes_nothing_but_finishes_a_version_left_mid_prune():
    snapshot = _year(10)
    assert rp.prune_candidates(snapshot, keep=None) == ([], {})
    half = snap({"1": "Archived", "2": "Archived"}, tags={"1": {rp.RETENTION_TAG: rp.PRUNING}})
    assert rp.prune_candidates(half, keep=None) == (["1"], {})
    assert rp.prune_candidates(half, keep=5)[0] == ["1"]  # even when the policy would keep it now


def test_pruned_versions_are_not_pruned_again():
    snapshot = snap(
        {"1": "Archived", "2": "Archived", "3": "Archived"}, tags={"1": {rp.RETENTION_TAG: rp.PRUNED}}
    )
    assert rp.prune_candidates(snapshot, keep=1)[0] == ["2"]


def test_the_plan_records_its_event_pending_then_marks_deletes_and_tags_pruned_in_one_intent_step():
    snapshot = snap({"1": "Archived", "2": "Archived", "3": "Archived", "4": "Production"}, {"champion": "4"})
    request = PruneRequest(
        keep_archived_versions=1,
        artifacts={"2": ("file:///a/m-2", "file:///a/r2/evaluation"), "1": ("file:///a/m-1",)},
        actor="airflow:d/r",
        at="2026-12-01T02:00:00+00:00",
        key="k",
    )
    plan = rp.plan_prune(snapshot, request)
    (step,) = plan.steps
    # History intent first: apply records the event pending before the first write, completes it after.
    assert step.intent and not step.event_first
    intent = {rp.RETENTION_TAG: rp.PRUNING, "pruning_started_at": request.at}
    done = {rp.RETENTION_TAG: rp.PRUNED, "pruned_at": request.at, "pruned_by": "airflow:d/r"}
    assert step.writes == (
        Write("tags", "2", tags=intent),
        Write("tags", "1", tags=intent),
        Write(rp.DELETE_ARTIFACTS, "2", "file:///a/m-2"),
        Write(rp.DELETE_ARTIFACTS, "2", "file:///a/r2/evaluation"),
        Write(rp.DELETE_ARTIFACTS, "1", "file:///a/m-1"),
        Write("tags", "2", tags=done),
        Write("tags", "1", tags=done),
    )
    assert step.event["type"] == "prune" and step.event["versions"] == ["2", "1"]
    assert step.event["champion_before"] == step.event["champion_after"] == "4"
    assert "artifacts of v2, v1 removed" in step.event["reason"]
    assert plan.outcome["pruned"] == ["2", "1"]
    assert "prune" in rp.EVENT_TYPES


def test_a_rerun_after_a_crash_skips_the_intent_and_finishes_the_version():
    half = snap({"1": "Archived", "2": "Archived", "3": "Production"}, {"champion": "3"},
                {"1": {rp.RETENTION_TAG: rp.PRUNING}})  # fmt: skip
    plan = rp.plan_prune(half, PruneRequest(keep_archived_versions=None, artifacts={"1": ("file:///a/m-1",)}))
    assert [w.op for w in plan.writes] == [rp.DELETE_ARTIFACTS, "tags"]
    assert "left mid-prune by an earlier run" in plan.steps[-1].event["reason"]


def test_a_rerun_completes_the_intent_the_killed_run_left_pending_instead_of_recording_another():
    half = snap({"1": "Archived", "2": "Archived", "3": "Archived", "4": "Production"}, {"champion": "4"},
                {"1": {rp.RETENTION_TAG: rp.PRUNING}, "2": {rp.RETENTION_TAG: rp.PRUNING}})  # fmt: skip
    earlier = {"key": "e1", "seq": 7, "status": rp.PENDING_EVENT, "type": "prune", "versions": ["2", "1"],
               "reason": "artifacts of v2, v1 removed: archived beyond the newest 1"}  # fmt: skip
    request = PruneRequest(keep_archived_versions=0, artifacts={v: (f"file:///a/m-{v}",) for v in "123"},
                           actor="airflow:d/next", at="t2", key="k2", resume=earlier)  # fmt: skip
    plan = rp.plan_prune(half, request)
    resumed, fresh = plan.steps
    assert resumed.intent and resumed.event["key"] == "e1" and resumed.event["versions"] == ["2", "1"]
    assert "finished by the next retention run (airflow:d/next at t2)" in resumed.event["settled"]
    assert [(w.op, w.version) for w in resumed.writes] == [
        (rp.DELETE_ARTIFACTS, "2"), (rp.DELETE_ARTIFACTS, "1"), ("tags", "2"), ("tags", "1"),
    ]  # fmt: skip
    assert fresh.event["versions"] == ["3"] and fresh.event["key"] != "e1"
    assert plan.outcome["resumed"] == {"key": "e1", "seq": 7, "versions": ["2", "1"]}
    # A version of the earlier intent this run does not finish (now skipped): that intent stays pending.
    skipping = PruneRequest(keep_archived_versions=0, artifacts={"1": ("file:///a/m-1",)},
                            skipped={"2": "foreign"}, key="k3", resume=earlier)  # fmt: skip
    (only,) = rp.plan_prune(half, skipping).steps
    assert only.event["key"] != "e1" and only.event["versions"] == ["3", "1"]


def test_a_pending_prune_event_settles_from_its_versions_retention_tags():
    event = {"type": "prune", "versions": ["2", "1"]}

    def states(**tags):
        return {v: VersionState(v, "Archived", {rp.RETENTION_TAG: t} if t else {}) for v, t in tags.items()}

    # Killed after marking: only a retention run can finish removing the artifacts; it stays pending.
    assert rp.settle_prune(event, states(**{"2": rp.PRUNED, "1": rp.PRUNING})) is None
    status, note = rp.settle_prune(event, states(**{"2": rp.PRUNED, "1": rp.PRUNED}))
    assert status == rp.DONE_EVENT and "every version had been pruned" in note
    assert rp.settle_prune(event, {"2": None, "1": states(**{"1": rp.PRUNED})["1"]})[0] == rp.DONE_EVENT
    # Killed after recording the intent, before the first tag: nothing happened.
    status, note = rp.settle_prune(event, states(**{"2": rp.KEPT, "1": rp.KEPT}))
    assert status == rp.NOT_APPLIED_EVENT and "no version had been marked" in note
    status, note = rp.settle_prune(event, states(**{"2": rp.PRUNED, "1": rp.KEPT}))
    assert status == rp.NOT_APPLIED_EVENT and "only v2 pruned" in note


def test_nothing_to_prune_plans_no_write_and_no_event():
    plan = rp.plan_prune(_year(10), PruneRequest(keep_archived_versions=10))
    assert plan.steps == () and plan.outcome["pruned"] == []


def test_skipped_versions_are_left_alone_and_named_in_the_event():
    snapshot = snap({"1": "Archived", "2": "Archived", "3": "Archived"})
    request = PruneRequest(
        keep_archived_versions=1, artifacts={"1": ("file:///x",)}, skipped={"2": "foreign"}
    )
    plan = rp.plan_prune(snapshot, request)
    assert {w.version for w in plan.writes} == {"1"}
    assert plan.outcome["skipped"] == {"2": "foreign"}
    assert "left alone: v2 (foreign)" in plan.steps[-1].event["reason"]


def test_pruning_repairs_first_like_every_write_path():
    broken = snap({"1": "Archived", "2": "Archived", "3": "Production"}, {"champion": "2"})
    plan = rp.plan_prune(broken, PruneRequest(keep_archived_versions=0, artifacts={"1": ("file:///x",)}))
    assert plan.repairs and plan.steps[0].event["type"] == "repair" and plan.steps[0].event_first
    # The repair made v2 the previous champion: it is protected, v1 is pruned.
    assert plan.outcome["pruned"] == ["1"] and "2" in plan.outcome["protected"]


@pytest.mark.parametrize("stage", ["Production", "Staging"])
def test_a_pruned_version_cannot_be_promoted_or_staged(stage):
    snapshot = snap(
        {"1": "Archived", "2": "Production"}, {"champion": "2"}, {"1": {rp.RETENTION_TAG: rp.PRUNED}}
    )
    plan = rp.plan(snapshot, Request(kind="promotion", version="1", stage=stage, key="k"))
    assert plan.refusal == rp.Refusal("version_pruned", {"name": "m", "version": "1", "stage": stage})
    assert plan.writes == ()


def test_a_negative_keep_is_refused():
    with pytest.raises(ValueError, match="keep_archived_versions must be 0 or more"):
        rp.prune_candidates(_year(10), keep=-1)


# --- run folders ----------------------------------------------------------------------------------


def _folder(root: Path, dag: str, name: str, start: str, end: str, *, run_id: str | None, record=True) -> str:
    folder = root / dag / name
    folder.mkdir(parents=True)
    (folder / "train.parquet").write_bytes(b"x" * 10)
    (folder / "nested").mkdir()
    (folder / "nested" / "predictions.parquet").write_bytes(b"y")
    data = {"data_interval_start": start, "data_interval_end": end}
    if record:
        data |= {"run_id": run_id, "run_after": end, "kind": "batch", "dag_id": dag}
    (folder / (retention.RUN_RECORD if record else retention.MANIFEST)).write_text(json.dumps(data))
    return str(folder)


def _day(n: int) -> tuple[str, str]:
    return f"2026-03-{n:02d}T02:00:00+00:00", f"2026-03-{n + 1:02d}T02:00:00+00:00"


def test_folders_are_ordered_by_their_data_interval_not_by_their_names(tmp_path):
    # Names sort the other way round from the intervals; a manifest-only folder (before records) too.
    _folder(tmp_path, "d", "a", *_day(9), run_id="r9")
    _folder(tmp_path, "d", "b", *_day(3), run_id="r3")
    _folder(tmp_path, "d", "c", *_day(5), run_id=None, record=False)
    (tmp_path / "d" / "stray").mkdir()
    (tmp_path / "d" / "loose-file").write_text("x")
    found, unknown = retention.run_folders(str(tmp_path), "d")
    assert [Path(f.uri).name for f in found] == ["b", "c", "a"]
    assert [f.described_by for f in found] == [retention.RUN_RECORD, retention.MANIFEST, retention.RUN_RECORD]
    assert unknown == [str(tmp_path / "d" / "stray")]
    assert retention.run_folders(str(tmp_path), "no-such-dag") == ([], [])


def test_the_plan_keeps_the_newest_and_never_the_running_or_an_active_run(tmp_path):
    for day in range(1, 7):
        _folder(tmp_path, "d", f"run{day}", *_day(day), run_id=f"r{day}")
    found, _ = retention.run_folders(str(tmp_path), "d")
    # A backfill of an old interval is the running run (r1); r2 belongs to another active run.
    plan = retention.plan_folders(
        found, 2, own_run_id="r1", own_uri="elsewhere", is_active=lambda r: r == "r2", others_active=True
    )
    names = lambda uris: [Path(u).name for u in uris]  # noqa: E731
    assert names(plan.remove) == ["run4", "run3"]
    assert names(plan.kept) == ["run6", "run5", "run2", "run1"]
    assert plan.protected == {
        str(tmp_path / "d" / "run2"): "its run 'r2' is still active",
        str(tmp_path / "d" / "run1"): "the running run's own folder",
    }


def test_folders_without_a_run_id_wait_while_other_runs_are_active(tmp_path):
    _folder(tmp_path, "d", "old", *_day(1), run_id=None, record=False)
    _folder(tmp_path, "d", "new", *_day(2), run_id="r2")
    found, _ = retention.run_folders(str(tmp_path), "d")
    common = {"own_run_id": "r2", "own_uri": "", "is_active": lambda r: False}
    assert retention.plan_folders(found, 1, others_active=True, **common).remove == ()
    assert retention.plan_folders(found, 1, others_active=False, **common).remove == (
        str(tmp_path / "d" / "old"),
    )


def test_keep_batches_below_one_is_refused_and_none_keeps_everything(tmp_path):
    _folder(tmp_path, "d", "a", *_day(1), run_id="r1")
    found, _ = retention.run_folders(str(tmp_path), "d")
    common = {"own_run_id": "x", "own_uri": "", "is_active": lambda r: False, "others_active": False}
    with pytest.raises(ValueError, match="the running batch is needed"):
        retention.plan_folders(found, 0, **common)
    assert retention.plan_folders(found, None, **common).remove == ()


def test_a_removal_killed_halfway_is_finished_by_the_next_run(tmp_path, monkeypatch):
    for day in (1, 2):
        _folder(tmp_path, "d", f"run{day}", *_day(day), run_id=f"r{day}")
    victim = tmp_path / "d" / "run1"
    real_delete = retention._delete
    deleted: list[str] = []

    def killed_after_first_file(delete, path):
        if deleted:
            raise KeyboardInterrupt("killed")  # the process dies between two deletions
        deleted.append(path)
        return real_delete(delete, path)

    monkeypatch.setattr(retention, "_delete", killed_after_first_file)
    with pytest.raises(KeyboardInterrupt):
        retention.remove_folder(str(victim))
    monkeypatch.undo()
    # The data went first; the record and the intent marker are still there.
    assert deleted == [str(victim / "nested" / "predictions.parquet")]
    assert (victim / retention.RUN_RECORD).exists() and (victim / retention.REMOVING).exists()

    found, _ = retention.run_folders(str(tmp_path), "d")
    assert [f.removing for f in found] == [True, False]
    # keep=5 would keep both, and the next run is r1's own retention: a half-removed folder goes anyway.
    plan = retention.plan_folders(found, 5, own_run_id="r2", own_uri="", is_active=lambda r: True,
                                  others_active=True)  # fmt: skip
    assert plan.remove == (str(victim),)
    retention.remove_folder(str(victim))
    assert not victim.exists() and (tmp_path / "d" / "run2").exists()
    retention.remove_folder(str(victim))  # gone already: a no-op


def test_a_folder_left_with_only_its_removal_marker_is_still_found(tmp_path):
    folder = tmp_path / "d" / "x"
    folder.mkdir(parents=True)
    (folder / retention.REMOVING).write_text("")
    found, unknown = retention.run_folders(str(tmp_path), "d")
    assert [f.removing for f in found] == [True] and unknown == []


def test_an_unreadable_record_falls_back_to_the_manifest_or_leaves_the_folder_alone(tmp_path):
    folder = Path(_folder(tmp_path, "d", "a", *_day(1), run_id="r1"))
    (folder / retention.RUN_RECORD).write_text("{not json")
    assert retention.run_folders(str(tmp_path), "d") == ([], [str(folder)])
    (folder / retention.MANIFEST).write_text(json.dumps({"data_interval_start": _day(1)[0],
                                                         "data_interval_end": _day(1)[1]}))  # fmt: skip
    found, _ = retention.run_folders(str(tmp_path), "d")
    assert found[0].described_by == retention.MANIFEST and found[0].run_id is None


def test_a_symlinked_run_folder_is_removed_as_a_link_not_followed(tmp_path):
    """A link planted under the data root must not make retention delete what it points at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    _folder(tmp_path / "root", "d", "run1", *_day(1), run_id="r1")
    os.symlink(outside, tmp_path / "root" / "d" / "run1" / "link")
    retention.remove_folder(str(tmp_path / "root" / "d" / "run1"))
    assert (outside / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "root" / "d" / "run1").exists()


def test_a_symlink_in_place_of_a_run_folder_is_not_followed(tmp_path):
    outside = Path(_folder(tmp_path / "elsewhere", "d", "victim", *_day(1), run_id="r1"))
    (tmp_path / "root" / "d").mkdir(parents=True)
    os.symlink(outside, tmp_path / "root" / "d" / "planted")
    found, unknown = retention.run_folders(str(tmp_path / "root"), "d")
    assert found == [] and unknown == [str(tmp_path / "root" / "d" / "planted")]
    retention.remove_folder(str(tmp_path / "root" / "d" / "planted"))  # even if asked: the link goes
    assert (outside / "train.parquet").exists() and not (tmp_path / "root" / "d" / "planted").exists()
