"""Frames that break their model's spec are rejected naming columns and counts, never data values.

The shipped predictive-maintenance spec drives most cases (its synthetic telemetry is valid); the
bad-input list of issue 10 (string labels, unknown labels, int64 overflow, fractions in integer
columns, categories, ranges, missing rate, empty batch, one class) has its own tests.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from cmms_pm.exceptions import CmmsPmError, DataValidationError
from cmms_pm.frame_checks import (
    categorical_text,
    check_frame,
    label_key,
    normalize_labels,
)
from cmms_pm.spec import PROJECT_DIR, FeatureSpec, load_spec

SPEC = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
TARGET = SPEC.target
SENTINEL = "SENTINEL-77d0"


def check(frame: pd.DataFrame, **overrides) -> dict:
    """``check_frame`` with the shipped spec's settings, any of them overridden."""
    options = {
        "features": SPEC.features,
        "target": TARGET,
        "min_rows": SPEC.validation["min_rows"],
        "max_missing_rate": SPEC.validation["max_missing_rate"],
        **overrides,
    }
    return check_frame(frame, **options)


def test_valid_frame_returns_a_small_report(valid_frame):
    report = check(valid_frame)
    assert report["rows"] == 400
    assert report["positives"] == int(valid_frame[TARGET].sum())
    assert report["positive_rate"] == pytest.approx(valid_frame[TARGET].mean())
    assert report["columns"] == [*SPEC.features.declared, TARGET]


def test_extra_columns_are_allowed(valid_frame):
    assert check(valid_frame.assign(asset_tag="A-1"))["rows"] == 400


def _nan_vibration(frame: pd.DataFrame) -> pd.DataFrame:
    frame["vibration_mm_s"] = frame["vibration_mm_s"].astype(float)
    frame.loc[:11, "vibration_mm_s"] = np.nan
    return frame


def _textual_rpm(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(rpm=frame["rpm"].astype(str))


def _boolean_load(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(load_pct=frame["load_pct"] > 50)


def _fractional_equipment_type(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(equipment_type=np.linspace(0.5, 9.5, len(frame)))


def _boiler(frame: pd.DataFrame) -> pd.DataFrame:
    frame["equipment_type"] = frame["equipment_type"].astype(object)
    frame.loc[:4, "equipment_type"] = "boiler"
    frame.loc[5:6, "equipment_type"] = SENTINEL
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
        pytest.param(lambda f: f.drop(columns=["rpm"]), r"^missing columns: \['rpm'\]$", id="missing-column"),
        pytest.param(
            lambda f: f.drop(columns=["rpm", TARGET]),
            rf"missing columns: \['rpm', '{TARGET}'\]",
            id="missing-columns-and-target",
        ),
        pytest.param(
            lambda f: pd.concat([f, f[["rpm"]]], axis=1),
            r"^duplicate column names: 'rpm' \(2 times\)$",
            id="duplicate-column",
        ),
        pytest.param(_textual_rpm, r"column 'rpm' must be numeric, got dtype str", id="text-in-numeric"),
        pytest.param(
            _boolean_load, r"column 'load_pct' must be numeric, got dtype bool", id="bool-in-numeric"
        ),
        pytest.param(
            _fractional_equipment_type,
            r"column 'equipment_type' must contain text, integers or booleans \(categories\), got dtype "
            r"float64 with 400 other values",
            id="fractions-as-category",
        ),
        pytest.param(
            _boiler,
            r"column 'equipment_type' has 7 rows with 2 values outside its declared categories",
            id="unknown-category",
        ),
        pytest.param(
            _nan_vibration,
            r"column 'vibration_mm_s' has 12 missing values \(3.0% of 400 rows, at most 0.0% allowed\)",
            id="nan",
        ),
        pytest.param(_nan_equipment_type, r"column 'equipment_type' has 3 missing values", id="nan-category"),
        pytest.param(
            _too_hot, r"^column 'temperature_c' has 3 values outside \[-40.0, 200.0\]$", id="too-hot"
        ),
        pytest.param(_negative_age, r"column 'equipment_age_years' has 1 values outside", id="negative-age"),
        pytest.param(
            _label_two,
            rf"column '{TARGET}' must hold 0/1 labels \(see normalize_labels\): 1 rows hold other values",
            id="label-2",
        ),
        pytest.param(
            lambda f: f.assign(**{TARGET: 0}),
            rf"column '{TARGET}' has only one class: class 1 \(positive\) is missing",
            id="no-failures",
        ),
        pytest.param(
            lambda f: f.assign(**{TARGET: 1}),
            r"only one class: class 0 \(negative\) is missing",
            id="only-failures",
        ),
        pytest.param(lambda f: f.head(150), r"only 150 rows, need at least 200", id="too-few-rows"),
    ],
)
def test_bad_frame_is_rejected_naming_the_problem(valid_frame, corrupt, message):
    with pytest.raises(DataValidationError, match=message) as caught:
        check(corrupt(valid_frame))
    assert SENTINEL not in str(caught.value)
    assert "boiler" not in str(caught.value)


def test_every_problem_of_a_stage_is_reported(valid_frame):
    broken = _too_hot(_nan_vibration(valid_frame))
    with pytest.raises(DataValidationError) as caught:
        check(broken)
    assert "'vibration_mm_s' has 12 missing values" in str(caught.value)
    assert "'temperature_c' has 3 values outside" in str(caught.value)
    assert str(caught.value).count("; ") == 1


def test_missing_columns_are_reported_before_anything_else(valid_frame):
    broken = _nan_vibration(valid_frame).drop(columns=["load_pct"])
    with pytest.raises(DataValidationError, match=r"^missing columns: \['load_pct'\]$"):
        check(broken)


def test_min_rows_can_be_lowered_for_a_single_split(valid_frame):
    assert check(valid_frame.head(150), min_rows=1)["rows"] == 150


@pytest.mark.parametrize("column", sorted(SPEC.features.ranges))
def test_range_bounds_are_inclusive(valid_frame, column):
    low, high = SPEC.features.ranges[column]
    valid_frame[column] = valid_frame[column].astype(float)
    valid_frame.loc[0, column] = low
    valid_frame.loc[1, column] = high
    check(valid_frame)


def test_infinite_values_are_rejected(valid_frame):
    valid_frame.loc[0, "pressure_bar"] = np.inf
    valid_frame.loc[1, "rpm"] = -np.inf
    with pytest.raises(DataValidationError) as caught:
        check(valid_frame)
    assert "column 'pressure_bar' has 1 infinite values" in str(caught.value)
    assert "column 'rpm' has 1 infinite values" in str(caught.value)


def test_validation_error_is_a_value_error_and_a_package_error(valid_frame):
    with pytest.raises(ValueError) as caught:
        check(valid_frame.head(10))
    assert isinstance(caught.value, CmmsPmError)


# --- the bad-input list --------------------------------------------------------------------------

FOREIGN = FeatureSpec(
    numeric=("Torque [Nm]",),
    integer=("Tool wear [min]",),
    categorical=("Type",),
    categories={"Type": ("L", "M", "H")},
    ranges={"Torque [Nm]": (0.0, 100.0), "Tool wear [min]": (0.0, 300.0)},
)


def foreign_frame(rows: int = 40) -> pd.DataFrame:
    """A small frame shaped like a foreign dataset: units in names, a string category, text labels."""
    return pd.DataFrame(
        {
            "Torque [Nm]": np.linspace(10.0, 60.0, rows),
            "Tool wear [min]": np.arange(rows, dtype=np.int64),
            "Type": (["L", "M", "H", "L"] * rows)[:rows],
            "Machine failure": (["no", "yes", "No ", "YES"] * rows)[:rows],
        }
    )


def check_foreign(frame: pd.DataFrame, **overrides) -> dict:
    options = {"features": FOREIGN, "target": "Machine failure", "min_rows": 20, "max_missing_rate": 0.0}
    return check_frame(frame, **{**options, **overrides})


def test_yes_no_labels_with_positive_yes_become_one_and_zero():
    frame = normalize_labels(foreign_frame(), target="Machine failure", positive="yes")
    assert frame["Machine failure"].dtype == np.int64
    assert frame["Machine failure"].tolist()[:4] == [0, 1, 0, 1]
    assert check_foreign(frame)["positives"] == 20


def test_normalize_labels_leaves_the_input_frame_alone():
    original = foreign_frame()
    normalize_labels(original, target="Machine failure", positive="yes", negative="no")
    assert original["Machine failure"].tolist()[:2] == ["no", "yes"]


@pytest.mark.parametrize(
    ("labels", "positive"),
    [
        pytest.param([1, 0, 1, 0], 1, id="ints"),
        pytest.param([1.0, 0.0, 1.0, 0.0], 1, id="floats-match-int"),
        pytest.param(["1", "0", "1.0", "0"], 1, id="text-numbers"),
        pytest.param([True, False, True, False], 1, id="bools-match-1"),
        pytest.param(["true", "false", "TRUE", "False"], True, id="text-bools"),
        pytest.param(["Failure", "ok", " failure", "OK"], "failure", id="case-and-space"),
    ],
)
def test_labels_compare_by_normalised_text(labels, positive):
    frame = normalize_labels(pd.DataFrame({"y": labels}), target="y", positive=positive)
    assert frame["y"].tolist() == [1, 0, 1, 0]


def test_label_key_of_equal_labels_is_equal():
    assert {label_key(v) for v in (1, 1.0, "1", "1.00", True, "true", np.int64(1), Decimal("1.0"))} == {"1"}
    assert label_key("Yes ") == label_key("yes") != label_key("1")
    assert label_key(1.5) == label_key("1.50") != label_key(1)


def test_unknown_labels_fail_naming_counts_not_values():
    frame = pd.DataFrame({"y": ["yes", "no", SENTINEL, "maybe", "maybe", "no"]})
    with pytest.raises(
        DataValidationError,
        match=r"^target column 'y' has 3 rows with 2 distinct labels that are neither the positive nor "
        r"the negative label$",
    ) as caught:
        normalize_labels(frame, target="y", positive="yes", negative="no")
    assert SENTINEL not in str(caught.value)


def test_more_than_two_labels_fail_without_a_declared_negative():
    frame = pd.DataFrame({"y": ["yes", "no", "maybe", "no"]})
    with pytest.raises(DataValidationError, match="2 distinct labels besides the positive one \\(3 rows\\)"):
        normalize_labels(frame, target="y", positive="yes")


def test_missing_labels_are_counted():
    frame = pd.DataFrame({"y": ["yes", None, np.nan, "no"]})
    with pytest.raises(DataValidationError, match="^target column 'y' has 2 rows with no label$"):
        normalize_labels(frame, target="y", positive="yes")


def test_missing_target_column_is_named():
    with pytest.raises(DataValidationError, match="^target column 'failed' is missing$"):
        normalize_labels(pd.DataFrame({"y": [1]}), target="failed", positive=1)


def test_positive_label_that_never_occurs_is_left_to_the_class_check():
    frame = foreign_frame().assign(**{"Machine failure": "no"})
    normalized = normalize_labels(frame, target="Machine failure", positive="yes", negative="no")
    assert set(normalized["Machine failure"]) == {0}
    with pytest.raises(DataValidationError, match=r"only one class: class 1 \(positive\) is missing"):
        check_foreign(normalized)


def _normalized(frame: pd.DataFrame) -> pd.DataFrame:
    return normalize_labels(frame, target="Machine failure", positive="yes")


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(pd.Series([2**63, 2**64 - 1, *range(38)], dtype=np.uint64), id="uint64"),
        pytest.param(pd.Series([2**70, -(2**64), *range(38)], dtype=object), id="python-ints"),
        pytest.param(pd.Series([1e19, -1e19, *range(38)], dtype=float), id="floats"),
        pytest.param(pd.Series([Decimal(2**64), Decimal(-(2**64)), *range(38)], dtype=object), id="decimals"),
    ],
)
def test_integers_that_overflow_int64_are_counted(values):
    frame = _normalized(foreign_frame()).assign(**{"Tool wear [min]": values})
    with pytest.raises(
        DataValidationError, match=r"^column 'Tool wear \[min\]' has 2 values that overflow int64$"
    ):
        check_foreign(frame)


def test_fractional_values_in_an_integer_column_are_counted():
    wear = np.arange(40, dtype=float)
    wear[[1, 5, 9]] += 0.5
    wear[2] = np.nan
    frame = _normalized(foreign_frame()).assign(**{"Tool wear [min]": wear})
    with pytest.raises(
        DataValidationError,
        match=r"^column 'Tool wear \[min\]' is declared integer but has 3 fractional values$",
    ):
        check_foreign(frame, max_missing_rate=0.1)


def test_whole_floats_in_an_integer_column_pass():
    frame = _normalized(foreign_frame()).assign(**{"Tool wear [min]": np.arange(40, dtype=float)})
    assert check_foreign(frame)["rows"] == 40


def test_values_outside_declared_categories_are_counted_not_shown():
    types = ["L", "M", "H", "L"] * 10
    types[:5] = ["X", "X", SENTINEL, "X", "l"]
    frame = _normalized(foreign_frame()).assign(Type=types)
    with pytest.raises(
        DataValidationError, match=r"^column 'Type' has 5 rows with 3 values outside its declared categories$"
    ) as caught:
        check_foreign(frame)
    assert SENTINEL not in str(caught.value)


def test_integer_and_boolean_categories_are_compared_as_text():
    features = FeatureSpec(categorical=("grade", "flag"), categories={"grade": ("1", "2"), "flag": ("true",)})
    frame = pd.DataFrame({"grade": [1.0, 2.0, np.nan, 1.0] * 10, "flag": [True] * 40, "y": [0, 1] * 20})
    assert check_frame(frame, features=features, target="y", min_rows=20, max_missing_rate=0.25)["rows"] == 40
    grades = categorical_text(frame["grade"])
    assert grades.tolist()[:2] == ["1", "2"] and pd.isna(grades.iloc[2])
    assert categorical_text(pd.Series([True, False, 3, "L"])).tolist() == ["true", "false", "3", "L"]


def test_list_values_are_neither_categories_nor_labels():
    lists = pd.Series([[1, 2], [3]] * 20, name="Type")
    with pytest.raises(
        DataValidationError, match="'Type' must contain text, integers or booleans .* 40 other"
    ):
        check_foreign(_normalized(foreign_frame()).assign(Type=lists))
    with pytest.raises(DataValidationError, match="target column 'y' holds lists"):
        normalize_labels(pd.DataFrame({"y": [[1], [0]]}), target="y", positive=1)


def test_categorical_text_refuses_fractions():
    with pytest.raises(DataValidationError, match="'size' is declared categorical but has 1 values"):
        categorical_text(pd.Series([1.0, 2.5], name="size"))


def test_values_outside_declared_ranges_show_the_bounds_not_the_values():
    torque = np.linspace(10.0, 60.0, 40)
    torque[:4] = [-3.25, 100.5, 1234.5, 100.0]
    frame = _normalized(foreign_frame()).assign(**{"Torque [Nm]": torque})
    with pytest.raises(
        DataValidationError, match=r"^column 'Torque \[Nm\]' has 3 values outside \[0.0, 100.0\]$"
    ) as caught:
        check_foreign(frame)
    for value in ("-3.25", "100.5", "1234.5"):
        assert value not in str(caught.value)


def test_missing_rate_up_to_the_spec_limit_passes_and_above_it_fails():
    torque = np.linspace(10.0, 60.0, 40)
    torque[:2] = np.nan  # 5 %
    frame = _normalized(foreign_frame()).assign(**{"Torque [Nm]": torque})
    assert check_foreign(frame, max_missing_rate=0.05)["rows"] == 40
    with pytest.raises(
        DataValidationError,
        match=r"column 'Torque \[Nm\]' has 2 missing values \(5.0% of 40 rows, at most 2.0% allowed\)",
    ):
        check_foreign(frame, max_missing_rate=0.02)


def test_an_empty_batch_says_0_rows():
    frame = _normalized(foreign_frame()).iloc[:0]
    with pytest.raises(DataValidationError, match=r"^0 rows: the batch is empty \(need at least 20\)$"):
        check_foreign(frame)


def test_an_empty_batch_with_missing_columns_names_the_columns_first():
    with pytest.raises(
        DataValidationError, match=r"^missing columns: \['Type', 'Torque \[Nm\]', 'Tool wear \[min\]'\]$"
    ):
        check_foreign(pd.DataFrame({"Machine failure": []}))


def test_text_labels_not_normalized_are_rejected_by_the_label_stage():
    with pytest.raises(DataValidationError, match=r"must hold 0/1 labels \(see normalize_labels\): 40 rows"):
        check_foreign(foreign_frame())
