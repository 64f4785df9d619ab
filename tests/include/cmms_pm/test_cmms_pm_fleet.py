"""Fleet scoring: deterministic latest telemetry, one prediction row per unit, a summary."""

from __future__ import annotations

import pandas as pd
import pytest

from cmms_pm.data import generate_telemetry
from cmms_pm.fleet import latest_telemetry, score_fleet, summarize
from cmms_pm.schema import FEATURES
from cmms_pm.training import fit_model


@pytest.fixture(scope="module")
def model():
    return fit_model(generate_telemetry(2000, seed=11), {"n_estimators": 10, "max_depth": 6})


def test_latest_telemetry_is_one_row_per_unit_and_deterministic_for_a_time():
    first = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=50)
    again = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=50)
    other = latest_telemetry("2026-11-27T00:00:00+00:00", n_units=50)
    assert list(first.columns) == ["equipment_id", *FEATURES]
    assert first["equipment_id"].is_unique and len(first) == 50
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


def test_predictions_carry_model_version_and_scoring_time_and_summary_counts_at_risk(model):
    telemetry = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=200)
    predictions = score_fleet(
        model,
        telemetry,
        model_name="pm",
        model_version="7",
        scored_at="2026-11-26T03:00:00+00:00",
    )
    assert len(predictions) == 200
    assert set(predictions["model_version"]) == {"7"}
    assert predictions["scored_at"].iloc[0] == pd.Timestamp("2026-11-26T03:00:00+00:00")
    summary = summarize(predictions)
    assert summary["units"] == 200
    expected = int((model.predict_proba(telemetry[FEATURES])[:, 1] >= 0.5).sum())
    assert summary["at_risk"] == expected == int(predictions["at_risk"].sum())
    assert sum(summary["at_risk_by_type"].values()) == summary["at_risk"]
    assert summary["model_version"] == "7"
    probabilities = [r["failure_probability"] for r in summary["riskiest"]]
    assert probabilities == sorted(probabilities, reverse=True)
