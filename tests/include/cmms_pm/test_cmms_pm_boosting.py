"""XGBoost and LightGBM in the pipeline: native categories and missing values, early stopping on the
validation split, class imbalance as each library advises, determinism, and a saved form that skops
loads with explicit trusted types (alone and under a calibrated wrapper) without pickle."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import skops.io as sio

from cmms_pm.estimators import ESTIMATORS
from cmms_pm.schema import TARGET
from cmms_pm.training import fit_classifier, fit_preprocessor, positive_proba, score_model

BOOSTERS = ("xgboost", "lightgbm")
#: What sklearn's calibration (CalibratedClassifierCV(FrozenEstimator(clf))) adds to a model's types.
CALIBRATION_TYPES = ("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration")
SMALL = {"n_estimators": 400, "learning_rate": 0.1, "early_stopping_rounds": 10}


def _fit(splits, shipped_spec, kind, *, validation=True, monitor=None, **params):
    model, x, y = fit_preprocessor(
        splits["train"], features=shipped_spec.features, target=TARGET, estimator=kind,
        hyperparameters={**SMALL, **params},
    )  # fmt: skip
    val = splits["validation"]
    fit_classifier(
        model, x, y, validation=(val, val[TARGET].to_numpy()) if validation else None, monitor=monitor
    )
    return model, y


def _rounds(model) -> int:
    classifier = model.named_steps["classifier"]
    if hasattr(classifier, "get_booster"):
        return classifier.get_booster().num_boosted_rounds()
    return classifier.booster_.num_trees()


@pytest.fixture(scope="module")
def boosted(splits, shipped_spec) -> dict:
    return {kind: _fit(splits, shipped_spec, kind)[0] for kind in BOOSTERS}


@pytest.mark.parametrize("kind", BOOSTERS)
def test_early_stopping_on_the_validation_split_and_all_rounds_without_it(
    splits, shipped_spec, boosted, kind
):
    stopped = boosted[kind]
    classifier = stopped.named_steps["classifier"]
    best = classifier.best_iteration if kind == "xgboost" else classifier.best_iteration_
    assert 0 < best < SMALL["n_estimators"] - SMALL["early_stopping_rounds"]
    full, _ = _fit(splits, shipped_spec, kind, validation=False, n_estimators=60)
    assert _rounds(full) == 60  # no validation: no early stopping, and no error either
    # Stopping early kept the model from overfitting the train split: it scores as well on holdout.
    assert score_model(stopped, splits["holdout"], target=TARGET)["roc_auc"] > 0.85
    # The fitted classifier carries no callback (code) into its saved form.
    assert classifier.get_params().get("callbacks") is None


def test_class_imbalance_as_each_library_advises(splits, shipped_spec, boosted):
    y = splits["train"][TARGET].to_numpy()
    ratio = (len(y) - y.sum()) / y.sum()
    assert ratio > 3  # rare failures
    xgb = boosted["xgboost"].named_steps["classifier"]
    assert xgb.get_params()["scale_pos_weight"] == pytest.approx(ratio)  # negatives / positives
    assert boosted["lightgbm"].named_steps["classifier"].get_params()["is_unbalance"] is True
    unweighted, _ = _fit(splits, shipped_spec, "xgboost", class_weight="none")
    assert unweighted.named_steps["classifier"].get_params()["scale_pos_weight"] == 1.0
    # Weighting the rare class raises recall at the 0.5 threshold (the point of doing it).
    holdout = splits["holdout"]
    weighted_recall = score_model(boosted["xgboost"], holdout, target=TARGET)["recall"]
    assert weighted_recall > score_model(unweighted, holdout, target=TARGET)["recall"]


def test_categories_are_split_on_natively_not_one_hot_encoded(boosted):
    xgb = boosted["xgboost"].named_steps["classifier"]
    assert xgb.get_booster().feature_types[0] == "c"
    assert xgb.n_features_in_ == len(boosted["xgboost"].named_steps["preprocess"].get_feature_names_out())
    booster = boosted["lightgbm"].named_steps["classifier"].booster_
    assert "[categorical_feature: 0]" in booster.model_to_string()
    # A categorical feature's info lists its category codes; a numeric one only its range.
    infos = booster.dump_model()["feature_infos"]
    assert set(infos["Column_0"]["values"]) >= set(range(6)) and infos["Column_1"]["values"] == []


@pytest.mark.parametrize("kind", BOOSTERS)
def test_missing_values_and_unseen_categories_reach_the_booster_as_missing(boosted, splits, kind):
    model = boosted[kind]
    rows = splits["holdout"].head(50).copy()
    rows.loc[rows.index[:5], "equipment_type"] = "spaceship"
    rows.loc[rows.index[5:10], "temperature_c"] = np.nan
    x = model.named_steps["preprocess"].transform(rows)
    assert np.isnan(x[:5, 0]).all() and np.isnan(x[5:10]).any()  # no imputation, no crash
    proba = positive_proba(model, rows)
    assert np.isfinite(proba).all()
    assert np.array_equal(proba, model.predict_proba(rows)[:, 1])


@pytest.mark.parametrize("kind", BOOSTERS)
def test_same_seed_same_model_for_any_thread_count(splits, shipped_spec, boosted, kind):
    sampled = {"subsample": 0.8, "colsample_bytree": 0.8, "n_estimators": 80}
    again, _ = _fit(splits, shipped_spec, kind, n_jobs=1, **sampled)
    other, _ = _fit(splits, shipped_spec, kind, n_jobs=2, **sampled)
    seed, _ = _fit(splits, shipped_spec, kind, n_jobs=2, random_state=7, **sampled)
    holdout = splits["holdout"]
    assert np.array_equal(positive_proba(again, holdout), positive_proba(other, holdout))
    assert not np.array_equal(positive_proba(again, holdout), positive_proba(seed, holdout))


@pytest.mark.parametrize("kind", BOOSTERS)
def test_the_monitor_hears_every_round_and_stops_the_fit_by_raising(splits, shipped_spec, kind):
    heard: list[tuple[int, float]] = []

    class Enough(Exception):
        pass

    def monitor(iteration: int, value: float) -> None:
        heard.append((iteration, value))
        if iteration == 4:
            raise Enough

    with pytest.raises(Enough):
        _fit(splits, shipped_spec, kind, monitor=monitor)
    assert [i for i, _ in heard] == [0, 1, 2, 3, 4]
    assert all(0 < value <= 1 for _, value in heard)  # validation PR-AUC


@pytest.mark.parametrize("kind", BOOSTERS)
def test_the_booster_is_saved_in_its_own_format_inside_skops(boosted, kind):
    """No pickle anywhere in the archive: XGBoost's state is its UBJSON buffer (a .bin member),
    LightGBM's its model text (a string in schema.json)."""
    payload = sio.dumps(boosted[kind])
    archive = zipfile.ZipFile(io.BytesIO(payload))
    schema = archive.read("schema.json").decode()
    assert "pickle" not in schema.lower() and "__reduce__" not in schema
    if kind == "xgboost":
        [blob] = [archive.read(n) for n in archive.namelist() if n.endswith(".bin")]
        assert blob[:1] == b"{"  # UBJSON object marker
    else:
        assert "tree_sizes=" in schema and json.loads(schema)  # the model text, inline


@pytest.mark.parametrize("kind", BOOSTERS)
def test_a_calibrated_booster_round_trips_with_its_trusted_types_plus_calibrations(boosted, splits, kind):
    """i19-model wraps the classifier in CalibratedClassifierCV(FrozenEstimator(clf)): the booster's
    trusted types plus sklearn's calibration types load it, and nothing else is needed."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    model = boosted[kind]
    validation = splits["validation"]
    preprocess, classifier = model.named_steps["preprocess"], model.named_steps["classifier"]
    calibrated = CalibratedClassifierCV(FrozenEstimator(classifier), method="sigmoid").fit(
        preprocess.transform(validation), validation[TARGET].to_numpy()
    )
    wrapped = Pipeline([("preprocess", preprocess), ("classifier", calibrated)])
    payload = sio.dumps(wrapped)
    trusted = [*ESTIMATORS[kind].trusted_types, *CALIBRATION_TYPES]
    assert set(sio.get_untrusted_types(data=payload)) <= set(trusted)
    loaded = sio.loads(payload, trusted=trusted)
    holdout = splits["holdout"]
    np.testing.assert_allclose(
        loaded.predict_proba(holdout), wrapped.predict_proba(holdout), rtol=0, atol=1e-12
    )
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.loads(payload, trusted=list(ESTIMATORS[kind].trusted_types))


@pytest.mark.parametrize("kind", BOOSTERS)
def test_a_corrupted_booster_state_fails_to_load_with_an_error_not_a_crash(boosted, kind):
    payload = sio.dumps(boosted[kind])
    source = zipfile.ZipFile(io.BytesIO(payload))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if kind == "xgboost" and name.endswith(".bin"):
                data = b"{garbage" + data[100:200]
            if kind == "lightgbm" and name == "schema.json":
                # Not a malformed tree: LightGBM 4.7 aborts the process on some of those (the model
                # loader's subprocess check refuses them, tests/plugins/.../test_model_loading.py).
                data = data.replace(b"num_class=1", b"num_klass=1")
            target.writestr(name, data)
    with pytest.raises(Exception) as caught:
        sio.loads(out.getvalue(), trusted=list(ESTIMATORS[kind].trusted_types))
    assert type(caught.value).__module__.split(".")[0] in ("xgboost", "lightgbm", "builtins")


@pytest.mark.parametrize("kind", BOOSTERS)
def test_shap_tree_explainer_explains_the_booster_additively(boosted, splits, kind):
    """Reasons (i19-model's cmms_pm.explain) use SHAP's TreeExplainer: it reads both boosters,
    categorical splits included, and the contributions add up to the model's raw score."""
    import shap

    model = boosted[kind]
    classifier = model.named_steps["classifier"]
    x = model.named_steps["preprocess"].transform(splits["holdout"].head(40))
    explainer = shap.TreeExplainer(classifier)
    values = np.asarray(explainer.shap_values(x))
    if kind == "xgboost":
        margin = classifier.predict(x, output_margin=True)
    else:
        margin = classifier.predict_proba(x, raw_score=True)
    np.testing.assert_allclose(values.sum(axis=1) + explainer.expected_value, margin, atol=1e-4)
