"""``execute(context)`` of plugins/cmms_mlflow/operators/scoring.py's operator on a real MLflow: the
spec's scoring source scored by the champion, predictions written, a summary run logged."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from datasets import ai4i_like
from operator_context import TaskInstance

from cmms_mlflow import registry
from cmms_mlflow.exceptions import BadDataError
from cmms_mlflow.links import MODEL_VERSION_URL_KEY, RUN_URL_KEY
from cmms_mlflow.operators import MlflowBatchScoreOperator


def score(pipeline, tmp_path, *, risk_threshold="None", run_id="scheduled__2026-07-02"):
    """Execute ``score_fleet`` of the session model's scoring DAG once; (result, predictions, ti)."""
    dag_id = pipeline.spec.scoring_dag_id
    ti = TaskInstance(dag_id=dag_id, run_id=run_id, task_id="score_fleet")
    context = {
        "ti": ti,
        "dag_run": SimpleNamespace(
            dag_id=dag_id,
            run_id=run_id,
            run_after=pd.Timestamp("2026-07-02T03:00:00+00:00"),
            run_type="manual",
        ),
        "triggering_asset_events": {},
        "params": {},
    }
    operator = MlflowBatchScoreOperator(
        task_id="score_fleet", spec=pipeline.spec.to_dict(), model_name=pipeline.model_name,
        risk_threshold=risk_threshold,
    )  # fmt: skip
    [result] = operator.execute(context)
    return result, pd.read_parquet(result["predictions_uri"]), ti


@pytest.fixture
def fleet(run, tmp_path):
    """The spec's scoring source (incoming/ai4i_fleet.csv under this test's data root): 300 machines."""
    ai4i_like(300, seed=44).to_csv(tmp_path / "data" / "incoming" / "ai4i_fleet.csv", index=False)
    return tmp_path


def test_the_champion_scores_the_fleet_at_its_own_threshold_and_logs_a_summary(pipeline, fleet, client):
    result, predictions, ti = score(pipeline, fleet)
    threshold = registry.decision_threshold(client.get_model_version(pipeline.model_name, pipeline.version))
    assert result["model_name"] == pipeline.model_name and result["model_version"] == pipeline.version
    assert result["units"] == len(predictions) == 300
    assert result["threshold"] == pytest.approx(threshold)
    assert result["at_risk"] == int(predictions["at_risk"].sum())
    assert (predictions["at_risk"] == (predictions["failure_probability"] >= threshold)).all()
    assert predictions["failure_probability"].between(0, 1).all()
    assert {"UDI", "Product ID", "contract_ok"} <= set(predictions.columns)
    summary = client.get_run(result["mlflow_run_id"])
    assert summary.info.status == "FINISHED"
    assert {RUN_URL_KEY, MODEL_VERSION_URL_KEY} <= set(ti.pushed)  # the task's extra links


def test_a_threshold_override_applies_and_a_bad_one_fails_without_retry(pipeline, fleet):
    result, predictions, _ = score(pipeline, fleet, risk_threshold="0.0", run_id="manual__override")
    assert result["threshold"] == 0.0 and result["at_risk"] == result["units"] == len(predictions)
    with pytest.raises(BadDataError, match="risk_threshold 'high'"):
        score(pipeline, fleet, risk_threshold="high", run_id="manual__bad")
