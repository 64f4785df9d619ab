"""Guarded promotion: a challenger validated against an old champion is re-validated first."""

from __future__ import annotations

import pytest
from support import training_provenance

from cmms_mlflow.hooks.mlflow_hook import MlflowHook
from cmms_mlflow.registry import model_registry
from cmms_mlflow.registry.promotion import promote_validated
from cmms_mlflow.tracking.model_evaluation import recorded_decision, validate_candidate
from cmms_mlflow.tracking.training_run import log_training_run

DATA_END = "2026-04-01T02:00:00+00:00"  # the small_batch interval end


def _policy(min_improvement: float) -> dict:
    return {"metric": "f1", "threshold": 0.0, "min_improvement": min_improvement, "allow_promotion": True}


def _staged_version(hook, client, name: str, manifest: dict, spec) -> str:
    experiment_id = hook.get_or_create_experiment(client, f"promotion-{name}")
    trained = log_training_run(
        client,
        experiment_id=experiment_id,
        manifest=manifest,
        spec=spec,
        estimator="random_forest",
        hyperparameters={"n_estimators": 10, "max_depth": 6},
        tags={"data_interval_end": DATA_END, **training_provenance(spec)},
        run_name="candidate",
    )
    version = model_registry.register_version(
        client,
        name=name,
        source=trained["model_uri"],
        run_id=trained["run_id"],
        description="candidate",
        tags={"data_interval_end": DATA_END},
    )
    model_registry.transition(client, name, str(version.version), "Staging")
    return str(version.version)


def test_a_challenger_is_revalidated_when_the_champion_changed_since_validation(
    mlflow_conn, model_name, small_batch, shipped_spec, tmp_path
):
    hook = MlflowHook()
    with hook.session() as client:
        first = _staged_version(hook, client, model_name, small_batch, shipped_spec)
        second = _staged_version(hook, client, model_name, small_batch, shipped_spec)
        holdout = small_batch["splits"]["holdout"]["uri"]
        # Validated while there was no champion, and demanding +0.5 F1 over any champion.
        record = validate_candidate(
            client,
            name=model_name,
            version=second,
            holdout_uri=holdout,
            target=shipped_spec.target,
            policy=_policy(min_improvement=0.5),
        )
        assert record["decision"] == "promote" and record["champion_version"] is None
        # Meanwhile another run promoted the first candidate.
        model_registry.promote(client, model_name, first, expected_champion=None, lock_dir=tmp_path, audit={})

        outcome = promote_validated(client, name=model_name, record=record, lock_dir=tmp_path, audit={})

        assert outcome["revalidated"] is True and outcome["decision"] == "reject"
        assert "champion F1" in outcome["reason"]
        assert model_registry.aliases_of(client, model_name) == {"champion": first}
        assert client.get_model_version(model_name, second).current_stage == "Archived"
        final = recorded_decision(client, client.get_model_version(model_name, second).run_id)
        assert final["champion_version"] == first and final["decision"] == "reject"
        model_registry.check_invariants(client, model_name)


def test_an_unchanged_champion_means_no_revalidation(
    mlflow_conn, model_name, small_batch, shipped_spec, tmp_path
):
    hook = MlflowHook()
    with hook.session() as client:
        version = _staged_version(hook, client, model_name, small_batch, shipped_spec)
        record = validate_candidate(
            client,
            name=model_name,
            version=version,
            holdout_uri=small_batch["splits"]["holdout"]["uri"],
            target=shipped_spec.target,
            policy=_policy(min_improvement=0.0),
        )
        outcome = promote_validated(
            client, name=model_name, record=record, lock_dir=tmp_path, audit={"by": "t"}
        )
        assert (outcome["revalidated"], outcome["decision"]) == (False, "promote")
        assert model_registry.aliases_of(client, model_name) == {"champion": version}
        assert client.get_model_version(model_name, version).tags["by"] == "t"


# --- manual promotion and rollback (change_stage / rollback) --------------------------------------


def _manual(client, name, version, stage, tmp_path, **kwargs):
    from cmms_mlflow.registry.promotion import change_stage

    return change_stage(
        client,
        name=name,
        version=version,
        stage=stage,
        lock_dir=tmp_path,
        actor=kwargs.pop("actor", "alice"),
        reason=kwargs.pop("reason", f"{stage} by hand"),
        at=kwargs.pop("at", "2026-11-26T12:00:00+00:00"),
        **kwargs,
    )


def _state(client, name):
    versions = {str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    return versions, model_registry.aliases_of(client, name)


def _rollback(client, name, lock_dir, **who):
    """What the model_promotion DAG does for version=previous: resolve, then change the stage."""
    from cmms_mlflow.registry.promotion import change_stage, previous_champion

    target = previous_champion(client, name)
    champion = model_registry.get_champion(client, name)
    return change_stage(
        client, name=name, version=target, stage="Production", lock_dir=lock_dir,
        expected_champion=str(champion.version), kind="rollback", **who,
    )  # fmt: skip


def test_rollback_after_two_promotions_restores_the_previous_champion_with_audit_tags(
    client, register, model_name, tmp_path
):
    v1, v2 = register(model_name), register(model_name)
    _manual(client, model_name, v1, "Production", tmp_path, reason="first model")
    second = _manual(client, model_name, v2, "Production", tmp_path, actor="bob", reason="better F1")
    assert second["replaced"] == v1
    assert _state(client, model_name) == (
        {v1: "Archived", v2: "Production"},
        {"champion": v2, "previous_champion": v1},
    )

    outcome = _rollback(
        client,
        model_name,
        tmp_path,
        actor="carol",
        reason="v2 misfires on pumps",
        at="2026-11-26T13:00:00+00:00",
    )
    assert (outcome["version"], outcome["replaced"], outcome["kind"]) == (v1, v2, "rollback")
    assert _state(client, model_name) == (
        {v1: "Production", v2: "Archived"},
        {"champion": v1, "previous_champion": v2},
    )
    model_registry.check_invariants(client, model_name)
    tags = client.get_model_version(model_name, v1).tags
    assert tags["promoted_by"] == "carol"
    assert tags["promoted_at"] == "2026-11-26T13:00:00+00:00"
    assert tags["promotion_reason"] == "v2 misfires on pumps"
    assert tags["promotion_kind"] == "rollback"
    assert tags["replaced_version"] == v2
    assert client.get_model_version(model_name, v2).tags["replaced_by_version"] == v1


def test_the_champion_cannot_be_archived_or_staged_by_hand(client, register, model_name, tmp_path):
    from cmms_mlflow.exceptions import PromotionConflictError

    v1 = register(model_name)
    _manual(client, model_name, v1, "Production", tmp_path)
    for stage in ("Archived", "Staging"):
        with pytest.raises(PromotionConflictError, match="would leave no Production version"):
            _manual(client, model_name, v1, stage, tmp_path)
    assert _state(client, model_name)[0] == {v1: "Production"}


def test_a_stale_expected_champion_is_a_conflict_and_changes_nothing(client, register, model_name, tmp_path):
    from cmms_mlflow.exceptions import PromotionConflictError

    v1, v2, v3 = register(model_name), register(model_name), register(model_name)
    _manual(client, model_name, v1, "Production", tmp_path)
    _manual(client, model_name, v2, "Production", tmp_path, expected_champion=v1)
    with pytest.raises(PromotionConflictError, match="changed since validation"):
        _manual(client, model_name, v3, "Production", tmp_path, expected_champion=v1)
    assert str(model_registry.get_champion(client, model_name).version) == v2


def test_staging_and_archiving_by_hand_keep_aliases_in_step_and_are_tagged(
    client, register, model_name, tmp_path
):
    v1 = register(model_name)
    _manual(client, model_name, v1, "Staging", tmp_path, actor="dave", reason="try it")
    assert _state(client, model_name) == ({v1: "Staging"}, {"challenger": v1})
    _manual(client, model_name, v1, "Archived", tmp_path, actor="dave", reason="not good enough")
    assert _state(client, model_name) == ({v1: "Archived"}, {})
    tags = client.get_model_version(model_name, v1).tags
    assert (tags["stage_changed_by"], tags["stage_change_reason"], tags["stage_changed_from"]) == (
        "dave", "not good enough", "Staging",
    )  # fmt: skip


def test_unknown_models_versions_and_missing_previous_champion_raise_typed_errors(
    client, register, model_name, tmp_path
):
    from cmms_mlflow.exceptions import ModelNotFoundError, PromotionConflictError

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        _manual(client, model_name, "1", "Production", tmp_path)
    v1 = register(model_name)
    with pytest.raises(ModelNotFoundError, match="no version '99'"):
        _manual(client, model_name, "99", "Production", tmp_path)
    _manual(client, model_name, v1, "Production", tmp_path)
    with pytest.raises(PromotionConflictError, match="no previous champion"):
        _rollback(client, model_name, tmp_path, actor="a", reason="r", at="t")


def test_promoting_a_former_champion_by_hand_is_recorded_as_a_rollback(
    client, register, model_name, tmp_path
):
    """What the Models page and the promote route send (kind manual) for the previous champion, or any
    archived version that once served, is a rollback in the tags and the history."""
    from cmms_mlflow.registry import history

    v1, v2, v3, v4 = (register(model_name) for _ in range(4))
    for version in (v1, v2, v3):
        _manual(client, model_name, version, "Production", tmp_path)
    back = _manual(client, model_name, v2, "Production", tmp_path, reason="rollback: v3 misfires")  # previous
    older = _manual(client, model_name, v1, "Production", tmp_path, reason="back to the first")  # archived
    fresh = _manual(client, model_name, v4, "Production", tmp_path, reason="never served before")
    assert (back["kind"], older["kind"], fresh["kind"]) == ("rollback", "rollback", "manual")
    assert client.get_model_version(model_name, v1).tags["promotion_kind"] == "rollback"
    events = history.read(client, model_name, limit=3)
    assert [(e["type"], e["version"]) for e in events] == [
        ("promotion", v4),
        ("rollback", v1),
        ("rollback", v2),
    ]


def _refused_approval(client, model_name, version, status):
    model_registry.set_tags(client, model_name, version, {"approval_status": status, "approval_by": "jdoe"})


def test_an_approval_spec_is_promoted_by_hand_only_by_an_approver_and_a_no_only_with_a_recorded_override(
    client, register, model_name, tmp_path
):
    from cmms_mlflow.exceptions import ApprovalAuthorityError, PromotionConflictError
    from cmms_mlflow.registry import history
    from cmms_pm.registry_plan import Authority

    def by(approver: bool, override: str = "") -> Authority:
        return Authority(
            spec="pm",
            approval_required=True,
            is_approver=approver,
            approvers=("jdoe",),
            override_reason=override,
        )

    v1, v2, v3 = register(model_name), register(model_name), register(model_name)
    _manual(client, model_name, v1, "Production", tmp_path, authority=by(True))
    before = _state(client, model_name)
    with pytest.raises(ApprovalAuthorityError, match="only its approvers: jdoe may promote or roll back"):
        _manual(client, model_name, v2, "Production", tmp_path, actor="mallory", authority=by(False))
    _refused_approval(client, model_name, v3, "timed_out")
    with pytest.raises(PromotionConflictError, match="was timed out by jdoe at its approval step"):
        _manual(client, model_name, v3, "Production", tmp_path, actor="jdoe", authority=by(True))
    assert _state(client, model_name) == before
    # Archiving or staging needs no approver.
    _manual(client, model_name, v2, "Staging", tmp_path, actor="mallory", authority=by(False))

    outcome = _manual(
        client, model_name, v3, "Production", tmp_path, actor="jdoe", reason="holdout re-checked by hand",
        authority=by(True, override="holdout re-checked by hand"),
    )  # fmt: skip
    assert outcome["override"]["of"] == "timed_out" and model_registry.get_champion(
        client, model_name
    ).version == int(v3)
    tags = client.get_model_version(model_name, v3).tags
    assert (tags["approval_status"], tags["approval_override"], tags["approval_override_by"]) == (
        "timed_out", "timed_out", "jdoe",
    )  # fmt: skip
    assert tags["approval_override_reason"] == "holdout re-checked by hand"
    (event,) = history.read(client, model_name, limit=1)
    assert event["override"]["of"] == "timed_out" and event["override"]["by"] == "jdoe"


def test_a_rerun_of_a_promotion_superseded_since_ends_green_and_changes_nothing(
    client, register, model_name, tmp_path
):
    """A cleared backfill run's promote_model: its promotion happened, later runs replaced its
    champion; the rerun must not fail with a conflict, nor move anything back."""
    from cmms_mlflow.registry import history

    v1, v2, v3 = register(model_name), register(model_name), register(model_name)
    model_registry.transition(client, model_name, v1, "Staging")
    record = {
        "challenger_version": v1, "champion_version": None, "decision": "promote", "reason": "F1 0.9 >= 0.8",
        "holdout_uri": "/nowhere/holdout.parquet", "target": "y", "thresholds": _policy(0.0),
    }  # fmt: skip
    audit = {"promoted_at": "2026-05-01T02:00:00+00:00", "promoted_by": "airflow:pm/backfill__1"}
    first = promote_validated(
        client, name=model_name, record=record, lock_dir=tmp_path, audit=audit, key="K1"
    )
    assert first["stage"] == "Production" and not first.get("superseded")
    _manual(client, model_name, v2, "Production", tmp_path)
    _manual(client, model_name, v3, "Production", tmp_path)
    before = (
        _state(client, model_name),
        {v: client.get_model_version(model_name, v).tags for v in (v1, v2, v3)},
    )
    events_before = history.read(client, model_name, limit=50)

    again = promote_validated(
        client, name=model_name, record=record, lock_dir=tmp_path, audit=audit, key="K1"
    )
    assert again["superseded"] is True and again["superseded_by"] == v3 and again["unchanged"] is True
    assert again["decision"] == "promote" and again["revalidated"] is False
    assert again["reason"].startswith("already promoted by this step") and f"by v{v3}" in again["reason"]
    after = (
        _state(client, model_name),
        {v: client.get_model_version(model_name, v).tags for v in (v1, v2, v3)},
    )
    assert after == before and history.read(client, model_name, limit=50) == events_before
