"""``execute(context)`` of plugins/cmms_mlflow/operators/scoring_ops.py's operator on a real MLflow: the
spec's scoring source scored by the champion, predictions written, a summary run logged."""

from __future__ import annotations

import pytest

from cmms_mlflow.exceptions import BadDataError
from cmms_mlflow.integrations.links import MODEL_VERSION_URL_KEY, RUN_URL_KEY
from cmms_mlflow.operators import MlflowBatchScoreOperator
from cmms_mlflow.registry import model_registry


def test_the_champion_scores_the_fleet_at_its_own_threshold_and_logs_a_summary(pipeline, score_fleet, client):
    result, predictions, ti = score_fleet()
    threshold = model_registry.decision_threshold(
        client.get_model_version(pipeline.model_name, pipeline.version)
    )
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


def test_a_threshold_override_applies_and_a_bad_one_fails_without_retry(score_fleet):
    assert "risk_threshold" in MlflowBatchScoreOperator.template_fields  # the run's param, rendered
    result, predictions, _ = score_fleet(risk_threshold="0.0", run_id="manual__override")
    assert result["threshold"] == 0.0 and result["at_risk"] == result["units"] == len(predictions)
    with pytest.raises(BadDataError, match="risk_threshold 'high'"):
        score_fleet(risk_threshold="high", run_id="manual__bad")
