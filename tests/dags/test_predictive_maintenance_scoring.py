"""predictive_maintenance_scoring under ``dag.test()``: predictions carry the champion's version.

A real (small) model is trained and registered twice; after each promotion, a scoring run writes
Parquet predictions made by the new champion, loaded by alias, and logs a summary to MLflow.
Triggering by the champion Asset is tested against a real scheduler in test_model_api.py.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAG_ID = "predictive_maintenance_scoring"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_DIR / "dags")).get_dag(DAG_ID)


@pytest.fixture
def trained_versions(mlflow_conn, client, model_name, tmp_path):
    """Two registered versions of ``model_name`` with real models behind them."""
    from cmms_mlflow import registry
    from cmms_mlflow.hooks import MlflowHook
    from cmms_mlflow.tracking import log_training_run
    from cmms_pm.batch import prepare_batch

    manifest = prepare_batch(
        source="synthetic", n_samples=2000, target_column="failure_within_7d",
        interval_start="2026-11-24T02:00:00+00:00", interval_end="2026-11-25T02:00:00+00:00",
        out_uri=str(tmp_path / "batch"),
    )  # fmt: skip
    hook = MlflowHook()
    versions = []
    with hook.session() as session_client:
        experiment_id = hook.get_or_create_experiment(session_client, f"scoring-{model_name}")
        for trees in (5, 10):
            trained = log_training_run(
                session_client, experiment_id=experiment_id, manifest=manifest,
                hyperparameters={"n_estimators": trees, "max_depth": 6}, tags={}, run_name=f"rf{trees}",
            )  # fmt: skip
            versions.append(
                str(
                    registry.register_version(
                        session_client, name=model_name, source=trained["model_uri"],
                        run_id=trained["run_id"], description="scoring test", tags={},
                    ).version
                )
            )  # fmt: skip
    return versions


def _promote(client, name, version, tmp_path):
    from cmms_mlflow.promotion import change_stage

    change_stage(
        client, name=name, version=version, stage="Production", lock_dir=tmp_path / "locks",
        actor="test", reason="scoring test", at="2026-11-26T00:00:00+00:00",
    )  # fmt: skip


def _score(dag, model_name: str, hour: int):
    conf = {"model_name": model_name, "n_units": 300, "risk_threshold": 0.5}
    run = dag.test(logical_date=datetime(2026, 11, 26, hour, tzinfo=UTC), run_conf=conf)
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return run


def _predictions(run, model_name: str):
    import pandas as pd

    from cmms_pm.batch import batch_uri

    root = os.environ["CMMS_DATA_ROOT"]
    return pd.read_parquet(f"{batch_uri(root, DAG_ID, run.run_id)}/{model_name}/predictions.parquet")


def test_scoring_after_a_promotion_uses_the_new_champion(dag, client, model_name, trained_versions, tmp_path):
    import pandas as pd

    v1, v2 = trained_versions
    _promote(client, model_name, v1, tmp_path)
    first = _score(dag, model_name, 11)
    predictions = _predictions(first, model_name)
    assert len(predictions) == 300 and predictions["equipment_id"].is_unique
    assert set(predictions["model_version"]) == {v1}
    assert set(predictions["model_name"]) == {model_name}
    assert (predictions["scored_at"] == pd.Timestamp(first.run_after)).all()
    assert predictions["failure_probability"].between(0, 1).all()

    _promote(client, model_name, v2, tmp_path)
    second = _score(dag, model_name, 12)
    assert set(_predictions(second, model_name)["model_version"]) == {v2}

    experiment = client.get_experiment_by_name("predictive_maintenance_scoring")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.model_name = '{model_name}'", order_by=["start_time"]
    )
    assert [r.data.tags["model_version"] for r in runs] == [v1, v2]
    latest = runs[-1]
    assert latest.data.metrics["units_scored"] == 300
    at_risk = int(_predictions(second, model_name)["at_risk"].sum())
    assert latest.data.metrics["units_at_risk"] == at_risk
    assert latest.data.tags["airflow.run_id"] == second.run_id
    assert {a.path for a in client.list_artifacts(latest.info.run_id, "scoring")} == {"scoring/summary.json"}
