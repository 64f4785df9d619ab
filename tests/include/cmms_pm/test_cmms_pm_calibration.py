"""Calibrated risk: fitted on the validation split with scikit-learn's tools, saved with skops (no
pickle), read back by the fast scoring path, and better calibrated than the balanced-weight scores."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio

from cmms_pm.calibration import (
    ISOTONIC_MIN_POSITIVES,
    calibrate,
    calibrate_and_choose,
    candidate_methods,
    halves,
)
from cmms_pm.estimators import ESTIMATORS, trusted_types
from cmms_pm.schema import TARGET
from cmms_pm.thresholds import DecisionPolicy, ThresholdError
from cmms_pm.training import base_classifier, positive_proba

# Parallel trees add their probabilities in whatever order the threads finish: last-bit differences.
FLOAT_NOISE = 1e-12


@pytest.fixture(scope="module")
def models(splits, fit) -> dict:
    small = {"random_forest": {"n_estimators": 30}, "hist_gradient_boosting": {"max_iter": 60}}
    return {kind: fit(splits["train"], estimator=kind, **small.get(kind, {})) for kind in ESTIMATORS}


@pytest.fixture(scope="module")
def decided(models, splits) -> dict:
    return {
        kind: calibrate_and_choose(
            model, splits["validation"], target=TARGET, policy=DecisionPolicy(), seed=3
        )
        for kind, model in models.items()
    }


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_calibration_improves_the_brier_score_on_the_holdout(models, decided, splits, kind):
    """Balanced class weights over-state a rare failure's risk; the calibrated probability does not."""
    holdout = splits["holdout"]
    y = holdout[TARGET].to_numpy()
    before = np.mean((positive_proba(models[kind], holdout) - y) ** 2)
    after = np.mean((positive_proba(decided[kind].model, holdout) - y) ** 2)
    assert after < before, (kind, before, after)
    report = decided[kind].calibration
    assert report["brier_after"] < report["brier_before"]  # the same on the validation rows, out of fold
    # Calibrated: the mean risk is close to the failure rate (balanced weights put it far above).
    assert abs(positive_proba(decided[kind].model, holdout).mean() - y.mean()) < 0.03


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_the_calibrated_pipeline_keeps_its_steps_and_its_fitted_classifier(models, decided, kind):
    model = decided[kind].model
    assert list(model.named_steps) == ["preprocess", "classifier"]
    assert type(model.named_steps["classifier"]).__name__ == "CalibratedClassifierCV"
    assert base_classifier(model) is base_classifier(models[kind])  # frozen, not refitted or copied
    assert base_classifier(models[kind]) is models[kind].named_steps["classifier"]


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_positive_proba_fast_path_equals_pipeline_predict_proba_when_calibrated(decided, splits, kind):
    model = decided[kind].model
    holdout = splits["holdout"]
    np.testing.assert_allclose(
        positive_proba(model, holdout), model.predict_proba(holdout)[:, 1], rtol=0, atol=FLOAT_NOISE
    )


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_calibrated_pipelines_round_trip_through_skops_with_explicit_trusted_types(decided, splits, kind):
    model = decided[kind].model
    payload = sio.dumps(model)
    untrusted = set(sio.get_untrusted_types(data=payload))
    assert untrusted <= set(trusted_types(kind))  # nothing beyond the estimator's and calibration's
    assert {"sklearn.calibration._CalibratedClassifier"} <= untrusted
    loaded = sio.loads(payload, trusted=trusted_types(kind))
    holdout = splits["holdout"]
    np.testing.assert_allclose(
        positive_proba(loaded, holdout), positive_proba(model, holdout), atol=FLOAT_NOISE
    )
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        sio.loads(payload, trusted=list(ESTIMATORS[kind].trusted_types))  # the calibration types are needed


def test_sigmoid_calibration_needs_its_own_trusted_type(models, splits):
    model = calibrate(
        models["random_forest"], splits["validation"], splits["validation"][TARGET].to_numpy(), "sigmoid"
    )
    assert "sklearn.calibration._SigmoidCalibration" in sio.get_untrusted_types(data=sio.dumps(model))


def test_the_threshold_is_chosen_on_out_of_fold_risks_of_the_validation_split(decided, splits):
    result = decided["random_forest"]
    validation = splits["validation"]
    assert result.threshold["rows"] == len(validation) == result.calibration["rows"]
    assert result.threshold["positives"] == int(validation[TARGET].sum())
    # Out of fold: no validation row was scored by a calibrator fitted on its own label, so the
    # out-of-fold risks differ from the final calibrated model's on the same rows.
    final = positive_proba(result.model, validation)
    assert not np.allclose(final, result.proba_after)
    assert 0.0 < result.threshold["threshold"] < 1.0 and result.threshold["met"]


def test_halves_are_stratified_disjoint_and_the_same_for_the_same_seed():
    y = np.r_[np.ones(21, dtype=int), np.zeros(179, dtype=int)]
    first, second = halves(y, seed=9)
    assert set(first).isdisjoint(second) and len(first) + len(second) == len(y)
    assert abs(y[first].sum() - y[second].sum()) <= 1
    again = halves(y, seed=9)
    assert np.array_equal(first, again[0]) and not np.array_equal(first, halves(y, seed=10)[0])


def test_auto_tries_isotonic_only_with_enough_failures():
    assert candidate_methods("auto", ISOTONIC_MIN_POSITIVES, 5000)[0] == ["sigmoid", "isotonic"]
    methods, reason = candidate_methods("auto", ISOTONIC_MIN_POSITIVES - 1, 5000)
    assert methods == ["sigmoid"] and "sigmoid" in reason
    assert candidate_methods("isotonic", 3, 5000)[0] == ["isotonic"]  # the spec may insist


def test_auto_keeps_the_lower_out_of_fold_brier_or_no_calibration(models, splits, monkeypatch):
    from cmms_pm import calibration

    monkeypatch.setattr(calibration, "ISOTONIC_MIN_POSITIVES", 10)  # both candidates on this small split
    model = models["random_forest"]
    both = calibrate_and_choose(model, splits["validation"], target=TARGET, policy=DecisionPolicy(), seed=3)
    assert both.calibration["method"] in ("sigmoid", "isotonic") and "whichever" in both.calibration["reason"]
    alone = {
        m: calibrate_and_choose(
            model, splits["validation"], target=TARGET, policy=DecisionPolicy(), method=m, seed=3
        )
        for m in ("sigmoid", "isotonic")
    }
    assert both.calibration["brier_after"] == min(d.calibration["brier_after"] for d in alone.values())
    # When no calibrator improves on the classifier's own risk (a Brier score that never moves here),
    # the classifier stays uncalibrated, and the report says why.
    monkeypatch.setattr(calibration, "brier", lambda y, p: 0.25)
    kept = calibrate_and_choose(model, splits["validation"], target=TARGET, policy=DecisionPolicy(), seed=3)
    assert (
        kept.model is model
        and kept.calibration["method"] == "none"
        and "no calibration" in kept.calibration["reason"]
    )


def test_a_validation_split_without_failures_fails_before_anything_is_fitted(models, splits):
    no_failures = splits["validation"][splits["validation"][TARGET] == 0]
    with pytest.raises(ThresholdError, match="holds no failure"):
        calibrate_and_choose(models["random_forest"], no_failures, target=TARGET, policy=DecisionPolicy())
    one = splits["validation"].sort_values(TARGET, kind="stable").head(len(no_failures) + 1)
    with pytest.raises(ThresholdError, match="at least 2"):
        calibrate_and_choose(models["random_forest"], one, target=TARGET, policy=DecisionPolicy())
    kept = calibrate_and_choose(
        models["random_forest"], one, target=TARGET, policy=DecisionPolicy(), method="none"
    )
    assert kept.model is models["random_forest"] and kept.calibration["method"] == "none"
