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

    def defaults(self) -> dict[str, Any]:
        return {name: schema["default"] for name, schema in self.hyperparameters.items()}


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


_RANDOM_STATE = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 42}

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
