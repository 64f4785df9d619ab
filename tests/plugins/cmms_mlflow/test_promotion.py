"""Guarded promotion: a challenger validated against an old champion is re-validated first."""

from __future__ import annotations

import pytest

from cmms_mlflow import registry
from cmms_mlflow.hooks import MlflowHook
from cmms_mlflow.promotion import promote_validated
from cmms_mlflow.tracking import log_training_run
from cmms_mlflow.validation import recorded_decision, validate_candidate

INTERVAL = ("2026-07-01T02:00:00+00:00", "2026-07-02T02:00:00+00:00")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from cmms_pm.batch import prepare_batch

    return prepare_batch(
        source="synthetic",
        n_samples=2000,
        target_column="failure_within_7d",
        interval_start=INTERVAL[0],
        interval_end=INTERVAL[1],
        out_uri=str(tmp_path_factory.mktemp("promotion-batch")),
    )


def _staged_version(hook, client, name: str, manifest: dict) -> str:
    experiment_id = hook.get_or_create_experiment(client, f"promotion-{name}")
    trained = log_training_run(
        client,
        experiment_id=experiment_id,
        manifest=manifest,
        hyperparameters={"n_estimators": 10, "max_depth": 6},
        tags={"data_interval_end": INTERVAL[1]},
        run_name="candidate",
    )
    version = registry.register_version(
        client,
        name=name,
        source=trained["model_uri"],
        run_id=trained["run_id"],
        description="candidate",
        tags={"data_interval_end": INTERVAL[1]},
    )
    registry.transition(client, name, str(version.version), "Staging")
    return str(version.version)


def test_a_challenger_is_revalidated_when_the_champion_changed_since_validation(
    mlflow_conn, model_name, manifest, tmp_path
):
    hook = MlflowHook()
    with hook.session() as client:
        first = _staged_version(hook, client, model_name, manifest)
        second = _staged_version(hook, client, model_name, manifest)
        holdout = manifest["splits"]["holdout"]["uri"]
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


def test_an_unchanged_champion_means_no_revalidation(mlflow_conn, model_name, manifest, tmp_path):
    hook = MlflowHook()
    with hook.session() as client:
        version = _staged_version(hook, client, model_name, manifest)
        record = validate_candidate(
            client,
            name=model_name,
            version=version,
            holdout_uri=manifest["splits"]["holdout"]["uri"],
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
