"""Frames that break the schema are rejected with a message naming the offending column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmms_pm.exceptions import CmmsPmError, DataValidationError
from cmms_pm.frame_checks import validate_frame
from cmms_pm.schema import FEATURES, MIN_ROWS, RANGES, TARGET


def test_valid_frame_returns_a_small_report(valid_frame):
    report = validate_frame(valid_frame)
    assert report["rows"] == 400
    assert report["positives"] == int(valid_frame[TARGET].sum())
    assert report["positive_rate"] == pytest.approx(valid_frame[TARGET].mean())
    assert report["columns"] == FEATURES + [TARGET]


def test_extra_columns_are_allowed(valid_frame):
    assert validate_frame(valid_frame.assign(asset_tag="A-1"))["rows"] == 400


def _nan_vibration(frame: pd.DataFrame) -> pd.DataFrame:
    frame["vibration_mm_s"] = frame["vibration_mm_s"].astype(float)
    frame.loc[:11, "vibration_mm_s"] = np.nan
    return frame


def _one_class(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(**{TARGET: 0})


def _only_failures(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(**{TARGET: 1})


def _textual_rpm(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(rpm=frame["rpm"].astype(str))


def _numeric_equipment_type(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(equipment_type=np.arange(len(frame)))


def _boiler(frame: pd.DataFrame) -> pd.DataFrame:
    frame["equipment_type"] = frame["equipment_type"].astype(object)
    frame.loc[:4, "equipment_type"] = "boiler"
    return frame


def _too_hot(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[:2, "temperature_c"] = [500.0, 250.0, 210.0]
    return frame


def _negative_age(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[0, "equipment_age_years"] = -1.0
    return frame


def _label_two(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[0, TARGET] = 2
    return frame


def _nan_equipment_type(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[:2, "equipment_type"] = None
    return frame


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        pytest.param(lambda f: f.drop(columns=["rpm"]), r"missing columns: \['rpm'\]", id="missing-column"),
        pytest.param(
            lambda f: f.drop(columns=["rpm", TARGET]),
            rf"missing columns: \['rpm', '{TARGET}'\]",
            id="missing-columns-and-target",
        ),
        pytest.param(_textual_rpm, r"column 'rpm' must be numeric, got dtype", id="text-in-numeric"),
        pytest.param(
            _numeric_equipment_type, r"column 'equipment_type' must contain strings", id="numeric-type"
        ),
        pytest.param(_boiler, r"column 'equipment_type' has unknown values \['boiler'\]", id="unknown-type"),
        pytest.param(_nan_vibration, r"column 'vibration_mm_s' has 12 NaN values", id="nan"),
        pytest.param(_nan_equipment_type, r"column 'equipment_type' has 3 NaN values", id="nan-category"),
        pytest.param(
            _too_hot,
            r"column 'temperature_c' has 3 values outside \[-40.0, 200.0\] \(observed min .*, max 500.0\)",
            id="too-hot",
        ),
        pytest.param(_negative_age, r"column 'equipment_age_years' has 1 values outside", id="negative-age"),
        pytest.param(_label_two, rf"column '{TARGET}' must contain only 0/1, found \[2\]", id="label-2"),
        pytest.param(_one_class, r"class 1 \(failure\) is missing", id="no-failures"),
        pytest.param(_only_failures, r"class 0 \(no failure\) is missing", id="only-failures"),
        pytest.param(lambda f: f.head(150), rf"only 150 rows, need at least {MIN_ROWS}", id="too-few-rows"),
    ],
)
def test_bad_frame_is_rejected_naming_the_problem(valid_frame, corrupt, message):
    with pytest.raises(DataValidationError, match=message):
        validate_frame(corrupt(valid_frame))


def test_every_problem_of_a_stage_is_reported(valid_frame):
    broken = _too_hot(_nan_vibration(valid_frame))
    with pytest.raises(DataValidationError) as caught:
        validate_frame(broken)
    assert "'vibration_mm_s' has 12 NaN values" in str(caught.value)
    assert "'temperature_c' has 3 values outside" in str(caught.value)


def test_missing_columns_are_reported_before_anything_else(valid_frame):
    broken = _nan_vibration(valid_frame).drop(columns=["load_pct"])
    with pytest.raises(DataValidationError, match=r"^missing columns: \['load_pct'\]$"):
        validate_frame(broken)


def test_min_rows_can_be_lowered_for_a_single_split(valid_frame):
    assert validate_frame(valid_frame.head(150), min_rows=1)["rows"] == 150


@pytest.mark.parametrize("column", sorted(RANGES))
def test_range_bounds_are_inclusive(valid_frame, column):
    low, high = RANGES[column]
    valid_frame[column] = valid_frame[column].astype(float)
    valid_frame.loc[0, column] = low
    valid_frame.loc[1, column] = high
    validate_frame(valid_frame)


def test_infinite_values_are_out_of_range(valid_frame):
    valid_frame.loc[0, "pressure_bar"] = np.inf
    with pytest.raises(DataValidationError, match=r"column 'pressure_bar' has 1 values outside .*max inf"):
        validate_frame(valid_frame)


def test_validation_error_is_a_value_error_and_a_package_error(valid_frame):
    with pytest.raises(ValueError) as caught:
        validate_frame(valid_frame.head(10))
    assert isinstance(caught.value, CmmsPmError)
