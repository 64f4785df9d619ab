"""Model quality, metrics, feature importances and the skops trust list of the fitted pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio

from cmms_pm.estimators import ESTIMATORS
from cmms_pm.exceptions import DataValidationError
from cmms_pm.schema import FEATURES, NUMERIC, TARGET
from cmms_pm.training import classification_metrics, feature_importances, score_model

# Parallel trees add their probabilities in whatever order the threads finish: last-bit differences.
FLOAT_NOISE = 1e-12
METRIC_KEYS = {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc"}


@pytest.fixture(scope="module")
def models(splits, fit) -> dict:
    """One fitted pipeline per estimator kind, with its defaults (the shipped spec's features)."""
    return {kind: fit(splits["train"], estimator=kind) for kind in ESTIMATORS}


def test_default_model_reaches_f1_of_0_80_on_the_holdout(default_model, splits):
    metrics = score_model(default_model, splits["holdout"], target=TARGET)
    assert 0.80 <= metrics["f1"] < 0.99
    assert metrics["roc_auc"] > 0.9


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_every_estimator_learns_the_telemetry(models, splits, kind):
    metrics = score_model(models[kind], splits["holdout"], target=TARGET)
    assert metrics["roc_auc"] > 0.85, metrics
    assert metrics["f1"] > 0.5, metrics


def test_single_stump_is_clearly_worse_than_the_default_model(default_model, splits, fit):
    stump = fit(splits["train"], n_estimators=1, max_depth=1)
    default_f1 = score_model(default_model, splits["holdout"], target=TARGET)["f1"]
    stump_f1 = score_model(stump, splits["holdout"], target=TARGET)["f1"]
    assert stump_f1 <= default_f1 - 0.15


def test_score_model_returns_plain_float_metrics(default_model, splits):
    metrics = score_model(default_model, splits["validation"], target=TARGET)
    assert set(metrics) == METRIC_KEYS
    assert all(type(value) is float and 0.0 <= value <= 1.0 for value in metrics.values())


def test_model_scores_frames_with_extra_columns_and_any_column_order(default_model, splits):
    holdout = splits["holdout"]
    shuffled = holdout[list(reversed(holdout.columns))].assign(asset_tag="A-1")
    np.testing.assert_allclose(
        default_model.predict_proba(shuffled)[:, 1],
        default_model.predict_proba(holdout[FEATURES])[:, 1],
        rtol=0,
        atol=FLOAT_NOISE,
    )


def test_fitting_is_deterministic_for_a_random_state(splits, fit):
    first, second = (fit(splits["train"], n_estimators=5, random_state=3) for _ in range(2))
    holdout = splits["holdout"][FEATURES]
    np.testing.assert_allclose(
        first.predict_proba(holdout), second.predict_proba(holdout), rtol=0, atol=FLOAT_NOISE
    )


def test_the_specs_hyperparameters_reach_the_classifier_and_the_rest_are_defaults(fit, splits):
    classifier = fit(splits["train"].head(500), n_estimators=7, class_weight="none").named_steps["classifier"]
    assert classifier.n_estimators == 7
    assert classifier.class_weight is None
    assert (classifier.max_depth, classifier.min_samples_leaf, classifier.random_state) == (10, 1, 42)


def test_classification_metrics_of_perfect_predictions_are_one():
    metrics = classification_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert metrics == {key: 1.0 for key in METRIC_KEYS}
    assert all(type(value) is float for value in metrics.values())


def test_classification_metrics_apply_the_threshold():
    y, proba = [0, 0, 1, 1], [0.1, 0.6, 0.7, 0.9]
    assert classification_metrics(y, proba)["precision"] == pytest.approx(2 / 3)
    assert classification_metrics(y, proba, threshold=0.65)["precision"] == 1.0


def test_classification_metrics_without_positive_predictions_are_zero_not_an_error():
    metrics = classification_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4])
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == 0.0


def test_classification_metrics_reject_a_single_class():
    with pytest.raises(DataValidationError, match=r"both classes .*found only \[0\]"):
        classification_metrics([0, 0, 0], [0.1, 0.2, 0.3])


def test_classification_metrics_reject_mismatched_lengths():
    with pytest.raises(DataValidationError, match="shape"):
        classification_metrics([0, 1, 0], [0.1, 0.2])


def test_feature_importances_are_sorted_and_named_without_transformer_prefixes(default_model, splits):
    importances = feature_importances(default_model, splits["validation"], target=TARGET)
    assert list(importances.columns) == ["feature", "importance", "method"]
    assert importances["importance"].is_monotonic_decreasing
    assert importances["importance"].sum() == pytest.approx(1.0)
    assert not importances["feature"].str.contains("__").any()
    assert set(NUMERIC) <= set(importances["feature"])
    assert "equipment_type_pump" in set(importances["feature"])


def test_fault_sensors_are_the_most_important_features(default_model, splits):
    top = set(feature_importances(default_model, splits["validation"], target=TARGET)["feature"].head(3))
    assert top == {"vibration_mm_s", "temperature_c", "load_pct"}


def test_estimators_without_impurity_importances_get_permutation_importances_per_input(models, splits):
    importances = feature_importances(models["logistic_regression"], splits["validation"], target=TARGET)
    assert set(importances["method"]) == {"permutation"}
    assert set(importances["feature"]) == set(FEATURES)
    assert importances["feature"].iloc[0] in {"vibration_mm_s", "temperature_c", "load_pct"}


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_skops_trusted_types_are_exactly_what_each_fitted_pipeline_needs(models, kind):
    payload = sio.dumps(models[kind])
    assert sorted(sio.get_untrusted_types(data=payload)) == sorted(ESTIMATORS[kind].trusted_types)


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_fitted_pipelines_round_trip_through_skops_with_their_trusted_types(models, splits, kind):
    model = models[kind]
    loaded = sio.loads(sio.dumps(model), trusted=list(ESTIMATORS[kind].trusted_types))
    holdout = splits["holdout"]
    np.testing.assert_allclose(
        loaded.predict_proba(holdout), model.predict_proba(holdout), rtol=0, atol=FLOAT_NOISE
    )
    assert score_model(loaded, holdout, target=TARGET) == pytest.approx(
        score_model(model, holdout, target=TARGET)
    )
    assert TARGET not in loaded.named_steps["preprocess"].get_feature_names_out()


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_unseen_categories_and_missing_values_are_scored_not_crashed_on(models, splits, kind):
    rows = splits["holdout"].head(20).copy()
    rows.loc[rows.index[:5], "equipment_type"] = "spaceship"
    rows.loc[rows.index[5:10], "temperature_c"] = np.nan
    proba = models[kind].predict_proba(rows)[:, 1]
    assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()


def _saved_form(model) -> dict:
    """A fitted pipeline as skops saves it, with each array's file replaced by its content's hash and
    skops' object ids dropped: equal for two pipelines with the same classes, params and fitted state."""
    import hashlib
    import io
    import json
    import zipfile

    archive = zipfile.ZipFile(io.BytesIO(sio.dumps(model)))

    def canonical(node):
        if isinstance(node, dict):
            return {
                key: hashlib.sha256(archive.read(value)).hexdigest() if key == "file" else canonical(value)
                for key, value in node.items()
                if key != "__id__"
            }
        if isinstance(node, list):
            return [canonical(value) for value in node]
        return node

    return canonical(json.loads(archive.read("schema.json")))


#: Estimators whose classifier fits as Pipeline.fit would; the boosting libraries' fit (categories,
#: class balance, early stopping) is tested in test_cmms_pm_boosting.py.
PLAIN_FIT = sorted(kind for kind, est in ESTIMATORS.items() if est.fit is None)


@pytest.mark.parametrize("kind", PLAIN_FIT)
def test_staged_fit_saves_and_predicts_exactly_as_pipeline_fit(splits, shipped_spec, kind, monkeypatch):
    from cmms_pm import training
    from cmms_pm.estimators import build_pipeline

    # Chunks smaller than the frame, the last one partial: the chunked matrix is the whole one.
    monkeypatch.setattr(training, "TRANSFORM_CHUNK_ROWS", 701)
    train, features = splits["train"], shipped_spec.features
    params = {"n_estimators": 7} if kind == "random_forest" else {}
    staged = training.fit_model(
        train, features=features, target=TARGET, estimator=kind, hyperparameters=params
    )
    reference = build_pipeline(
        kind, params, categorical=features.categorical, numeric=(*features.numeric, *features.integer)
    ).fit(train, train[TARGET].to_numpy())

    assert _saved_form(staged) == _saved_form(reference)
    if kind == "random_forest":  # one thread: the trees' probabilities summed in one order
        for model in (staged, reference):
            model.set_params(classifier__n_jobs=1)
    holdout = splits["holdout"]
    assert np.array_equal(staged.predict_proba(holdout), reference.predict_proba(holdout))


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_staged_fit_inputs_hold_no_reference_to_the_training_frame(splits, shipped_spec, kind):
    import gc
    import weakref

    from cmms_pm.training import fit_classifier, fit_preprocessor

    train = splits["train"].copy()
    columns = [column.to_numpy() for _, column in train.items()]
    model, x, y = fit_preprocessor(
        train, features=shipped_spec.features, target=TARGET, estimator=kind, hyperparameters={}
    )
    assert not any(np.shares_memory(array, column) for array in (x, y) for column in columns)
    frame = weakref.ref(train)
    del train, columns
    gc.collect()
    assert frame() is None
    # The forest's own DTYPE; XGBoost's DMatrix is float32 too.
    assert x.dtype == ("float32" if kind in ("random_forest", "xgboost") else "float64")
    fit_classifier(model, x, y)


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_positive_proba_gives_exactly_the_pipelines_probabilities(models, splits, kind, monkeypatch):
    """Scoring and validation build the classifier's input chunk by chunk in its own dtype instead of
    Pipeline.predict_proba's float64 stack: not one probability may differ, for any kind, across
    chunk boundaries, with extra columns, an unseen category and missing values."""
    from cmms_pm import training
    from cmms_pm.training import positive_proba

    monkeypatch.setattr(training, "TRANSFORM_CHUNK_ROWS", 97)
    frame = splits["holdout"].head(1000).assign(asset_tag="A-1").reset_index(drop=True)
    frame.loc[3, "equipment_type"] = "never_seen_in_training"
    frame.loc[5, "temperature_c"] = np.nan
    model = models[kind]
    expected = model.predict_proba(frame)[:, 1]
    # FLOAT_NOISE: a forest's threads add the trees' votes in any order, call to call.
    np.testing.assert_allclose(positive_proba(model, frame), expected, rtol=0, atol=FLOAT_NOISE)
    # Not a pipeline of ours: asked directly.
    np.testing.assert_allclose(positive_proba(_Direct(model), frame), expected, rtol=0, atol=FLOAT_NOISE)


class _Direct:
    def __init__(self, model):
        self.model = model

    def predict_proba(self, frame):
        return self.model.predict_proba(frame)
