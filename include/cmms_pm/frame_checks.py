"""Checks a frame must pass before it is split, trained on or scored, driven by the model's spec.

Every problem names the column and counts (rows, distinct values, shares) and never a value from
the data: a batch may hold someone else's secrets, and the message ends up in task logs and in
the API. The spec's own settings (declared bounds, the minimum row count) may be shown.

Decisions, so training and scoring encode exactly what was checked:

- **Labels** compare by normalised text (:func:`label_key`): strings are stripped and case-folded,
  numbers compare by value (``1``, ``1.0``, ``"1"``, ``"1.0"`` are one label), booleans are ``1``/``0``
  (so ``True`` and ``"true"`` match a declared positive ``1`` or ``true``). ``"yes"``/``"no"`` are
  just text: declare ``positive: "yes"``.
- **Categorical** values are text (:func:`categorical_text`): strings as written; integers, and
  floats that are whole numbers (an integer column with gaps is read as float), as their decimal
  text (``3`` and ``3.0`` → ``"3"``); booleans as ``"true"``/``"false"``. Fractional numbers,
  dates and other objects are refused: they are not categories.
- **Overflow**: an integer column holds values beyond int64 when pandas gave it uint64 (values above
  2**63 - 1), object dtype of Python ints (beyond uint64, or next to a gap; see
  :func:`cmms_pm.sources.read_table`) or floats of magnitude 2**63 and more.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from numbers import Integral, Real
from typing import Any, SupportsInt

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from cmms_pm.exceptions import DataValidationError
from cmms_pm.spec import FeatureSpec

log = logging.getLogger(__name__)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_CLASS_NAMES = {0: "negative", 1: "positive"}


# --- labels --------------------------------------------------------------------------------------


def label_key(value: Any) -> str:
    """The normalised text a label compares by: ``1``, ``1.0``, ``"1"``, ``True``, ``"true"`` → ``"1"``;
    ``"Yes "`` → ``"yes"``."""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (Integral, Decimal, Real)):
        return _number_key(value)
    text = str(value).strip().casefold()
    if text in ("true", "false"):
        return "1" if text == "true" else "0"
    if _NUMBER_TEXT.fullmatch(text):
        return _number_key(Decimal(text))
    return text


def _number_key(value: Any) -> str:
    try:
        number = Decimal(int(value)) if isinstance(value, Integral) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value).strip().casefold()
    if number.is_finite() and number == number.to_integral_value():
        return str(int(number))
    return str(number.normalize()).casefold()


def normalize_labels(
    frame: pd.DataFrame, *, target: str, positive: Any, negative: Any = None
) -> pd.DataFrame:
    """The frame with ``target`` mapped to int64 1 (``positive``) and 0 (the other label).

    Raises :class:`DataValidationError` naming the column and counts when the target is missing, has
    missing labels, or has a label that is neither ``positive`` nor ``negative`` (or, with no
    ``negative`` declared, more than one label besides the positive). A positive label that never
    occurs is left to :func:`check_frame` ("only one class").
    """
    if target not in frame.columns:
        raise DataValidationError(f"target column {target!r} is missing")
    labels = frame[target]
    missing = int(labels.isna().sum())
    if missing:
        raise DataValidationError(f"target column {target!r} has {missing} rows with no label")
    try:
        codes, uniques = pd.factorize(labels)
    except TypeError:  # unhashable values (lists from a Parquet list column)
        raise DataValidationError(f"target column {target!r} holds lists or other non-label values") from None
    keys = [label_key(value) for value in uniques]
    rows = np.bincount(codes, minlength=len(uniques))
    positive_key = label_key(positive)
    others = {key for key in keys if key != positive_key}
    if negative is not None:
        unknown = others - {label_key(negative)}
        if unknown:
            count = int(sum(rows[i] for i, key in enumerate(keys) if key in unknown))
            raise DataValidationError(
                f"target column {target!r} has {count} rows with {len(unknown)} distinct labels that are "
                "neither the positive nor the negative label"
            )
    elif len(others) > 1:
        count = int(sum(rows[i] for i, key in enumerate(keys) if key in others))
        raise DataValidationError(
            f"target column {target!r} has {len(others)} distinct labels besides the positive one "
            f"({count} rows); a binary target has one other label (declare target.negative to name it)"
        )
    is_positive = np.array([key == positive_key for key in keys], dtype=bool)
    return frame.assign(**{target: is_positive[codes].astype(np.int64)})


# --- categorical text ----------------------------------------------------------------------------


def _category_text(value: Any) -> str | None:
    """Text form of one categorical value; ``None`` when the value is not a category."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, Integral):
        return str(int(value))
    if (
        isinstance(value, (Real, Decimal))
        and isinstance(value, SupportsInt)
        and math.isfinite(value)
        and float(value).is_integer()
    ):
        return str(int(value))
    return None


def categorical_text(values: pd.Series) -> pd.Series:
    """A categorical column as text (the rules of the module docstring); missing values stay missing.

    Raises :class:`DataValidationError` when a value is not a category (a fraction, a date, ...).
    """
    texts, bad = _categorical_texts(values)
    if bad:
        raise DataValidationError(
            f"column {values.name!r} is declared categorical but has {bad} values that are not "
            "text, integers or booleans"
        )
    return texts


def _categorical_texts(values: pd.Series) -> tuple[pd.Series, int]:
    """(the column as text, number of rows whose value is not a category)."""
    missing = values.isna().to_numpy()
    try:
        codes, uniques = pd.factorize(values)
    except TypeError:  # unhashable values (lists from a Parquet list column) are no categories
        return pd.Series(np.nan, index=values.index, dtype=object), int((~missing).sum())
    mapped = [_category_text(value) for value in uniques]
    bad_codes = np.array([text is None for text in mapped], dtype=bool)
    bad = int(bad_codes[codes[codes >= 0]].sum()) if len(uniques) else 0
    lookup = np.array([text if text is not None else None for text in mapped] + [None], dtype=object)
    texts = pd.Series(lookup[np.where(codes >= 0, codes, len(mapped))], index=values.index, dtype=object)
    texts[missing] = np.nan
    return texts, bad


def duplicate_columns_problem(names: Iterable[Any]) -> str | None:
    """``"duplicate column names: 'x' (2 times)"`` for repeated names, else ``None``."""
    counts = Counter(str(name) for name in names)
    repeated = [f"{name!r} ({count} times)" for name, count in counts.items() if count > 1]
    return f"duplicate column names: {', '.join(repeated)}" if repeated else None


# --- the checks ----------------------------------------------------------------------------------


def check_frame(
    frame: pd.DataFrame, *, features: FeatureSpec, target: str, min_rows: int, max_missing_rate: float
) -> dict[str, Any]:
    """Check a frame against the spec's features (declared or resolved) and its normalised target.

    Stages run in order (columns, dtypes, values, labels and size) because later ones are meaningless
    when earlier ones fail; every problem of the failing stage is reported, joined by ``"; "``.
    ``frame[target]`` must already be 0/1 (:func:`normalize_labels`). Returns ``{"rows",
    "positives", "positive_rate", "columns"}``.
    """
    columns = [*features.declared, target]
    stages: list[Callable[[], list[str]]] = [
        lambda: _column_problems(frame, columns),
        lambda: _dtype_problems(frame, features),
        lambda: _value_problems(frame, features, max_missing_rate),
        lambda: _label_and_size_problems(frame, target, min_rows),
    ]
    for stage in stages:
        problems = stage()
        if problems:
            raise DataValidationError("; ".join(problems))
    positives = int(frame[target].sum())
    report = {
        "rows": int(len(frame)),
        "positives": positives,
        "positive_rate": positives / len(frame),
        "columns": columns,
    }
    log.info("frame valid: %d rows, positive rate %.4f", report["rows"], report["positive_rate"])
    return report


def _column_problems(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    problems = []
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        problems.append(f"missing columns: {missing}")
    duplicates = duplicate_columns_problem(frame.columns)
    if duplicates:
        problems.append(duplicates)
    return problems


def _dtype_problems(frame: pd.DataFrame, features: FeatureSpec) -> list[str]:
    problems = []
    for column in (*features.numeric, *features.integer):
        values = frame[column]
        problem = _numeric_dtype_problem(values)
        if problem:
            problems.append(f"column {column!r} must be numeric, got {problem}")
        elif column in features.integer:
            problems.extend(_integer_problems(column, values))
    for column in features.categorical:
        texts, bad = _categorical_texts(frame[column])
        if bad:
            problems.append(
                f"column {column!r} must contain text, integers or booleans (categories), got dtype "
                f"{frame[column].dtype} with {bad} other values"
            )
            continue
        known = features.categories.get(column)
        if known:
            present = texts.notna()
            outside = present & ~texts.isin(set(known))
            if outside.any():
                distinct = texts[outside].nunique()
                problems.append(
                    f"column {column!r} has {int(outside.sum())} rows with {distinct} values outside its "
                    "declared categories"
                )
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (Real, Decimal)) and not isinstance(value, (bool, np.bool_))


def _numeric_dtype_problem(values: pd.Series) -> str | None:
    """Why a declared numeric column is not numeric, or ``None``; object columns of numbers pass."""
    if ptypes.is_bool_dtype(values):
        return f"dtype {values.dtype}"
    if ptypes.is_numeric_dtype(values):
        return None
    if ptypes.is_object_dtype(values):
        present = values[values.notna()]
        others = int(sum(not _is_number(value) for value in present))
        if others:
            return f"dtype {values.dtype} with {others} non-numeric values"
        return None
    return f"dtype {values.dtype}"


def overflow_problems(frame: pd.DataFrame, features: FeatureSpec) -> list[str]:
    """Numeric features holding whole numbers beyond int64: a batch with them cannot even be
    written (Parquet), so extraction refuses it before validation would; names columns and counts."""
    problems = []
    for column in (*features.integer, *features.numeric):
        if column in frame.columns and not ptypes.is_signed_integer_dtype(frame[column]):
            values = frame[column]
            if ptypes.is_unsigned_integer_dtype(values) or ptypes.is_object_dtype(values):
                numbers = (
                    values if ptypes.is_unsigned_integer_dtype(values) else values[values.map(_is_number)]
                )
                overflow, _ = _count_overflow_and_fractions(numbers)
                if overflow:
                    problems.append(f"column {column!r} has {overflow} values that overflow int64")
    return problems


def _integer_problems(column: str, values: pd.Series) -> list[str]:
    overflow, fractional = _count_overflow_and_fractions(values)
    problems = []
    if fractional:
        problems.append(f"column {column!r} is declared integer but has {fractional} fractional values")
    if overflow:
        problems.append(f"column {column!r} has {overflow} values that overflow int64")
    return problems


def _count_overflow_and_fractions(values: pd.Series) -> tuple[int, int]:
    if ptypes.is_unsigned_integer_dtype(values):
        array = values.dropna().to_numpy(dtype=np.uint64)
        return int((array > np.uint64(_INT64_MAX)).sum()), 0
    if ptypes.is_integer_dtype(values):
        return 0, 0
    if ptypes.is_float_dtype(values):
        array = values.to_numpy(dtype=float, na_value=np.nan)
        finite = array[np.isfinite(array)]
        overflow = (finite >= 2.0**63) | (finite < -(2.0**63))
        return int(overflow.sum()), int((finite[~overflow] != np.floor(finite[~overflow])).sum())
    overflow = fractional = 0
    for value in values[values.notna()]:
        if isinstance(value, Integral):
            overflow += not _INT64_MIN <= int(value) <= _INT64_MAX
        elif math.isfinite(value):
            whole = float(value).is_integer() if not isinstance(value, Decimal) else value == int(value)
            if whole:
                overflow += not _INT64_MIN <= int(value) <= _INT64_MAX
            else:
                fractional += 1
    return overflow, fractional


def _as_float(values: pd.Series) -> np.ndarray:
    if ptypes.is_numeric_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    return np.array([_float(value) for value in values], dtype=float)


def _float(value: Any) -> float:
    if pd.isna(value):
        return np.nan
    try:
        return float(value)
    except OverflowError:  # a Python int beyond float's range
        return math.copysign(math.inf, value)


def _value_problems(frame: pd.DataFrame, features: FeatureSpec, max_missing_rate: float) -> list[str]:
    problems = []
    rows = len(frame)
    for column in features.declared:
        missing = int(frame[column].isna().sum())
        if rows and missing / rows > max_missing_rate:
            problems.append(
                f"column {column!r} has {missing} missing values ({missing / rows:.1%} of {rows} rows, "
                f"at most {max_missing_rate:.1%} allowed)"
            )
    for column in (*features.numeric, *features.integer):
        array = _as_float(frame[column])
        infinite = int(np.isinf(array).sum())
        if infinite:
            problems.append(f"column {column!r} has {infinite} infinite values")
        if column in features.ranges:
            low, high = features.ranges[column]
            finite = array[np.isfinite(array)]
            outside = int(((finite < low) | (finite > high)).sum())
            if outside:
                problems.append(f"column {column!r} has {outside} values outside [{low}, {high}]")
    return problems


def _label_and_size_problems(frame: pd.DataFrame, target: str, min_rows: int) -> list[str]:
    rows = len(frame)
    if rows == 0:
        return [f"0 rows: the batch is empty (need at least {min_rows})"]
    problems = []
    labels = frame[target]
    numeric = ptypes.is_numeric_dtype(labels) and not ptypes.is_bool_dtype(labels)
    other = int((~labels.isin([0, 1]) | labels.isna()).sum()) if numeric else rows
    if other:
        problems.append(
            f"column {target!r} must hold 0/1 labels (see normalize_labels): {other} rows hold other values"
        )
    else:
        present = set(labels.unique().tolist())
        for label in sorted({0, 1} - present):
            problems.append(
                f"column {target!r} has only one class: class {label} ({_CLASS_NAMES[label]}) is missing"
            )
    if rows < min_rows:
        problems.append(f"only {rows} rows, need at least {min_rows}")
    return problems
