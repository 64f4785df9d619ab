"""Why a row scored high: per-feature contributions of a fitted pipeline's classifier, per raw column.

Contributions are Shapley values on the **uncalibrated** classifier's own output (see
``cmms_pm.training.base_classifier``): for each row, ``base_value + sum(contributions) == output``,
where the output is the forest's probability (random forest), the log-odds (gradient boosting,
XGBoost, LightGBM, logistic regression). Calibration is a monotone map applied afterwards, so the
order of reasons is the classifier's; the risk a planner reads is the calibrated probability.

- Tree models: SHAP's TreeExplainer (path-dependent Tree SHAP, exact for the trees). scikit-learn's
  histogram gradient boosting splits categorical features on bitsets, which SHAP's own reader of
  that model ignores (it reads the split as a threshold); those trees are handed to SHAP with each
  distinct bitset split as a 0/1 column of its own, mapped back to its raw feature afterwards, so
  the values still sum to the booster's output. XGBoost and LightGBM use their native Tree SHAP
  (``pred_contribs`` / ``pred_contrib``), which handles their categorical splits.
- Linear models: ``coef * x`` on the preprocessed (scaled, one-hot) inputs, base value the
  intercept; exact, and the scaled numeric inputs are centred on the training mean.

One-hot (or otherwise expanded) columns are summed back to the raw feature they came from, so a
reason names ``equipment_type``, never ``cat__equipment_type_pump``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cmms_pm.exceptions import DataValidationError
from cmms_pm.training import _input_columns as input_columns
from cmms_pm.training import _input_dtype, base_classifier, transform_in_chunks

#: Rows explained at a time (bounds the memory of the per-row contribution matrix).
EXPLAIN_CHUNK_ROWS = 5_000

#: ``DataFrame.attrs`` key naming the scale contributions are on (``probability`` or ``log_odds``).
OUTPUT_ATTR = "output"


def contributions(
    model: Any, frame: pd.DataFrame, *, approximate: bool = False
) -> tuple[pd.DataFrame, float]:
    """Per-row contribution of each raw input column to the classifier's output, and the base value.

    The frame has ``frame``'s index and one column per raw feature the pipeline reads (its input
    order); ``attrs["output"]`` names the scale (``probability`` or ``log_odds``). For every row,
    ``base_value + row.sum()`` is the uncalibrated classifier's output on that row.

    ``approximate``: for tree models, Saabas' path attributions instead of exact Tree SHAP (SHAP's
    ``approximate=True``, XGBoost's ``approx_contribs``): they add up the same way, in a fraction
    of the time (a 100-tree forest: ~5 ms a row exact), but only roughly follow Shapley values.
    """
    explainer = _explainer(model, approximate=approximate)
    columns = input_columns(model)
    owners = output_owners(model.named_steps["preprocess"])
    group = _grouping(owners, columns)
    chunks = []
    base = 0.0
    for start in range(0, len(frame), EXPLAIN_CHUNK_ROWS):
        part = frame.iloc[start : start + EXPLAIN_CHUNK_ROWS]
        values, base = explainer(part)
        chunks.append(values @ group)
    if not chunks:
        _, base = explainer(frame.iloc[:0]) if len(frame) else (None, 0.0)
    matrix = np.vstack(chunks) if chunks else np.zeros((0, len(columns)))
    result = pd.DataFrame(matrix, index=frame.index, columns=columns)
    result.attrs[OUTPUT_ATTR] = _output_scale(base_classifier(model))
    return result, float(base)


def top_reasons(
    model: Any, frame: pd.DataFrame, k: int = 3, *, approximate: bool = False
) -> list[list[dict[str, Any]]]:
    """Each row's (up to) ``k`` features that pushed its risk up most, highest first.

    ``[{"feature": raw column, "contribution": float}, ...]`` per row of ``frame``, in its order.
    Only positive contributions are reasons: a row the model finds safer than average may have
    fewer than ``k`` (or none).
    """
    if k < 1:
        raise DataValidationError(f"k must be a positive number of reasons, got {k}")
    values, _ = contributions(model, frame, approximate=approximate)
    return reasons_from(values, k)


def reasons_from(values: pd.DataFrame, k: int) -> list[list[dict[str, Any]]]:
    """:func:`top_reasons` of an already computed contribution frame."""
    names = np.asarray(values.columns, dtype=object)
    matrix = values.to_numpy(dtype=float)
    if matrix.size == 0:
        return [[] for _ in range(len(values))]
    k = min(k, matrix.shape[1])
    # The k largest per row, then ordered: argpartition keeps this O(n) for wide frames.
    top = np.argpartition(-matrix, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(matrix, top, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    picked = np.take_along_axis(picked, order, axis=1)
    return [
        [
            {"feature": str(names[j]), "contribution": float(v)}
            for j, v in zip(row_idx, row_val, strict=True)
            if v > 0
        ]
        for row_idx, row_val in zip(top, picked, strict=True)
    ]


def global_importance(model: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute contribution per raw feature over ``frame``, largest first (``feature``,
    ``mean_abs_contribution``): the global explanation plotted beside the feature importances."""
    values, _ = contributions(model, frame)
    result = pd.DataFrame(
        {"feature": list(values.columns), "mean_abs_contribution": values.abs().mean().to_numpy()}
    )
    result.attrs[OUTPUT_ATTR] = values.attrs.get(OUTPUT_ATTR)
    return result.sort_values("mean_abs_contribution", ascending=False, kind="stable").reset_index(drop=True)


def model_output(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """The uncalibrated classifier's output on ``frame`` in the scale contributions are on."""
    clf = base_classifier(model)
    x = transform_in_chunks(model.named_steps["preprocess"], frame, dtype=_input_dtype(clf))
    kind = _kind(clf)
    if kind == "tree":
        return np.asarray(clf.predict_proba(x))[:, 1]
    if kind == "xgboost":
        return np.asarray(clf.predict(x, output_margin=True), dtype=float).reshape(len(frame))
    if kind == "lightgbm":
        return np.asarray(clf.predict(x, raw_score=True), dtype=float).reshape(len(frame))
    return np.asarray(clf.decision_function(x), dtype=float).reshape(len(frame))


# --- which raw column each preprocessed column comes from -------------------------------------


def output_owners(preprocess: Any) -> list[str]:
    """For each column the fitted ``ColumnTransformer`` outputs, the raw column it derives from."""
    owners: list[str] = []
    for name, transformer, selected in preprocess.transformers_:
        if transformer == "drop" or not isinstance(selected, list | tuple):
            continue
        block = preprocess.output_indices_[name]
        width = block.stop - block.start
        if width == 0:
            continue
        columns = [str(column) for column in selected]
        owners.extend(_block_owners(transformer, columns, width))
    return owners


def _block_owners(transformer: Any, columns: list[str], width: int) -> list[str]:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    last = transformer.steps[-1][1] if isinstance(transformer, Pipeline) else transformer
    if isinstance(last, OneHotEncoder):
        counts = getattr(last, "_n_features_outs", None) or [len(c) for c in last.categories_]
        owners = [column for column, count in zip(columns, counts, strict=True) for _ in range(count)]
    elif width == len(columns):
        owners = list(columns)
    else:
        # Any other expanding transformer: its output names start with the input column's name.
        names = [str(n) for n in transformer.get_feature_names_out(columns)]
        owners = [
            max((c for c in columns if n == c or n.startswith(f"{c}_")), key=len, default="") for n in names
        ]
        if "" in owners:
            raise DataValidationError(
                f"cannot tell which input column {names[owners.index('')]!r} of {type(transformer).__name__} "
                "comes from"
            )
    if len(owners) != width:
        raise DataValidationError(
            f"{type(transformer).__name__} outputs {width} columns but {len(owners)} were accounted for"
        )
    return owners


def _grouping(owners: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """A 0/1 matrix summing preprocessed columns (rows) into raw columns (columns)."""
    index = {column: i for i, column in enumerate(columns)}
    group = np.zeros((len(owners), len(columns)))
    for row, owner in enumerate(owners):
        group[row, index[owner]] = 1.0
    return group


# --- explainers: a function part -> (values per preprocessed column, base value) ----------------


def _explainer(model: Any, *, approximate: bool = False) -> Any:
    clf = base_classifier(model)
    preprocess = model.named_steps["preprocess"]
    dtype = _input_dtype(clf)

    def transform(part: pd.DataFrame) -> np.ndarray:
        return transform_in_chunks(preprocess, part, dtype=dtype)

    kind = _kind(clf)
    if kind == "linear":
        coef = np.asarray(clf.coef_, dtype=float).reshape(-1)
        intercept = float(np.asarray(clf.intercept_).reshape(-1)[0])
        return lambda part: (transform(part).astype(float) * coef, intercept)
    if kind == "xgboost":
        return lambda part: _xgboost(clf, transform(part), approximate)
    if kind == "lightgbm":
        return lambda part: _lightgbm(clf, transform(part))
    if kind == "hist_gradient_boosting":
        explain_hgb = _HistGradientBoostingExplainer(clf, approximate=approximate)
        return lambda part: explain_hgb(transform(part))
    if kind == "tree":
        import shap

        tree_explainer = shap.TreeExplainer(clf)

        def explain_tree(part: pd.DataFrame) -> tuple[np.ndarray, float]:
            x = transform(part)
            values = np.asarray(
                tree_explainer.shap_values(x, check_additivity=False, approximate=approximate)
            )
            expected = np.asarray(tree_explainer.expected_value, dtype=float).reshape(-1)
            if values.ndim == 3:  # (rows, features, classes): the positive class
                return values[:, :, -1], float(expected[-1])
            return values, float(expected[-1])

        return explain_tree
    raise DataValidationError(
        f"cannot explain a {type(clf).__name__}: reasons need a tree model or a linear model"
    )


def _kind(clf: Any) -> str:
    module = type(clf).__module__
    name = type(clf).__name__
    if module.startswith("xgboost"):
        return "xgboost"
    if module.startswith("lightgbm"):
        return "lightgbm"
    if name == "HistGradientBoostingClassifier":
        return "hist_gradient_boosting"
    if hasattr(clf, "coef_") and hasattr(clf, "intercept_"):
        return "linear"
    if hasattr(clf, "estimators_") or hasattr(clf, "tree_"):
        return "tree"
    return "unknown"


def _output_scale(clf: Any) -> str:
    """``probability`` for forests/trees (their SHAP values explain the averaged leaf probabilities),
    ``log_odds`` for boosters and linear models."""
    return "probability" if _kind(clf) == "tree" else "log_odds"


def _xgboost(clf: Any, x: np.ndarray, approximate: bool = False) -> tuple[np.ndarray, float]:
    import xgboost

    booster = clf.get_booster()
    values = np.asarray(
        booster.predict(xgboost.DMatrix(x), pred_contribs=True, approx_contribs=approximate), dtype=float
    )
    if len(values) == 0:
        return values[:, :-1], 0.0
    return values[:, :-1], float(values[0, -1])


def _lightgbm(clf: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    values = np.asarray(clf.predict(x, pred_contrib=True), dtype=float)
    if len(values) == 0:
        return values[:, :-1], 0.0
    return values[:, :-1], float(values[0, -1])


class _HistGradientBoostingExplainer:
    """Tree SHAP for scikit-learn's ``HistGradientBoostingClassifier`` (binary), categorical splits
    included: each distinct (feature, left-category set) becomes a 0/1 column (0 = left, 1 = right,
    NaN = the missing-value branch), so every split is a threshold split SHAP can read."""

    def __init__(self, clf: Any, *, approximate: bool = False) -> None:
        import shap

        self.approximate = approximate
        if getattr(clf, "n_trees_per_iteration_", 1) != 1:
            raise DataValidationError("reasons support binary HistGradientBoostingClassifier only")
        self.known, self.f_idx_map = clf._bin_mapper.make_known_categories_bitsets()
        self.n_features = int(clf.n_features_in_)
        self.extra: dict[tuple[int, bytes], int] = {}  # (feature, left bitset) -> synthetic column
        self.extra_specs: list[tuple[int, np.ndarray]] = []
        trees = [self._tree(predictors[0]) for predictors in clf._predictors]
        baseline = float(np.asarray(clf._baseline_prediction).reshape(-1)[0])
        self.explainer = shap.TreeExplainer(
            {"trees": trees, "base_offset": baseline, "tree_output": "log_odds", "input_dtype": np.float64}
        )
        self.base = float(np.asarray(self.explainer.expected_value, dtype=float).reshape(-1)[0])
        self.owner = np.concatenate(
            [np.arange(self.n_features), np.asarray([f for f, _ in self.extra_specs], dtype=int)]
        ).astype(int)

    def _tree(self, predictor: Any) -> dict[str, np.ndarray]:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        features = nodes["feature_idx"].astype(np.int64)
        thresholds = nodes["num_threshold"].astype(np.float64)
        for i in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf):
            bitset = np.ascontiguousarray(predictor.raw_left_cat_bitsets[nodes["bitset_idx"][i]])
            key = (int(features[i]), bitset.tobytes())
            if key not in self.extra:
                self.extra[key] = self.n_features + len(self.extra_specs)
                self.extra_specs.append((int(features[i]), bitset))
            features[i] = self.extra[key]
            thresholds[i] = 0.5
        left = nodes["left"].astype(np.int64)
        right = nodes["right"].astype(np.int64)
        return {
            "children_left": np.where(leaf, -1, left),
            "children_right": np.where(leaf, -1, right),
            "children_default": np.where(leaf, -1, np.where(nodes["missing_go_to_left"] == 1, left, right)),
            "features": np.where(leaf, -2, features),
            "thresholds": np.where(leaf, 0.0, thresholds),
            "values": nodes["value"].astype(np.float64).reshape(-1, 1),
            "node_sample_weight": nodes["count"].astype(np.float64),
        }

    def _augment(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.n_features + len(self.extra_specs)), dtype=np.float64)
        out[:, : self.n_features] = x
        for j, (feature, bitset) in enumerate(self.extra_specs):
            value = x[:, feature]
            missing = np.isnan(value) | (value < 0)
            code = np.where(missing, 0, value).astype(np.int64) & 0xFF  # the predictor casts to uint8
            in_left = _in_bitset(bitset, code)
            known = _in_bitset(self.known[self.f_idx_map[feature]], code)
            column = np.where(in_left, 0.0, np.where(known, 1.0, np.nan))
            column[missing] = np.nan
            out[:, self.n_features + j] = column
        return out

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        augmented = self._augment(x)
        values = np.asarray(
            self.explainer.shap_values(augmented, check_additivity=False, approximate=self.approximate)
        )
        grouped = np.zeros((len(x), self.n_features))
        np.add.at(grouped.T, self.owner, values.T)
        return grouped, self.base


def _in_bitset(bitset: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Whether each code (0-255) is set in a scikit-learn 256-bit bitset (8 x uint32)."""
    words = np.asarray(bitset, dtype=np.uint32)[code // 32]
    return ((words >> (code % 32).astype(np.uint32)) & 1).astype(bool)
