"""Reasons: per-feature contributions that sum (with the base value) to the classifier's output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmms_pm import explain
from cmms_pm.estimators import ESTIMATORS
from cmms_pm.exceptions import DataValidationError
from cmms_pm.schema import FEATURES, TARGET
from cmms_pm.training import base_classifier

ROWS = 300
#: XGBoost computes its margins and its SHAP values in float32 (about 7 significant digits, on
#: margins near 10 here); every other kind in float64.
ATOL = {"xgboost": 1e-4}


@pytest.fixture(scope="module")
def models(splits, fit) -> dict:
    """One small fitted pipeline per estimator kind (the shipped spec's features)."""
    small = {
        "random_forest": {"n_estimators": 20, "max_depth": 6},
        "hist_gradient_boosting": {"max_iter": 40},
    }
    return {kind: fit(splits["train"], estimator=kind, **small.get(kind, {})) for kind in ESTIMATORS}


@pytest.fixture(scope="module")
def rows(splits) -> pd.DataFrame:
    return splits["holdout"].head(ROWS)


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "approximate"])
@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_contributions_sum_with_the_base_value_to_the_model_output(models, rows, kind, approximate):
    values, base = explain.contributions(models[kind], rows, approximate=approximate)
    output = explain.model_output(models[kind], rows)
    total = values.sum(axis=1).to_numpy() + base
    np.testing.assert_allclose(total, output, rtol=0, atol=ATOL.get(kind, 1e-9))
    assert list(values.columns) == FEATURES  # one column per raw feature, one-hot summed back
    assert values.index.equals(rows.index)
    # Not a degenerate explanation: the features that drive failures in the generator matter most.
    top = explain.global_importance(models[kind], rows)["feature"].head(4).tolist()
    assert {"temperature_c", "vibration_mm_s"} & set(top), top


def test_categorical_splits_of_gradient_boosting_are_explained_exactly(models, rows):
    """SHAP's own reader of HistGradientBoostingClassifier reads bitset splits as thresholds; ours
    does not, which only shows on a model that splits on a category."""
    model = models["hist_gradient_boosting"]
    nodes = np.concatenate([p[0].nodes for p in base_classifier(model)._predictors])
    assert nodes["is_categorical"][nodes["is_leaf"] == 0].any()
    values, base = explain.contributions(model, rows)
    np.testing.assert_allclose(values.sum(axis=1) + base, explain.model_output(model, rows), atol=1e-9)
    assert values["equipment_type"].abs().max() > 0


def test_an_unseen_category_takes_the_missing_value_branch_and_still_adds_up(models, rows):
    odd = rows.head(20).assign(equipment_type="windmill")
    for kind in ("hist_gradient_boosting", "random_forest", "logistic_regression"):
        values, base = explain.contributions(models[kind], odd)
        np.testing.assert_allclose(
            values.sum(axis=1) + base, explain.model_output(models[kind], odd), atol=1e-9
        )


def test_linear_contributions_are_coefficient_times_input(models, rows):
    model = models["logistic_regression"]
    values, base = explain.contributions(model, rows)
    clf = base_classifier(model)
    assert base == pytest.approx(float(clf.intercept_[0]))
    assert values.attrs["output"] == "log_odds"
    scaled = model.named_steps["preprocess"].transform(rows)
    column = explain.output_owners(model.named_steps["preprocess"]).index("temperature_c")
    np.testing.assert_allclose(values["temperature_c"], scaled[:, column] * clf.coef_[0, column])


def test_top_reasons_are_the_largest_positive_contributions_highest_first(models, rows):
    model = models["random_forest"]
    values, _ = explain.contributions(model, rows)
    reasons = explain.top_reasons(model, rows, 3)
    assert len(reasons) == len(rows)
    for row_reasons, (_, row) in zip(reasons, values.iterrows(), strict=True):
        expected = row[row > 0].sort_values(ascending=False).head(3)
        assert [r["feature"] for r in row_reasons] == list(expected.index)
        assert [r["contribution"] for r in row_reasons] == pytest.approx(list(expected))
    # The riskiest rows have reasons; they name raw columns, never encoded ones.
    risky = np.argsort(-explain.model_output(model, rows))[:10]
    assert all(reasons[i] for i in risky)
    assert {r["feature"] for rr in reasons for r in rr} <= set(FEATURES)


def test_reasons_of_an_empty_frame_and_a_bad_k(models, rows):
    assert explain.top_reasons(models["random_forest"], rows.head(0), 3) == []
    with pytest.raises(DataValidationError, match="k must be"):
        explain.top_reasons(models["random_forest"], rows, 0)


def test_columns_that_are_not_features_do_not_change_the_reasons(models, rows):
    model = models["hist_gradient_boosting"]
    noisy = rows[list(reversed(rows.columns))].assign(asset_tag="A-1", **{TARGET: 1})
    assert explain.top_reasons(model, noisy, 2) == explain.top_reasons(model, rows, 2)
