"""Schema and sanity checks that a frame must pass before it is split, trained on or scored.

Every problem is reported with the offending column and numbers, so a failed task tells the
operator what to fix in the source data without opening a notebook.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from cmms_pm.exceptions import DataValidationError
from cmms_pm.schema import CATEGORICAL, EQUIPMENT_TYPES, FEATURES, MIN_ROWS, NUMERIC, RANGES, TARGET

log = logging.getLogger(__name__)

_CLASS_NAMES = {0: "no failure", 1: "failure"}


def validate_frame(df: pd.DataFrame, *, min_rows: int = MIN_ROWS) -> dict[str, Any]:
    """Check columns, dtypes, NaNs, ranges, labels and size; return a small report or raise.

    Checks run in stages (columns, dtypes, values, label balance and size) because later stages are
    meaningless when earlier ones fail; all problems found within a stage are reported together.
    """
    for stage in (_missing_columns, _dtype_problems, _value_problems, _label_and_size_problems):
        problems = stage(df, min_rows)
        if problems:
            raise DataValidationError("; ".join(problems))
    positives = int(df[TARGET].sum())
    report = {
        "rows": int(len(df)),
        "positives": positives,
        "positive_rate": positives / len(df),
        "columns": FEATURES + [TARGET],
    }
    log.info("frame valid: %d rows, positive rate %.4f", report["rows"], report["positive_rate"])
    return report


def _missing_columns(df: pd.DataFrame, min_rows: int) -> list[str]:
    missing = [column for column in FEATURES + [TARGET] if column not in df.columns]
    return [f"missing columns: {missing}"] if missing else []


def _dtype_problems(df: pd.DataFrame, min_rows: int) -> list[str]:
    problems = []
    for column in NUMERIC + [TARGET]:
        if not ptypes.is_numeric_dtype(df[column]) or ptypes.is_bool_dtype(df[column]):
            problems.append(f"column {column!r} must be numeric, got dtype {df[column].dtype}")
    for column in CATEGORICAL:
        values = df[column].dropna()
        if not ptypes.is_string_dtype(values):
            problems.append(f"column {column!r} must contain strings, got dtype {df[column].dtype}")
            continue
        unknown = sorted(set(values.unique()) - set(EQUIPMENT_TYPES))
        if unknown:
            problems.append(
                f"column {column!r} has unknown values {unknown}; expected one of {list(EQUIPMENT_TYPES)}"
            )
    return problems


def _value_problems(df: pd.DataFrame, min_rows: int) -> list[str]:
    problems = []
    for column in FEATURES + [TARGET]:
        nans = int(df[column].isna().sum())
        if nans:
            problems.append(f"column {column!r} has {nans} NaN values")
    for column in NUMERIC:
        low, high = RANGES[column]
        values = df[column].dropna().to_numpy(dtype=float)
        outside = (values < low) | (values > high)
        if outside.any():
            problems.append(
                f"column {column!r} has {int(outside.sum())} values outside [{low}, {high}] "
                f"(observed min {values.min()}, max {values.max()})"
            )
    labels = df[TARGET].dropna()
    bad_labels = sorted(set(labels.unique().tolist()) - {0, 1})
    if bad_labels:
        problems.append(f"column {TARGET!r} must contain only 0/1, found {bad_labels}")
    return problems


def _label_and_size_problems(df: pd.DataFrame, min_rows: int) -> list[str]:
    problems = []
    present = set(np.unique(df[TARGET].to_numpy()).astype(int).tolist())
    if not present:
        problems.append(f"column {TARGET!r} has no labels")
    for label in sorted({0, 1} - present) if present else []:
        problems.append(
            f"column {TARGET!r} has only one class: class {label} ({_CLASS_NAMES[label]}) is missing"
        )
    if len(df) < min_rows:
        problems.append(f"only {len(df)} rows, need at least {min_rows}")
    return problems
