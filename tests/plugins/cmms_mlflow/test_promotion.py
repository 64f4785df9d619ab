"""Guarded promotion: a challenger validated against an old champion is re-validated first."""

from __future__ import annotations

from cmms_mlflow import registry
from cmms_mlflow.hooks import MlflowHook
from cmms_mlflow.promotion import promote_validated
from cmms_mlflow.tracking import log_training_run
from cmms_mlflow.validation import recorded_decision, validate_candidate

DATA_END = "2026-04-01T02:00:00+00:00"  # the small_batch interval end


def _staged_version(hook, client, name: str, manifest: dict) -> str:
    experiment_id = hook.get_or_create_experiment(client, f"promotion-{name}")
    trained = log_training_run(
        client,
        experiment_id=experiment_id,
        manifest=manifest,
        hyperparameters={"n_estimators": 10, "max_depth": 6},
        tags={"data_interval_end": DATA_END},
        run_name="candidate",
    )
    version = registry.register_version(
        client,
        name=name,
        source=trained["model_uri"],
        run_id=trained["run_id"],
        description="candidate",
        tags={"data_interval_end": DATA_END},
    )
    registry.transition(client, name, str(version.version), "Staging")
    return str(version.version)


def test_a_challenger_is_revalidated_when_the_champion_changed_since_validation(
    mlflow_conn, model_name, small_batch, tmp_path
):
    hook = MlflowHook()
    with hook.session() as client:
        first = _staged_version(hook, client, model_name, small_batch)
        second = _staged_version(hook, client, model_name, small_batch)
        holdout = small_batch["splits"]["holdout"]["uri"]
        # Validated while there was no champion, and demanding +0.5 F1 over any champion.
        record = validate_candidate(
            client,
            name=model_name,
            version=second,
            holdout_uri=holdout,
            f1_threshold=0.0,
            min_improvement=0.5,
            allow_promotion=True,
        )
        assert record["decision"] == "promote" and record["champion_version"] is None
        # Meanwhile another run promoted the first candidate.
        registry.promote(client, model_name, first, expected_champion=None, lock_dir=tmp_path, audit={})

        outcome = promote_validated(client, name=model_name, record=record, lock_dir=tmp_path, audit={})

        assert outcome["revalidated"] is True and outcome["decision"] == "reject"
        assert "champion F1" in outcome["reason"]
        assert registry.aliases_of(client, model_name) == {"champion": first}
        assert client.get_model_version(model_name, second).current_stage == "Archived"
        final = recorded_decision(client, client.get_model_version(model_name, second).run_id)
        assert final["champion_version"] == first and final["decision"] == "reject"
        registry.check_invariants(client, model_name)


def test_an_unchanged_champion_means_no_revalidation(mlflow_conn, model_name, small_batch, tmp_path):
    hook = MlflowHook()
    with hook.session() as client:
        version = _staged_version(hook, client, model_name, small_batch)
        record = validate_candidate(
            client,
            name=model_name,
            version=version,
            holdout_uri=small_batch["splits"]["holdout"]["uri"],
            f1_threshold=0.0,
            min_improvement=0.0,
            allow_promotion=True,
        )
        outcome = promote_validated(
            client, name=model_name, record=record, lock_dir=tmp_path, audit={"by": "t"}
        )
        assert (outcome["revalidated"], outcome["decision"]) == (False, "promote")
        assert registry.aliases_of(client, model_name) == {"champion": version}
        assert client.get_model_version(model_name, version).tags["by"] == "t"
