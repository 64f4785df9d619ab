"""Issue 19 through the operators, one ``execute(context)`` at a time on the real MLflow store:
the threshold and calibration a version carries, its model card, the gate at each model's own
threshold, and scoring at the champion's threshold with reasons. (A stand-in Airflow context,
tests/operator_context.py; MLflow, the data and the models are real.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from datasets import ai4i_like
from operator_context import TaskInstance, operator_runner, train_and_stage, write_incoming

from cmms_mlflow.exceptions import BadDataError, ModelValidationError
from cmms_mlflow.operators import (
    MlflowBatchScoreOperator,
    MlflowModelReportOperator,
    MlflowPromoteModelOperator,
    MlflowValidateModelOperator,
)
from cmms_mlflow.registry import model_registry
from cmms_mlflow.tracking.card_logging import read_card
from cmms_mlflow.tracking.model_evaluation import score_at_threshold
from cmms_mlflow.tracking.model_loading import load_version
from cmms_pm.data import read_split
from cmms_pm.spec import ModelSpec, load_spec

FIXTURES = Path(__file__).resolve().parents[3] / "dag_fixtures" / "models"


@pytest.fixture
def spec(model_name):
    """The AI4I fixture spec, calibrated with Platt scaling (``auto`` may keep a booster uncalibrated),
    owning this test's model (a spec's runs write only to the model it owns)."""
    from support import spec_owning

    calibrated = {**load_spec(FIXTURES / "ai4i.yaml").to_dict(), "calibration": {"method": "sigmoid"}}
    return spec_owning(ModelSpec.from_dict(calibrated), model_name)


@pytest.fixture
def run(spec, model_name, tmp_path, monkeypatch):
    return operator_runner(spec, model_name, tmp_path, monkeypatch)


def _validate(run, spec, model_name, manifest, checks, version, day=1):
    return run(
        MlflowValidateModelOperator(
            task_id="validate_model", spec=spec.to_dict(), model_name=model_name, version=version,
            holdout_uri=manifest["splits"]["holdout"]["uri"], checks=checks,
        ),
        day,
    )  # fmt: skip


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def _score(spec, model_name, context_day: int, tmp_path, monkeypatch, risk_threshold):
    """Execute the scoring operator for ``spec``'s scoring file; returns (result, predictions)."""
    operator = MlflowBatchScoreOperator(
        task_id="score_fleet", spec=spec.to_dict(), model_name=model_name, risk_threshold=risk_threshold
    )
    run_id = f"scoring__{context_day}__{risk_threshold}"
    context = {
        "ti": TaskInstance(dag_id="ai4i_scoring", run_id=run_id, task_id="score_fleet"),
        "dag_run": SimpleNamespace(
            dag_id="ai4i_scoring", run_id=run_id, run_after=pd.Timestamp("2026-07-02T03:00:00+00:00"),
            run_type="manual",
        ),
        "triggering_asset_events": {},
        "params": {},
    }  # fmt: skip
    [result] = operator.execute(context)
    return result, pd.read_parquet(result["predictions_uri"])


def test_a_version_carries_its_threshold_calibration_card_and_the_gate_uses_each_models_own(
    run, spec, mlflow_conn, client, model_name, tmp_path, monkeypatch
):
    source = write_incoming(tmp_path, ai4i_like(3000, seed=31))
    manifest, checks, version = train_and_stage(run, spec, model_name, 1, source)

    # The threshold travels: version tag, run metric, MLmodel metadata, all the same number in (0, 1).
    mv = client.get_model_version(model_name, version)
    threshold = model_registry.decision_threshold(mv)
    assert 0.0 < threshold < 1.0 and threshold != 0.5
    training = client.get_run(mv.run_id)
    assert training.data.metrics["decision_threshold"] == pytest.approx(threshold)
    assert training.data.params["decision_strategy"] == "f1"
    assert training.data.params["calibration_method"] == "sigmoid"
    brier_before = training.data.metrics["val_brier_before_calibration"]
    assert training.data.metrics["val_brier_after_calibration"] < brier_before
    logged = client.get_logged_model(mv.source.removeprefix("models:/"))
    mlmodel = yaml.safe_load(
        open(f"{logged.artifact_location.removeprefix('file://')}/MLmodel", encoding="utf-8").read()
    )
    assert mlmodel["metadata"]["decision_threshold"] == pytest.approx(threshold)
    assert mlmodel["metadata"]["calibration"] == "sigmoid"
    evaluation = _artifacts(client, mv.run_id, "evaluation")
    for plot in (
        "reliability_diagram.png",
        "global_explanation.png",
        "feature_importances.png",
        "decision.json",
    ):
        assert f"evaluation/{plot}" in evaluation
    assert {"model_card.md", "model_card.json"} <= _artifacts(client, mv.run_id)
    card = read_card(client, mv.run_id)
    assert "Not evaluated yet" in card and "2026-06-30T02:00:00+00:00 to 2026-07-01T02:00:00+00:00" in card

    # The trusted loader loads the calibrated pipeline; validation scores it at its own threshold.
    loaded = load_version(client, model_name, version, spec_name="ai4i")
    assert type(loaded.named_steps["classifier"]).__name__ == "CalibratedClassifierCV"
    record = _validate(run, spec, model_name, manifest, checks, version)
    assert record["challenger_metrics"]["threshold"] == pytest.approx(threshold)
    assert {"expected_cost", "brier", "precision", "recall", "f1"} <= set(record["challenger_metrics"])
    assert record["thresholds"]["costs"] == {"missed_failure": 10.0, "needless_inspection": 1.0}
    card = read_card(client, mv.run_id)
    assert "## Holdout metrics" in card and "Not evaluated yet" not in card
    assert all(f"| `Type` | `{kind}` |" in card for kind in ("L", "M", "H"))
    assert run(MlflowPromoteModelOperator(task_id="promote_model", model_name=model_name, validation=record))
    summary = run(MlflowModelReportOperator(task_id="report", model_name=model_name, validation=record))
    assert f"alert thresholds: challenger {threshold:.4f}" in summary["text"]
    assert "- Outcome: promoted" in read_card(client, mv.run_id)

    # The next challenger meets a champion whose tag says 0.97: the gate scores the champion there
    # and the challenger at its own threshold (a smaller booster: this test is about the gate).
    manifest2, checks2, version2 = train_and_stage(run, spec, model_name, 2, source, max_iter=30)
    client.set_model_version_tag(model_name, version, "decision_threshold", "0.97")
    record2 = _validate(run, spec, model_name, manifest2, checks2, version2, day=2)
    holdout = read_split(manifest2["splits"]["holdout"]["uri"])
    champion_at_own, _ = score_at_threshold(
        loaded, holdout, target=spec.target, threshold=0.97, costs=record2["thresholds"]["costs"]
    )
    assert record2["champion_metrics"] == pytest.approx(champion_at_own)
    assert record2["champion_metrics"]["threshold"] == 0.97
    challenger_threshold = model_registry.decision_threshold(client.get_model_version(model_name, version2))
    challenger = load_version(client, model_name, version2, spec_name="ai4i")
    challenger_at_own, _ = score_at_threshold(
        challenger,
        holdout,
        target=spec.target,
        threshold=challenger_threshold,
        costs=record2["thresholds"]["costs"],
    )
    assert record2["challenger_metrics"] == pytest.approx(challenger_at_own)
    champion_at_chosen, _ = score_at_threshold(
        loaded, holdout, target=spec.target, threshold=threshold, costs=record2["thresholds"]["costs"]
    )
    assert record2["champion_metrics"]["recall"] < champion_at_chosen["recall"]  # the tag made a difference

    # A version from before thresholds has none: 0.5. A tampered tag is refused, naming the value.
    client.delete_model_version_tag(model_name, version, "decision_threshold")
    assert model_registry.decision_threshold(client.get_model_version(model_name, version)) == 0.5
    for bad in ("1.5", "nan", "0", "high"):
        client.set_model_version_tag(model_name, version, "decision_threshold", bad)
        with pytest.raises(ModelValidationError, match=f"decision_threshold '{bad}'"):
            model_registry.decision_threshold(client.get_model_version(model_name, version))
    client.set_model_version_tag(model_name, version, "decision_threshold", repr(threshold))

    # Scoring: the champion's own threshold unless the run overrides it; reasons beside each alert.
    fleet = ai4i_like(400, seed=42)
    fleet.to_csv(tmp_path / "data" / "incoming" / "ai4i_fleet.csv", index=False)
    result, predictions = _score(spec, model_name, 3, tmp_path, monkeypatch, "None")
    assert (
        result["threshold"] == pytest.approx(threshold)
        and "decision_threshold of v1" in result["threshold_source"]
    )
    assert set(predictions["decision_threshold"]) == {threshold}
    assert (predictions["at_risk"] == (predictions["failure_probability"] >= threshold)).all()
    alerts = predictions[predictions["at_risk"]]
    assert len(alerts) and alerts["reasons_explained"].all() and alerts["reason_1"].notna().all()
    assert set(alerts["reason_1"]) <= set(spec.features.declared)
    assert predictions.loc[~predictions["at_risk"], "reason_1"].isna().all()
    override, overridden = _score(spec, model_name, 4, tmp_path, monkeypatch, 0.9)
    assert override["threshold"] == 0.9 and override["threshold_source"] == "run parameter risk_threshold"
    assert set(overridden["decision_threshold"]) == {0.9}
    assert override["at_risk"] <= result["at_risk"] if threshold < 0.9 else True
    with pytest.raises(BadDataError, match="not between 0 and 1"):
        _score(spec, model_name, 5, tmp_path, monkeypatch, "7")
    json.dumps(result)  # travels through XCom


def test_a_validation_split_without_failures_fails_training_before_a_model_is_logged(
    run, spec, mlflow_conn, client, model_name, tmp_path
):
    from cmms_mlflow.operators import ExtractBatchOperator, MlflowTrainModelOperator

    source = write_incoming(tmp_path, ai4i_like(1500, seed=31))
    manifest = run(ExtractBatchOperator(task_id="extract_data", spec=spec.to_dict()), data_source=source)
    validation = read_split(manifest["splits"]["validation"]["uri"])
    uri = manifest["splits"]["validation"]["uri"]
    validation[validation[spec.target] == 0].to_parquet(uri, index=False)
    # A batch whose validation split has no failure, as extract_data would record it (its SHA-256 too:
    # a split changed behind its manifest's back is refused before training, another test's matter).
    manifest["splits"]["validation"]["sha256"] = hashlib.sha256(Path(uri).read_bytes()).hexdigest()
    with pytest.raises(BadDataError, match="validation split .* holds no failure.*nothing is registered"):
        run(
            MlflowTrainModelOperator(
                task_id="train_model", spec=spec.to_dict(), dataset=manifest, checks=None
            )
        )
    (failed,) = client.search_runs([client.get_experiment_by_name(model_name).experiment_id])
    assert failed.info.status == "FAILED"  # closed, and no model logged: nothing a register step could take
    assert not client.search_logged_models(experiment_ids=[failed.info.experiment_id])
