"""Batch scoring: deterministic synthetic fleet, one prediction row per input row, flags, a summary."""

from __future__ import annotations

import pandas as pd
import pytest

from cmms_pm.data import generate_telemetry
from cmms_pm.fleet import latest_telemetry, score_frame, summarize
from cmms_pm.schema import FEATURES

SCORED_AT = "2026-11-26T03:00:00+00:00"


@pytest.fixture(scope="module")
def model(fit):
    return fit(generate_telemetry(2000, seed=11), n_estimators=10, max_depth=6)


def test_latest_telemetry_is_one_row_per_unit_and_deterministic_for_a_time():
    first = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=50)
    again = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=50)
    other = latest_telemetry("2026-11-27T00:00:00+00:00", n_units=50)
    assert list(first.columns) == ["equipment_id", *FEATURES]
    assert first["equipment_id"].is_unique and len(first) == 50
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


def test_predictions_carry_ids_model_version_and_scoring_time_and_summary_counts_at_risk(model):
    telemetry = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=200)
    predictions = score_frame(
        model, telemetry, id_columns=["equipment_id"], flags=None, model_name="pm", model_version="7",
        scored_at=SCORED_AT,
    )  # fmt: skip
    assert len(predictions) == 200 and list(predictions["equipment_id"]) == list(telemetry["equipment_id"])
    assert set(predictions["model_version"]) == {"7"} and predictions["contract_ok"].all()
    assert predictions["scored_at"].iloc[0] == pd.Timestamp(SCORED_AT)
    summary = summarize(predictions, id_columns=["equipment_id"])
    assert summary["units"] == 200 and summary["flagged"] == 0
    expected = int((model.predict_proba(telemetry)[:, 1] >= 0.5).sum())
    assert summary["at_risk"] == expected == int(predictions["at_risk"].sum())
    assert summary["model_version"] == "7"
    probabilities = [r["failure_probability"] for r in summary["riskiest"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(r["equipment_id"].startswith("EQ-") for r in summary["riskiest"])


def test_flagged_rows_are_scored_marked_and_counted_by_reason(model):
    telemetry = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=10)
    flags = pd.DataFrame(
        {
            "unseen_category": [True, False] + [False] * 8,
            "missing_value": [False, True] + [False] * 8,
            "out_of_range": [False] * 10,
            "contract_issues": ["unseen_category:equipment_type", "missing_value:rpm"] + [""] * 8,
        }
    )
    predictions = score_frame(
        model, telemetry, id_columns=["equipment_id"], flags=flags, model_name="pm", model_version="1",
        scored_at=SCORED_AT,
    )  # fmt: skip
    assert list(predictions["contract_ok"]) == [False, False] + [True] * 8
    assert predictions["contract_issues"].iloc[0] == "unseen_category:equipment_type"
    assert predictions["failure_probability"].notna().all()
    summary = summarize(predictions, id_columns=["equipment_id"], flags=flags)
    assert summary["flagged"] == 2
    assert summary["flagged_by_reason"] == {"unseen_category": 1, "missing_value": 1, "out_of_range": 0}


def test_id_columns_are_copied_by_position_with_their_values_and_kinds(model):
    telemetry = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=6).iloc[::-1].set_axis(list("abcdef"))
    telemetry["site"] = pd.Categorical(["north", "south"] * 3)
    telemetry["slot"] = pd.array([1, None, 3, 4, 5, 6], dtype="Int64")
    predictions = score_frame(
        model, telemetry, id_columns=["equipment_id", "site", "slot"], flags=None, model_name="pm",
        model_version="1", scored_at=SCORED_AT,
    )  # fmt: skip
    assert list(predictions.index) == list(range(6))
    assert list(predictions["equipment_id"]) == list(telemetry["equipment_id"])
    assert predictions["equipment_id"].dtype == telemetry["equipment_id"].dtype  # text stays text
    # Other kinds leave as plain values, as they always did (a category id is no Parquet dictionary).
    assert not isinstance(predictions["site"].dtype, pd.CategoricalDtype)
    assert list(predictions["site"]) == ["north", "south"] * 3
    assert predictions["slot"].isna().tolist() == [False, True, False, False, False, False]


def _score(model, telemetry, **kwargs):
    return score_frame(
        model, telemetry, id_columns=["equipment_id"], flags=None, model_name="pm", model_version="7",
        scored_at=SCORED_AT, **kwargs,
    )  # fmt: skip


def test_rows_are_at_risk_from_the_given_threshold_which_travels_in_every_row(model):
    telemetry = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=300)
    proba = model.predict_proba(telemetry)[:, 1]
    low = _score(model, telemetry, threshold=0.2)
    assert (low["at_risk"] == (proba >= 0.2)).all() and set(low["decision_threshold"]) == {0.2}
    assert int(low["at_risk"].sum()) > int(_score(model, telemetry, threshold=0.6)["at_risk"].sum())


def test_reason_columns_explain_the_at_risk_rows_with_the_features_that_pushed_them_up(model):
    from cmms_pm.explain import top_reasons

    telemetry = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=300)
    out = _score(
        model, telemetry, threshold=0.3, explain={"reasons": 2, "scope": "at_risk", "max_rows": 10_000}
    )
    assert [c for c in out.columns if c.startswith("reason")] == [
        "reason_1", "reason_1_contribution", "reason_2", "reason_2_contribution", "reasons_explained",
    ]  # fmt: skip
    assert (out["reasons_explained"] == out["at_risk"]).all() and out["at_risk"].any()
    risky = out.index[out["at_risk"]]
    expected = top_reasons(model, telemetry.loc[risky], 2)
    assert out.loc[risky, "reason_1"].tolist() == [r[0]["feature"] for r in expected]
    assert out.loc[risky, "reason_1_contribution"].tolist() == pytest.approx(
        [r[0]["contribution"] for r in expected]
    )
    assert (
        out.loc[risky, "reason_1_contribution"] >= out.loc[risky, "reason_2_contribution"].fillna(0)
    ).all()
    assert out.loc[~out["at_risk"], "reason_1"].isna().all()
    assert out["reason_1"].dtype == "str" and out["reason_1_contribution"].dtype == "float64"


def test_reasons_are_capped_to_the_riskiest_rows_and_off_when_zero(model):
    telemetry = latest_telemetry("2026-11-26T00:00:00+00:00", n_units=300)
    out = _score(model, telemetry, threshold=0.5, explain={"reasons": 1, "scope": "all", "max_rows": 7})
    assert int(out["reasons_explained"].sum()) == 7
    riskiest = out["failure_probability"].nlargest(7).index
    assert set(out.index[out["reasons_explained"]]) == set(riskiest)
    none = _score(model, telemetry, explain={"reasons": 0})
    assert not [c for c in none.columns if c.startswith("reason")]
