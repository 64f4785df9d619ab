"""predictive_maintenance_scoring under ``dag.test()``: predictions carry the champion's version.

A real (small) model is trained, registered as two versions, and the second promoted over the
first: the scoring run writes Parquet predictions made by the champion, loaded by alias, and logs
a summary to MLflow. The Asset events and a scoring run after an API promotion are tested
against the real scheduler in test_model_api.py.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import training_provenance

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAG_ID = "predictive_maintenance_scoring"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_DIR / "dags")).get_dag(DAG_ID)


@pytest.fixture
def trained_versions(mlflow_conn, client, model_name, tmp_path, shipped_spec):
    """Two registered versions of ``model_name`` with a real model behind them (trained once)."""
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.registry import model_registry
    from cmms_mlflow.tracking.training_run import log_training_run
    from cmms_pm.batch import prepare_batch

    manifest = prepare_batch(
        spec=shipped_spec, frame=None, source="synthetic", n_samples=2000, target_column="failure_within_7d",
        interval_start="2026-11-24T02:00:00+00:00", interval_end="2026-11-25T02:00:00+00:00",
        out_uri=str(tmp_path / "batch"),
    )  # fmt: skip
    hook = MlflowHook()
    with hook.session() as session_client:
        experiment_id = hook.get_or_create_experiment(session_client, f"scoring-{model_name}")
        trained = log_training_run(
            session_client, experiment_id=experiment_id, manifest=manifest, spec=shipped_spec,
            estimator="random_forest", hyperparameters={"n_estimators": 10, "max_depth": 6},
            tags=training_provenance(shipped_spec), run_name="rf10",
        )  # fmt: skip
        # Two versions of the one trained model (both with its provenance): enough to see scoring follow.
        first = model_registry.register_version(
            session_client, name=model_name, source=trained["model_uri"], run_id=trained["run_id"],
            description="scoring", tags={},
        )  # fmt: skip
        second = session_client.create_model_version(
            model_name, trained["model_uri"], run_id=trained["run_id"]
        )
    return [str(first.version), str(second.version)]


def _promote(client, name, version, tmp_path):
    from cmms_mlflow.registry.promotion import change_stage

    change_stage(
        client, name=name, version=version, stage="Production", lock_dir=tmp_path / "locks",
        actor="test", reason="scoring test", at="2026-11-26T00:00:00+00:00",
    )  # fmt: skip


def _score(dag, model_name: str, hour: int):
    conf = {"model_name": model_name, "n_units": 300}  # no risk_threshold: the champion's own
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
    _promote(client, model_name, v2, tmp_path)
    client.set_model_version_tag(model_name, v2, "decision_threshold", "0.3")  # v1 has none: 0.5
    run = _score(dag, model_name, 11)
    predictions = _predictions(run, model_name)
    # The champion's own threshold flags the rows, and each row says which one; alerts have reasons.
    assert set(predictions["decision_threshold"]) == {0.3}
    assert (predictions["at_risk"] == (predictions["failure_probability"] >= 0.3)).all()
    assert predictions.loc[predictions["at_risk"], "reason_1"].notna().all()
    assert len(predictions) == 300 and predictions["equipment_id"].is_unique
    assert set(predictions["model_version"]) == {v2}
    assert set(predictions["model_name"]) == {model_name}
    assert (predictions["scored_at"] == pd.Timestamp(run.run_after)).all()
    assert predictions["failure_probability"].between(0, 1).all()
    # The fleet comes from the training generator: it fits the champion's data contract.
    assert predictions["contract_ok"].mean() > 0.95

    experiment = client.get_experiment_by_name("predictive_maintenance_scoring")
    (summary_run,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.model_name = '{model_name}'"
    )
    assert summary_run.data.tags["model_version"] == v2
    assert summary_run.data.tags["airflow.run_id"] == run.run_id
    assert summary_run.data.metrics["units_scored"] == 300
    assert summary_run.data.metrics["units_at_risk"] == int(predictions["at_risk"].sum())
    artifacts = {a.path for a in client.list_artifacts(summary_run.info.run_id, "scoring")}
    assert artifacts == {"scoring/summary.json"}
