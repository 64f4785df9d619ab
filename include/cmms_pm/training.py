"""Fitting, scoring and explaining a spec's model: a scikit-learn Pipeline over raw frames.

The pipeline (``cmms_pm.estimators``) selects its feature columns by name, so the artefact logged to
MLflow scores raw frames (extra columns, any order) with no preprocessing code of ours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cmms_pm.exceptions import DataValidationError
from cmms_pm.spec import FeatureSpec

log = logging.getLogger(__name__)

#: Largest validation sample permutation importances are computed on (estimators without their own).
IMPORTANCE_SAMPLE_ROWS = 2000


#: Rows the fitted preprocessor transforms at a time into the classifier's input matrix.
TRANSFORM_CHUNK_ROWS = 100_000


def fit_model(
    train: pd.DataFrame,
    *,
    features: FeatureSpec,
    target: str,
    estimator: str,
    hyperparameters: Mapping[str, Any],
) -> Any:
    """Fit ``estimator`` with ``hyperparameters`` on the ``features`` and ``target`` columns of ``train``.

    The same fitted pipeline as ``Pipeline.fit`` (see :func:`fit_preprocessor`); a caller that can
    let go of ``train`` before the classifier grows calls the two stages itself.
    """
    model, x, y = fit_preprocessor(
        train, features=features, target=target, estimator=estimator, hyperparameters=hyperparameters
    )
    return fit_classifier(model, x, y)


def fit_preprocessor(
    train: pd.DataFrame,
    *,
    features: FeatureSpec,
    target: str,
    estimator: str,
    hyperparameters: Mapping[str, Any],
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The estimator's pipeline with its preprocessor fitted, the classifier's input and the labels.

    Stage one of ``Pipeline.fit``, in less memory: the input matrix is built chunk by chunk straight
    into the dtype the classifier converts it to (``Pipeline.fit`` builds it in float64 through an
    intermediate stack of every transformer's output, then the forest copies it to float32), and a
    preprocessor that learns only categories is fitted on one row per category. Nothing returned
    refers to ``train``: the caller may drop it before :func:`fit_classifier`.
    """
    from cmms_pm.estimators import build_pipeline
    from cmms_pm.estimators import estimator as estimator_kind

    kind = estimator_kind(estimator)
    model = build_pipeline(
        estimator,
        hyperparameters,
        categorical=features.categorical,
        numeric=(*features.numeric, *features.integer),
    )
    preprocess = model.named_steps["preprocess"]
    if kind.preprocess_learns_categories_only:
        categorical = list(features.categorical)
        preprocess.fit(train.drop_duplicates(subset=categorical) if categorical else train.iloc[:1])
    else:
        preprocess.fit(train)
    return (
        model,
        transform_in_chunks(preprocess, train, dtype=_input_dtype(model.named_steps["classifier"])),
        train[target].to_numpy(copy=True),
    )


def transform_in_chunks(preprocess: Any, frame: pd.DataFrame, *, dtype: str) -> np.ndarray:
    """``preprocess.transform(frame)`` as ``dtype``, written into one matrix a chunk of rows at a time."""
    first = np.asarray(preprocess.transform(frame.iloc[:TRANSFORM_CHUNK_ROWS]))
    out = np.empty((len(frame), first.shape[1]), dtype=dtype)
    out[: len(first)] = first
    del first
    for start in range(TRANSFORM_CHUNK_ROWS, len(frame), TRANSFORM_CHUNK_ROWS):
        chunk = frame.iloc[start : start + TRANSFORM_CHUNK_ROWS]
        out[start : start + len(chunk)] = preprocess.transform(chunk)
    return out


def fit_classifier(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    validation: tuple[Any, Any] | None = None,
    *,
    monitor: Any = None,
) -> Any:
    """Stage two: fit the pipeline's classifier on :func:`fit_preprocessor`'s output; returns ``model``.

    ``validation``: ``(x_val, y_val)``, a raw frame (transformed here) or the classifier's input;
    the boosting libraries stop early on it (``early_stopping_rounds``), the other estimators
    ignore it. ``monitor(iteration, value)`` hears the validation metric after each boosting
    round (tuning prunes by raising from it); estimators without rounds never call it.
    """
    from cmms_pm.estimators import fit_function

    classifier = model.named_steps["classifier"]
    fit = fit_function(classifier)
    if fit is None:
        classifier.fit(x, y)
    else:
        if validation is not None and isinstance(validation[0], pd.DataFrame):
            x_val = transform_in_chunks(model.named_steps["preprocess"], validation[0], dtype=str(x.dtype))
            validation = (x_val, np.asarray(validation[1]))
        fit(model, x, y, validation, monitor)
    log.info("fitted %s on %d rows", type(classifier).__name__, len(x))
    return model


def classification_metrics(y_true: Any, proba: Any, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall and F1 at ``threshold`` plus ROC AUC and PR AUC, as plain floats.

    Raises when ``y_true`` holds a single class: the AUCs are undefined and F1 would be misleading.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    if y.shape != p.shape:
        raise DataValidationError(f"y_true has shape {y.shape} but proba has shape {p.shape}")
    classes = np.unique(y)
    if len(classes) != 2:
        raise DataValidationError(
            f"metrics need both classes in y_true, found only {classes.tolist()} in {len(y)} rows"
        )
    predicted = (p >= threshold).astype(int)
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
    }


def positive_proba(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """``model.predict_proba(frame)[:, 1]``, the same numbers in less time and memory for a pipeline
    of ours (``preprocess`` then ``classifier``).

    ``Pipeline.predict_proba`` stacks every transformer's output into a float64 matrix of the whole
    frame, which a forest then copies to float32; here the preprocessor's output is written a chunk
    at a time straight into the dtype the classifier converts it to (float32 for scikit-learn's
    trees and forests, float64 for anything else, as the stack was), which is the matrix the
    classifier would have predicted on. Any other model is asked directly.
    """
    steps = getattr(model, "named_steps", None)
    if steps is None or list(steps) != ["preprocess", "classifier"]:
        return np.asarray(model.predict_proba(frame))[:, 1]
    classifier = steps["classifier"]
    # A calibrated classifier hands the matrix to the one it wraps: build what that one converts to.
    x = transform_in_chunks(steps["preprocess"], frame, dtype=_input_dtype(base_classifier(classifier)))
    return classifier.predict_proba(x)[:, 1]


def base_classifier(model: Any) -> Any:
    """The fitted classifier inside ``model`` without its calibration wrapper (for reasons and
    importances): ``CalibratedClassifierCV(FrozenEstimator(clf))`` gives back ``clf``."""
    classifier = model.named_steps["classifier"] if hasattr(model, "named_steps") else model
    calibrated = getattr(classifier, "calibrated_classifiers_", None)
    if calibrated:
        classifier = calibrated[0].estimator
    # FrozenEstimator (and anything else that wraps one fitted estimator under ``estimator``).
    while type(classifier).__name__ == "FrozenEstimator":
        classifier = classifier.estimator
    return classifier


def _input_dtype(classifier: Any) -> str:
    """The dtype ``classifier`` converts its input to before predicting (its ``DTYPE``)."""
    from sklearn.ensemble._forest import BaseForest
    from sklearn.tree import BaseDecisionTree

    if type(classifier).__module__.startswith("xgboost."):
        return "float32"  # XGBoost's DMatrix holds float32
    return "float32" if isinstance(classifier, (BaseForest, BaseDecisionTree)) else "float64"


def score_model(model: Any, frame: pd.DataFrame, *, target: str) -> dict[str, float]:
    """``classification_metrics`` of ``model`` on a labelled frame (e.g. the holdout split)."""
    proba = positive_proba(model, frame)
    return classification_metrics(frame[target].to_numpy(), proba)


def feature_importances(model: Any, frame: pd.DataFrame, *, target: str, seed: int = 0) -> pd.DataFrame:
    """How much each input column matters, most important first (``feature``, ``importance``, ``method``).

    Tree ensembles that have impurity importances use them (one row per one-hot category); other
    estimators get permutation importances of each raw input column on a sample of ``frame``
    (the drop in PR-AUC when the column is shuffled).
    """
    classifier = base_classifier(model)
    if hasattr(classifier, "feature_importances_"):
        names = model.named_steps["preprocess"].get_feature_names_out()
        result = pd.DataFrame(
            {
                "feature": [str(name).split("__", 1)[-1] for name in names],
                "importance": classifier.feature_importances_,
                # The boosting libraries say which importance they give (gain); sklearn's is impurity.
                "method": getattr(classifier, "importance_type", None) or "impurity",
            }
        )
    else:
        from sklearn.inspection import permutation_importance

        columns = _input_columns(model)
        sample = frame.sample(n=min(len(frame), IMPORTANCE_SAMPLE_ROWS), random_state=seed)
        permuted = permutation_importance(
            model,
            sample[columns],
            sample[target].to_numpy(),
            scoring="average_precision",
            n_repeats=3,
            random_state=seed,
        )
        result = pd.DataFrame(
            {"feature": columns, "importance": permuted.importances_mean, "method": "permutation"}
        )
    return result.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def _input_columns(model: Any) -> list[str]:
    """The raw columns the pipeline's column transformer reads, in its order."""
    columns: list[str] = []
    for _name, transformer, selected in model.named_steps["preprocess"].transformers_:
        if transformer != "drop" and isinstance(selected, list | tuple):
            columns.extend(str(column) for column in selected)
    return columns
