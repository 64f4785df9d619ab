"""Calibrated risk and the decision threshold, both from the validation split, never the holdout.

The calibrator maps the classifier's score to a probability (scikit-learn's
``CalibratedClassifierCV(FrozenEstimator(clf))``, isotonic or sigmoid) and is fitted on the whole
validation split. The alert threshold (``cmms_pm.thresholds``) and the calibration figures (Brier
score before and after, reliability diagram) come from **out-of-fold** calibrated risks: the split
is halved (stratified on the label, seeded by the batch: the same batch gives the same halves), a
calibrator fitted on each half scores the other, so every validation row has a calibrated risk
from a calibrator that never saw its label. Choosing the threshold on the rows a calibrator was
fitted on would be optimistic (isotonic regression follows those labels step by step); keeping
one half for calibration and the other for the threshold would leave each with half the failures
(measured on the AI4I-like data: the same or slightly better holdout F1 and Brier with cross-fitting).

``calibration.method: auto`` (the default) tries sigmoid (Platt) scaling and, when the split holds
at least ``ISOTONIC_MIN_POSITIVES`` failures, isotonic regression, and keeps the one with the lower
out-of-fold Brier score, or none when neither beats the classifier's own risk (measured: a boosted
model of the synthetic telemetry is already well calibrated; Platt scaling made it worse). The
method and the threshold are then both read off the same out-of-fold risks: a mild selection
among two candidates, stated here rather than hidden.

The calibrated classifier replaces the ``classifier`` step of the pipeline, so ``named_steps``
stay ``preprocess``/``classifier``; ``cmms_pm.training.base_classifier`` gives back the fitted
classifier inside (reasons and importances explain that one). Balanced class weights make a
classifier's scores over-state the risk of a rare failure; the calibrated probability does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from cmms_pm.exceptions import DataValidationError
from cmms_pm.thresholds import DecisionPolicy, ThresholdChoice, ThresholdError, choose_threshold

#: ``auto`` tries isotonic regression only when the validation split holds at least this many
#: failures (and as many non-failures), i.e. each cross-fitting half about half as many: below, its
#: steps follow a handful of labels, and Platt's sigmoid (two parameters) is the safer map.
#: scikit-learn's user guide warns of isotonic overfitting on small calibration sets.
ISOTONIC_MIN_POSITIVES = 200
#: With calibration the validation split must hold a failure for each half.
MIN_POSITIVES_TO_CALIBRATE = 2
#: Bins of the reliability diagram (by quantile of the predicted risk: rare failures leave
#: equal-width bins near 1 empty).
RELIABILITY_BINS = 10


class CalibrationReport(TypedDict):
    """How the version's risk was calibrated and how well (Brier scores on the threshold half)."""

    method: str  # isotonic | sigmoid | none
    requested: str  # the spec's calibration.method
    reason: str
    rows: int  # validation rows (each scored out of fold)
    positives: int
    brier_before: float
    brier_after: float  # out of fold


@dataclass
class Decided:
    """The calibrated model, its threshold and the evidence: the validation rows' labels, their risk
    before calibration and their out-of-fold calibrated risk (no reference to the frame itself)."""

    model: Any
    threshold: ThresholdChoice
    calibration: CalibrationReport
    y: np.ndarray = field(repr=False)
    proba_before: np.ndarray = field(repr=False)
    proba_after: np.ndarray = field(repr=False)


def candidate_methods(requested: str, positives: int, negatives: int) -> tuple[list[str], str]:
    """The calibration methods to try and why: the spec's one, or for ``auto`` sigmoid and (with
    enough of both classes) isotonic; ``auto`` keeps the one with the lower out-of-fold Brier score,
    or none when neither improves on the classifier's own scores."""
    if requested != "auto":
        return [requested], f"calibration.method: {requested}"
    if min(positives, negatives) >= ISOTONIC_MIN_POSITIVES:
        return ["sigmoid", "isotonic"], (
            f"auto: sigmoid or isotonic ({positives} failures ≥ {ISOTONIC_MIN_POSITIVES}), whichever "
            "has the lower out-of-fold Brier score"
        )
    return ["sigmoid"], (
        f"auto: {min(positives, negatives)} {'failures' if positives <= negatives else 'non-failures'} in "
        f"the validation split (< {ISOTONIC_MIN_POSITIVES} for isotonic): sigmoid (Platt), two parameters "
        "that a few labels cannot overfit"
    )


def halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of two halves of the rows, stratified on ``y`` and seeded (cross-fitting folds)."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        cut = len(rows) // 2
        first.append(rows[:cut])
        second.append(rows[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def calibrate_and_choose(
    model: Any,
    validation: pd.DataFrame,
    *,
    target: str,
    policy: DecisionPolicy,
    method: str = "auto",
    seed: int = 0,
    time_column: str | None = None,
    entity_column: str | None = None,
) -> Decided:
    """Calibrate ``model`` (a fitted pipeline) on the validation split and choose the threshold on
    its out-of-fold calibrated risks. ``method`` is the spec's ``calibration.method`` (``none``: no
    calibration, the threshold is chosen on the classifier's own scores). ``ThresholdError`` when no
    threshold can be chosen, before anything is logged or registered.
    """
    from cmms_pm.training import positive_proba

    y = validation[target].to_numpy().astype(int)
    positives = int(y.sum())
    if positives == 0:
        raise ThresholdError(
            f"the validation split ({len(y)} rows) holds no failure (positive label): no alert threshold "
            "can be chosen and no risk calibrated; nothing is registered"
        )
    before = positive_proba(model, validation)
    if method == "none":
        report = _report("none", "none", "calibration.method: none", y, before, before)
        choice = _choose(y, before, validation, policy, time_column, entity_column)
        return Decided(model, choice, report, y, before, before)
    if positives < MIN_POSITIVES_TO_CALIBRATE:
        raise ThresholdError(
            f"the validation split holds {positives} failure: cross-fitted calibration needs at least "
            f"{MIN_POSITIVES_TO_CALIBRATE} (one per half), or calibration.method: none"
        )
    methods, reason = candidate_methods(method, positives, len(y) - positives)
    halves_ = halves(y, seed)
    scored = {m: _out_of_fold(model, validation, y, m, halves_) for m in methods}
    chosen = min(scored, key=lambda m: brier(y, scored[m]))
    if method == "auto" and brier(y, scored[chosen]) >= brier(y, before):
        reason += (
            f"; neither improved the Brier score of the classifier's own risk ({brier(y, before):.4f} vs "
            f"{brier(y, scored[chosen]):.4f} out of fold): no calibration"
        )
        report = _report("none", method, reason, y, before, before)
        choice = _choose(y, before, validation, policy, time_column, entity_column)
        return Decided(model, choice, report, y, before, before)
    if len(methods) > 1:
        reason += f": {chosen} ({brier(y, scored[chosen]):.4f})"
    calibrated = calibrate(model, validation, y, chosen)
    report = _report(chosen, method, reason, y, before, scored[chosen])
    choice = _choose(y, scored[chosen], validation, policy, time_column, entity_column)
    return Decided(calibrated, choice, report, y, before, scored[chosen])


def _out_of_fold(
    model: Any, validation: pd.DataFrame, y: np.ndarray, method: str, folds: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Each row's risk from a ``method`` calibrator fitted on the other half of the rows."""
    from cmms_pm.training import positive_proba

    out = np.empty(len(y))
    first, second = folds
    for fit_rows, score_rows in ((first, second), (second, first)):
        fold = calibrate(model, validation.iloc[fit_rows], y[fit_rows], method)
        out[score_rows] = positive_proba(fold, validation.iloc[score_rows])
    return out


def calibrate(model: Any, frame: pd.DataFrame, y: np.ndarray, method: str) -> Any:
    """A copy of the fitted pipeline whose classifier step is calibrated on ``frame`` (``method``:
    isotonic or sigmoid); the fitted classifier inside is the same object, frozen (not refitted)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    from cmms_pm.training import _input_dtype, base_classifier, transform_in_chunks

    if method not in ("isotonic", "sigmoid"):
        raise DataValidationError(f"calibration method {method!r} is not isotonic or sigmoid")
    preprocess = model.named_steps["preprocess"]
    classifier = base_classifier(model)
    x = transform_in_chunks(preprocess, frame, dtype=_input_dtype(classifier))
    # A frozen estimator is never refitted: the folds only split its predictions, which are the same
    # whatever the split (2 folds: fewer prediction calls than the default 5).
    calibrated = CalibratedClassifierCV(FrozenEstimator(classifier), method=method, cv=2)
    calibrated.fit(x, y)
    return Pipeline([("preprocess", preprocess), ("classifier", calibrated)])


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    return (
        float(np.mean((np.asarray(proba, dtype=float) - np.asarray(y, dtype=float)) ** 2)) if len(y) else 0.0
    )


def reliability(
    y: np.ndarray, proba: np.ndarray, bins: int = RELIABILITY_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted risk, observed failure rate) per quantile bin, for the reliability diagram."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, proba, n_bins=bins, strategy="quantile")
    return predicted, observed


def _report(
    method: str, requested: str, reason: str, y: np.ndarray, before: np.ndarray, after: np.ndarray
) -> CalibrationReport:
    return {
        "method": method,
        "requested": requested,
        "reason": reason,
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "brier_before": brier(y, before),
        "brier_after": brier(y, after),
    }


def _choose(
    y: np.ndarray,
    proba: np.ndarray,
    rows: pd.DataFrame,
    policy: DecisionPolicy,
    time_column: str | None,
    entity_column: str | None,
) -> ThresholdChoice:
    days = entities = None
    if time_column and time_column in rows.columns:
        days = pd.to_datetime(rows[time_column], utc=True).dt.floor("D").to_numpy()
        if entity_column and entity_column in rows.columns:
            entities = rows[entity_column].to_numpy()
    return choose_threshold(y, proba, policy, days=days, entities=entities)
