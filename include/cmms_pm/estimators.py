"""The estimators a spec may choose, each a scikit-learn Pipeline that takes raw frames.

Every estimator declares its hyperparameters as JSON Schema (type, bounds, default): the spec
loader, the trigger form and the API validate against the same definitions, and the pipeline is
built only from validated values. Each also lists the types ``skops`` must be told to trust when
the fitted pipeline is saved and loaded (no pickle anywhere).

The pipelines select their input columns by name, so a frame with extra columns (ids, the label)
or another column order scores the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cmms_pm.exceptions import SpecError

#: ``monitor(iteration, value)``: called after each boosting round with the validation metric
#: (higher is better); raising from it stops the fit (a pruned tuning trial).
Monitor = Callable[[int, float], None]
FitFunction = Callable[[Any, Any, Any, "tuple[Any, Any] | None", "Monitor | None"], None]
#: Hyperparameters that are settings of the run, never searched by tuning.
UNTUNABLE = ("random_state", "n_jobs")

#: Class weighting that suits rare failures: +0.02 holdout F1 on the ~9 % positive telemetry.
_CLASS_WEIGHT = {"enum": ["balanced", "balanced_subsample", "none"]}


@dataclass(frozen=True)
class Estimator:
    """One estimator kind: its title, hyperparameter schemas, pipeline builder and skops trust list.

    ``preprocess_learns_categories_only`` says the fitted preprocessor depends on nothing but the
    distinct values of the categorical columns (encoders + numeric passthrough): training fits it
    on one row per category instead of the whole frame.
    """

    kind: str
    title: str
    hyperparameters: Mapping[str, Mapping[str, Any]]
    build: Callable[[Mapping[str, Any], Sequence[str], Sequence[str]], Any]
    trusted_types: tuple[str, ...]
    preprocess_learns_categories_only: bool = False
    #: Fits the pipeline's classifier step itself (``fit(pipeline, x, y, validation, monitor)``,
    #: ``x`` the preprocessor's output): early stopping on the validation pair, class weights from
    #: the labels, a per-round monitor for pruning. ``None``: ``classifier.fit(x, y)``.
    fit: FitFunction | None = None
    #: Packages (import names) the logged model needs besides scikit-learn.
    requirements: tuple[str, ...] = ()
    #: Module path of the classifier step's class, for estimators with their own ``fit``.
    classifier: str = ""

    def defaults(self) -> dict[str, Any]:
        return {name: schema["default"] for name, schema in self.hyperparameters.items()}

    @property
    def tunable(self) -> tuple[str, ...]:
        """Hyperparameters a tuning search space may name (not the seed or the thread count)."""
        return tuple(name for name in self.hyperparameters if name not in UNTUNABLE)


def _random_forest(params: Mapping[str, Any], categorical: Sequence[str], numeric: Sequence[str]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    preprocess = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(categorical)),
            ("num", "passthrough", list(numeric)),
        ],
        remainder="drop",
    )
    classifier = RandomForestClassifier(
        n_estimators=params["n_estimators"],
        max_depth=params["max_depth"],
        min_samples_leaf=params["min_samples_leaf"],
        class_weight=_class_weight(params["class_weight"]),
        random_state=params["random_state"],
        n_jobs=-1,
    )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def _hist_gradient_boosting(
    params: Mapping[str, Any], categorical: Sequence[str], numeric: Sequence[str]
) -> Any:
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    # Categories become integer codes the booster splits on natively; unseen and missing → NaN,
    # which the booster routes like a missing value.
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    preprocess = ColumnTransformer(
        [("cat", encoder, list(categorical)), ("num", "passthrough", list(numeric))], remainder="drop"
    )
    classifier = HistGradientBoostingClassifier(
        learning_rate=params["learning_rate"],
        max_iter=params["max_iter"],
        max_depth=params["max_depth"],
        max_leaf_nodes=params["max_leaf_nodes"],
        l2_regularization=params["l2_regularization"],
        class_weight=_class_weight(params["class_weight"]),
        categorical_features=[True] * len(categorical) + [False] * len(numeric),
        early_stopping=False,
        random_state=params["random_state"],
    )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def _logistic_regression(
    params: Mapping[str, Any], categorical: Sequence[str], numeric: Sequence[str]
) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric_steps = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    preprocess = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(categorical)),
            ("num", numeric_steps, list(numeric)),
        ],
        remainder="drop",
    )
    classifier = LogisticRegression(
        C=params["C"],
        class_weight=_class_weight(params["class_weight"]),
        max_iter=params["max_iter"],
        random_state=params["random_state"],
    )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def _class_weight(value: str) -> str | None:
    return None if value == "none" else value


# --- Gradient-boosting libraries: XGBoost and LightGBM --------------------------------------------
# Both take the frame through the same preprocessor as hist_gradient_boosting: categories become
# integer codes (unseen and missing → NaN) that the library splits on natively as categories, and
# numeric columns pass through with their NaN, which both route as missing values. The fitted
# booster lives inside the classifier's state as the library's own format (XGBoost's UBJSON
# buffer, LightGBM's model text), which skops stores as bytes/str: no pickle on save or load.


def _ordinal_preprocess(categorical: Sequence[str], numeric: Sequence[str]) -> Any:
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OrdinalEncoder

    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    return ColumnTransformer(
        [("cat", encoder, list(categorical)), ("num", "passthrough", list(numeric))], remainder="drop"
    )


def _xgboost(params: Mapping[str, Any], categorical: Sequence[str], numeric: Sequence[str]) -> Any:
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    classifier = XGBClassifier(
        n_estimators=params["n_estimators"],
        learning_rate=params["learning_rate"],
        max_depth=params["max_depth"],
        min_child_weight=params["min_child_weight"],
        subsample=params["subsample"],
        colsample_bytree=params["colsample_bytree"],
        reg_lambda=params["reg_lambda"],
        reg_alpha=params["reg_alpha"],
        gamma=params["gamma"],
        # XGBoost's advice for imbalance: scale_pos_weight = negatives / positives, counted at fit.
        scale_pos_weight=_BALANCED if params["class_weight"] == "balanced" else 1.0,
        early_stopping_rounds=params["early_stopping_rounds"] or None,
        eval_metric="aucpr",
        tree_method="hist",
        enable_categorical=True,
        feature_types=["c"] * len(categorical) + ["q"] * len(numeric),
        importance_type="gain",
        random_state=params["random_state"],
        n_jobs=params["n_jobs"],
    )
    return Pipeline([("preprocess", _ordinal_preprocess(categorical, numeric)), ("classifier", classifier)])


def _lightgbm(params: Mapping[str, Any], categorical: Sequence[str], numeric: Sequence[str]) -> Any:
    from lightgbm import LGBMClassifier
    from sklearn.pipeline import Pipeline

    classifier = LGBMClassifier(
        n_estimators=params["n_estimators"],
        learning_rate=params["learning_rate"],
        num_leaves=params["num_leaves"],
        max_depth=params["max_depth"],
        min_child_samples=params["min_child_samples"],
        subsample=params["subsample"],
        subsample_freq=1 if params["subsample"] < 1 else 0,
        colsample_bytree=params["colsample_bytree"],
        reg_lambda=params["reg_lambda"],
        reg_alpha=params["reg_alpha"],
        # LightGBM's advice for imbalance: is_unbalance (weights the positives by negatives/positives).
        is_unbalance=params["class_weight"] == "balanced",
        early_stopping_round=params["early_stopping_rounds"] or None,
        metric="average_precision",
        importance_type="gain",
        random_state=params["random_state"],
        n_jobs=params["n_jobs"],
        # Same model whatever the thread count, and no chatter on stdout.
        deterministic=True,
        force_col_wise=True,
        verbose=-1,
    )
    return Pipeline([("preprocess", _ordinal_preprocess(categorical, numeric)), ("classifier", classifier)])


#: ``scale_pos_weight`` of an XGBoost classifier built with ``class_weight: balanced``, until its
#: fit replaces it by negatives / positives of the training labels.
_BALANCED = "balanced"


def _categorical_count(model: Any) -> int:
    """How many leading columns of the classifier's input are category codes (the ``cat`` step)."""
    for name, _transformer, columns in model.named_steps["preprocess"].transformers:
        if name == "cat":
            return len(columns)
    return 0


def _fit_xgboost(
    model: Any, x: Any, y: Any, validation: tuple[Any, Any] | None, monitor: Monitor | None
) -> None:
    import numpy as np
    import xgboost

    classifier = model.named_steps["classifier"]
    if classifier.get_params()["scale_pos_weight"] == _BALANCED:
        positives = int(np.count_nonzero(y))
        classifier.set_params(scale_pos_weight=(len(y) - positives) / max(positives, 1))
    temporary: dict[str, Any] = {}
    if validation is None:
        temporary["early_stopping_rounds"] = None
    if monitor is not None:
        on_round = monitor  # a class body does not keep the narrowing of ``monitor``

        class _Monitor(xgboost.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                on_round(epoch, float(evals_log["validation_0"]["aucpr"][-1]))
                return False

        temporary["callbacks"] = [_Monitor()]
    kept = {name: classifier.get_params()[name] for name in temporary}
    classifier.set_params(**temporary)
    try:
        if validation is None:
            classifier.fit(x, y, verbose=False)
        else:
            classifier.fit(x, y, eval_set=[validation], verbose=False)
    finally:
        # Callbacks are code: they must not be saved with the model.
        classifier.set_params(**kept)


def _fit_lightgbm(
    model: Any, x: Any, y: Any, validation: tuple[Any, Any] | None, monitor: Monitor | None
) -> None:
    classifier = model.named_steps["classifier"]
    callbacks = []
    if monitor is not None:

        def report(env: Any) -> None:
            for _data, _metric, value, _higher_is_better in env.evaluation_result_list:
                monitor(env.iteration, float(value))

        callbacks.append(report)
    kept = classifier.get_params()["early_stopping_round"]
    if validation is None:
        classifier.set_params(early_stopping_round=None)
    try:
        classifier.fit(
            x,
            y,
            categorical_feature=list(range(_categorical_count(model))),
            callbacks=callbacks or None,
            **({} if validation is None else {"eval_X": (validation[0],), "eval_y": (validation[1],)}),
        )
    finally:
        classifier.set_params(early_stopping_round=kept)


_RANDOM_STATE = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 42}
_BOOSTING_ROUNDS = {
    "type": "integer",
    "minimum": 1,
    "maximum": 10000,
    "default": 500,
    "title": "Boosting rounds (at most, with early stopping)",
}
_LEARNING_RATE = {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.05}
_FRACTION = {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1.0}
_PENALTY = {"type": "number", "minimum": 0, "maximum": 1000, "default": 0.0}
_EARLY_STOPPING = {
    "type": "integer",
    "minimum": 0,
    "maximum": 1000,
    "default": 50,
    "title": "Early stopping rounds on the validation split (0: off)",
}
#: Threads of one fit. Two suit the 2-core workers this project runs on; a tuning trial uses one,
#: since trials run side by side. The fitted model is the same for any count (seeded, deterministic).
_THREADS = {"type": "integer", "minimum": 1, "maximum": 256, "default": 2, "title": "Threads"}

ESTIMATORS: dict[str, Estimator] = {
    "random_forest": Estimator(
        kind="random_forest",
        title="Random forest",
        hyperparameters={
            "n_estimators": {
                "type": "integer",
                "minimum": 1,
                "maximum": 2000,
                "default": 100,
                "title": "Number of trees",
            },
            "max_depth": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100,
                "default": 10,
                "title": "Maximum tree depth",
            },
            "min_samples_leaf": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1},
            "class_weight": {**_CLASS_WEIGHT, "default": "balanced_subsample"},
            "random_state": _RANDOM_STATE,
        },
        build=_random_forest,
        trusted_types=("sklearn.tree._tree.Tree",),
        preprocess_learns_categories_only=True,
    ),
    "hist_gradient_boosting": Estimator(
        kind="hist_gradient_boosting",
        title="Histogram gradient boosting",
        hyperparameters={
            "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.1},
            "max_iter": {
                "type": "integer",
                "minimum": 1,
                "maximum": 5000,
                "default": 200,
                "title": "Boosting iterations",
            },
            "max_depth": {"type": "integer", "minimum": 1, "maximum": 100, "default": 8},
            "max_leaf_nodes": {"type": "integer", "minimum": 2, "maximum": 4096, "default": 31},
            "l2_regularization": {"type": "number", "minimum": 0, "maximum": 1000, "default": 0.0},
            "class_weight": {**_CLASS_WEIGHT, "enum": ["balanced", "none"], "default": "balanced"},
            "random_state": _RANDOM_STATE,
        },
        build=_hist_gradient_boosting,
        # The booster's internal categorical preprocessor holds partial(check_array, ...); skops
        # loads a partial's function and arguments as nodes of their own, each checked in turn.
        trusted_types=(
            "functools.partial",
            "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
            "sklearn.utils.validation.check_array",
        ),
        preprocess_learns_categories_only=True,
    ),
    "logistic_regression": Estimator(
        kind="logistic_regression",
        title="Logistic regression (scaled)",
        hyperparameters={
            "C": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6, "default": 1.0},
            "max_iter": {"type": "integer", "minimum": 10, "maximum": 100000, "default": 1000},
            "class_weight": {**_CLASS_WEIGHT, "enum": ["balanced", "none"], "default": "balanced"},
            "random_state": _RANDOM_STATE,
        },
        build=_logistic_regression,
        trusted_types=("numpy.dtype",),  # the imputer's fitted dtype
    ),
    "xgboost": Estimator(
        kind="xgboost",
        title="XGBoost (gradient-boosted trees)",
        hyperparameters={
            "n_estimators": {**_BOOSTING_ROUNDS},
            "learning_rate": {**_LEARNING_RATE},
            "max_depth": {"type": "integer", "minimum": 1, "maximum": 20, "default": 6},
            "min_child_weight": {"type": "number", "minimum": 0, "maximum": 1000, "default": 1.0},
            "subsample": {**_FRACTION, "title": "Row subsample per tree"},
            "colsample_bytree": {**_FRACTION, "title": "Column subsample per tree"},
            "reg_lambda": {**_PENALTY, "default": 1.0, "title": "L2 regularization"},
            "reg_alpha": {**_PENALTY, "title": "L1 regularization"},
            "gamma": {**_PENALTY, "title": "Minimum loss reduction to split"},
            "early_stopping_rounds": {**_EARLY_STOPPING},
            "class_weight": {**_CLASS_WEIGHT, "enum": ["balanced", "none"], "default": "balanced"},
            "random_state": _RANDOM_STATE,
            "n_jobs": {**_THREADS},
        },
        build=_xgboost,
        trusted_types=("xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"),
        fit=_fit_xgboost,
        requirements=("xgboost",),
        classifier="xgboost.sklearn.XGBClassifier",
    ),
    "lightgbm": Estimator(
        kind="lightgbm",
        title="LightGBM (gradient-boosted trees)",
        hyperparameters={
            "n_estimators": {**_BOOSTING_ROUNDS},
            "learning_rate": {**_LEARNING_RATE},
            "num_leaves": {"type": "integer", "minimum": 2, "maximum": 4096, "default": 31},
            "max_depth": {
                "type": "integer",
                "minimum": -1,
                "maximum": 100,
                "default": -1,
                "title": "Maximum tree depth (-1: no limit)",
            },
            "min_child_samples": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 20},
            "subsample": {**_FRACTION, "title": "Row subsample per tree"},
            "colsample_bytree": {**_FRACTION, "title": "Column subsample per tree"},
            "reg_lambda": {**_PENALTY, "title": "L2 regularization"},
            "reg_alpha": {**_PENALTY, "title": "L1 regularization"},
            "early_stopping_rounds": {**_EARLY_STOPPING},
            "class_weight": {**_CLASS_WEIGHT, "enum": ["balanced", "none"], "default": "balanced"},
            "random_state": _RANDOM_STATE,
            "n_jobs": {**_THREADS},
        },
        build=_lightgbm,
        trusted_types=(
            "collections.OrderedDict",
            "lightgbm.basic.Booster",
            "lightgbm.sklearn.LGBMClassifier",
        ),
        fit=_fit_lightgbm,
        requirements=("lightgbm",),
        classifier="lightgbm.sklearn.LGBMClassifier",
    ),
}


#: What a calibrated pipeline adds to any estimator's skops trust list (``cmms_pm.calibration``):
#: the calibrated classifier's per-class wrapper and Platt's sigmoid. ``FrozenEstimator`` and
#: ``IsotonicRegression`` are among skops' own trusted scikit-learn types.
CALIBRATION_TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


def trusted_types(kind: str) -> list[str]:
    """Every type skops must trust to save or load a (calibrated) pipeline of estimator ``kind``."""
    return [*estimator(kind).trusted_types, *CALIBRATION_TRUSTED_TYPES]


def estimator(kind: str) -> Estimator:
    try:
        return ESTIMATORS[kind]
    except KeyError:
        raise SpecError(f"estimator {kind!r} is not one of {sorted(ESTIMATORS)}") from None


def hyperparameter_schema(kind: str) -> dict[str, Any]:
    """JSON Schema of one estimator's hyperparameters (an object; unknown keys refused)."""
    return {
        "type": "object",
        "properties": copy.deepcopy(dict(estimator(kind).hyperparameters)),
        "additionalProperties": False,
    }


def all_hyperparameters_schema() -> dict[str, Any]:
    """JSON Schema of any estimator's hyperparameters: the union, for a trigger-time override form.

    A name two estimators share (``max_depth``) takes the widest bounds; which names apply to the
    chosen estimator is checked by :func:`validate_hyperparameters` when the run starts.
    """
    properties: dict[str, Any] = {}
    for est in ESTIMATORS.values():
        for name, schema in est.hyperparameters.items():
            merged = properties.setdefault(name, {k: v for k, v in schema.items() if k != "default"})
            for bound, pick in (("minimum", min), ("maximum", max)):
                if bound in schema and bound in merged:
                    merged[bound] = pick(merged[bound], schema[bound])
            if "enum" in schema:
                merged["enum"] = sorted(set(merged.get("enum", [])) | set(schema["enum"]))
    return {"type": "object", "properties": properties, "additionalProperties": False}


def validate_hyperparameters(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against ``kind``'s schema, completed with its defaults; ``SpecError`` names
    every offending key. Integral floats are accepted for integers (JSON and forms send ``10.0``)."""
    import jsonschema

    est = estimator(kind)
    values = {key: _integral(value, est.hyperparameters.get(key, {})) for key, value in params.items()}
    validator = jsonschema.Draft7Validator(hyperparameter_schema(kind))
    problems = sorted(
        f"{'.'.join(map(str, err.absolute_path)) or kind}: {err.message}"
        for err in validator.iter_errors(values)
    )
    if problems:
        raise SpecError(f"{est.kind}: " + "; ".join(problems))
    return {**est.defaults(), **values}


def _integral(value: Any, schema: Mapping[str, Any]) -> Any:
    if schema.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def build_pipeline(
    kind: str, params: Mapping[str, Any], *, categorical: Sequence[str], numeric: Sequence[str]
) -> Any:
    """An unfitted pipeline of ``kind`` over the given feature columns, from validated ``params``."""
    return estimator(kind).build(validate_hyperparameters(kind, params), categorical, numeric)


def fit_function(classifier: Any) -> FitFunction | None:
    """The estimator-specific fit of ``classifier``'s estimator (by its class), if it has one."""
    name = f"{type(classifier).__module__}.{type(classifier).__qualname__}"
    for est in ESTIMATORS.values():
        if est.fit is not None and est.classifier == name:
            return est.fit
    return None
