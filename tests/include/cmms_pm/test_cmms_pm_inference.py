"""Feature and label inference: the rules the scaffold and ``features: {infer: true}`` share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from datasets import ID_COLUMNS, INTEGER, NUMERIC, TARGET, ai4i_like

from cmms_pm.exceptions import DataValidationError
from cmms_pm.inference import InferredFeatures, infer_features, infer_positive_label, looks_like_id_name
from cmms_pm.spec import FeatureSpec


@pytest.fixture(scope="module")
def ai4i() -> pd.DataFrame:
    return ai4i_like(10_000, seed=3)


def _rows(n: int = 400) -> pd.DataFrame:
    """A small frame with a label and one plain sensor, for a test to add the column it is about."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({"reading": rng.normal(size=n), "label": np.arange(n) % 2})


# --- the foreign-schema dataset ---------------------------------------------------------------


def test_foreign_dataset_drops_both_ids_and_keeps_type_and_the_five_sensors(ai4i):
    inferred = infer_features(ai4i, target=TARGET)

    assert inferred.dropped == {"UDI": "id-like: unique per row", "Product ID": "id-like: unique per row"}
    assert inferred.id_like == ID_COLUMNS
    assert inferred.categorical == ("Type",)
    assert inferred.numeric == NUMERIC
    assert inferred.integer == INTEGER


def test_foreign_dataset_positive_label_is_the_minority_yes(ai4i):
    assert infer_positive_label(ai4i[TARGET]) == ("yes", "no")


def test_positive_override_picks_the_given_label_even_when_it_is_the_majority(ai4i):
    assert infer_positive_label(ai4i[TARGET], positive="no") == ("no", "yes")


def test_features_follow_the_frame_column_order(ai4i):
    reordered = ai4i[list(reversed(ai4i.columns))]

    inferred = infer_features(reordered, target=TARGET)

    assert inferred.numeric == tuple(reversed(NUMERIC))
    assert list(inferred.dropped) == list(reversed(ID_COLUMNS))


def test_target_drop_and_exclude_are_never_classified(ai4i):
    inferred = infer_features(ai4i, target=TARGET, drop=["UDI"], exclude=["Torque [Nm]", "not in frame"])

    assert "Torque [Nm]" not in inferred.features
    assert "UDI" not in inferred.dropped
    assert TARGET not in (*inferred.features, *inferred.dropped)


# --- dropped columns and their reasons -------------------------------------------------------


def test_constant_and_all_missing_columns_are_dropped_as_constant():
    frame = _rows().assign(site="plant-1", spare=np.nan)

    dropped = infer_features(frame, target="label").dropped

    assert dropped == {"site": "constant: one value in every row", "spare": "constant: missing in every row"}


def test_a_sometimes_missing_column_is_kept():
    frame = _rows().assign(spare=np.where(np.arange(400) % 3 == 0, np.nan, 1.0))

    assert "spare" in infer_features(frame, target="label").numeric


def test_free_text_is_dropped_with_its_distinct_count():
    notes = [f"operator note {i % 300}" for i in range(1000)]
    frame = pd.DataFrame({"note": notes, "reading": np.arange(1000) * 0.5, "label": np.arange(1000) % 2})

    assert (
        infer_features(frame, target="label").dropped["note"]
        == "free text: 300 distinct values in 1,000 rows"
    )


def test_text_unique_per_row_is_id_like_even_without_an_id_name():
    frame = _rows().assign(ticket=[f"T-{i:05d}" for i in range(400)])

    assert infer_features(frame, target="label").dropped["ticket"] == "id-like: unique per row"


@pytest.mark.parametrize(
    "dates",
    [
        pd.date_range("2024-01-01", periods=400, freq="h").astype(str),  # 2024-01-01 00:00:00
        pd.date_range("2024-01-01", periods=400, freq="D").strftime("%d.%m.%Y"),
        pd.date_range("2024-01-01", periods=400, freq="D").strftime("%Y-%m-%dT%H:%M:%SZ"),
        np.tile(pd.date_range("2024-01-01", periods=20, freq="D").strftime("%Y-%m-%d"), 20),  # 20 days
    ],
    ids=["iso-datetime", "german-date", "iso-utc", "few-distinct-days"],
)
def test_text_that_parses_as_dates_is_dropped_as_timestamp(dates):
    frame = _rows().assign(recorded=list(dates))

    assert infer_features(frame, target="label").dropped["recorded"] == "timestamp: text that parses as dates"


def test_datetime_columns_are_dropped_as_timestamp():
    frame = _rows().assign(
        at=pd.date_range("2024-01-01", periods=400, freq="min"),
        at_utc=pd.date_range("2024-01-01", periods=400, freq="min", tz="UTC"),
    )

    dropped = infer_features(frame, target="label").dropped

    assert dropped == {"at": "timestamp: datetime values", "at_utc": "timestamp: datetime values"}


def test_codes_that_merely_contain_digits_are_not_dates():
    frame = _rows().assign(grade=np.tile(["A1", "B2", "C3", "2024"], 100))

    assert infer_features(frame, target="label").categorical == ("grade",)


def test_integers_unique_per_row_are_id_like_but_unique_floats_are_readings():
    frame = _rows().assign(row_number=np.arange(400) * 7 + 3)

    inferred = infer_features(frame, target="label")

    assert inferred.dropped == {"row_number": "id-like: unique per row"}
    assert inferred.numeric == ("reading",)  # every float reading is unique, and still a feature


@pytest.mark.parametrize("name", ["machine_id", "Machine ID", "machineId", "UUID", "serial_no", "asset key"])
def test_a_repeated_key_named_like_an_id_is_id_like(name):
    frame = _rows().assign(**{name: np.arange(400) % 25})

    assert infer_features(frame, target="label").dropped[name] == "id-like: named like an identifier"


@pytest.mark.parametrize("name", ["humidity", "fluid_level", "Torque [Nm]", "valid", "Paid"])
def test_words_that_merely_contain_id_are_not_ids(name):
    assert not looks_like_id_name(name)


def test_an_integer_id_read_as_float_because_of_gaps_is_id_like_by_name():
    frame = _rows().assign(machine_id=np.where(np.arange(400) % 10 == 0, np.nan, np.arange(400) % 40))

    assert infer_features(frame, target="label").dropped["machine_id"].startswith("id-like")


def test_booleans_become_integer_features():
    frame = _rows().assign(
        door_open=np.arange(400) % 3 == 0,
        alarm=pd.Series([True, False, None, True] * 100, dtype=object),
    )

    inferred = infer_features(frame, target="label")

    assert inferred.integer == ("door_open", "alarm")


def test_a_few_text_values_are_categorical_but_not_when_they_are_most_of_a_small_frame():
    frame = pd.DataFrame({"shift": list("abcabc"), "x": [1.0, 2, 3, 4, 5, 6], "label": [0, 1] * 3})
    assert infer_features(frame, target="label").categorical == ("shift",)

    tiny = pd.DataFrame({"shift": ["a", "b", "c", "c"], "x": [1.0, 2, 3, 4], "label": [0, 1, 0, 1]})
    assert infer_features(tiny, target="label").dropped["shift"].startswith("free text")


def test_category_dtype_is_categorical_and_timedelta_unsupported():
    frame = _rows().assign(
        line=pd.Categorical(np.tile(["north", "south"], 200)),
        runtime=pd.to_timedelta(np.arange(400) % 7, unit="h"),
    )

    inferred = infer_features(frame, target="label")

    assert inferred.categorical == ("line",)
    assert inferred.dropped["runtime"].startswith("unsupported")


def test_a_name_no_spec_can_hold_is_dropped_as_unusable():
    frame = _rows().assign(**{"bad\nname": np.arange(400) % 4, " padded": np.arange(400) % 4})

    dropped = infer_features(frame, target="label").dropped

    assert set(dropped) == {"bad\nname", " padded"}
    assert all(why.startswith("unusable name") for why in dropped.values())


def test_duplicate_names_missing_target_and_empty_frames_are_refused():
    duplicated = pd.DataFrame([[1, 2, 0]], columns=["a", "a", "label"])
    with pytest.raises(DataValidationError, match=r"duplicate column names: 'a' \(2 times\)"):
        infer_features(duplicated, target="label")
    with pytest.raises(DataValidationError, match="target column 'failure' is not in the frame"):
        infer_features(_rows(), target="failure")
    with pytest.raises(DataValidationError, match="0 rows"):
        infer_features(_rows().head(0), target="label")


# --- as_feature_spec ---------------------------------------------------------------------------


def test_as_feature_spec_declares_the_columns_and_keeps_what_still_applies(ai4i):
    inferred = infer_features(ai4i, target=TARGET)
    base = FeatureSpec(
        infer=True,
        exclude=("Product ID",),
        categories={"Type": ("L", "M", "H"), "Gone": ("x",)},
        ranges={"Torque [Nm]": (0.0, 100.0), "Type": (0.0, 1.0)},
    )

    spec = inferred.as_feature_spec(base)

    assert (spec.categorical, spec.numeric, spec.integer) == (("Type",), NUMERIC, INTEGER)
    assert spec.infer is False
    assert spec.exclude == ("Product ID",)
    assert spec.categories == {"Type": ("L", "M", "H")}
    assert spec.ranges == {"Torque [Nm]": (0.0, 100.0)}
    assert spec.declared == inferred.features


def test_as_feature_spec_without_a_base_is_a_plain_declared_spec():
    spec = InferredFeatures(numeric=("x",)).as_feature_spec()

    assert spec == FeatureSpec(numeric=("x",))


# --- infer_positive_label ---------------------------------------------------------------------


def test_positive_is_compared_as_text_so_a_command_line_1_matches_integer_1():
    labels = pd.Series([0] * 90 + [1] * 10, name="failed")

    positive, negative = infer_positive_label(labels, positive="1")

    assert (positive, negative) == (1, 0)
    assert type(positive) is int  # a plain int a YAML spec can hold, not numpy.int64


def test_whole_float_labels_come_back_as_integers():
    assert infer_positive_label(pd.Series([0.0, 1.0, 1.0, 0.0, 0.0]), positive=1) == (1, 0)


def test_boolean_labels_match_true_in_any_case():
    labels = pd.Series([False] * 5 + [True] * 5)

    assert infer_positive_label(labels, positive="true") == (True, False)
    assert infer_positive_label(labels, positive="True") == (True, False)


def test_a_tie_makes_the_label_that_sorts_last_positive():
    assert infer_positive_label(pd.Series(["no", "yes"] * 5)) == ("yes", "no")
    assert infer_positive_label(pd.Series([1, 0] * 5)) == (1, 0)


def test_missing_labels_are_not_counted():
    assert infer_positive_label(pd.Series(["ok", None, "ok", "fault"])) == ("fault", "ok")


def test_three_labels_are_refused_with_their_counts():
    labels = pd.Series(["ok"] * 5 + ["fault"] * 3 + ["unknown"], name="status")

    with pytest.raises(DataValidationError) as err:
        infer_positive_label(labels)

    assert str(err.value) == (
        "target column 'status' needs exactly two distinct labels, "
        "found 3: 'ok' (5), 'fault' (3), 'unknown' (1)"
    )


def test_a_single_label_is_refused():
    with pytest.raises(DataValidationError, match="exactly two distinct labels, found 1: 'ok' \\(4\\)"):
        infer_positive_label(pd.Series(["ok"] * 4, name="status"))


def test_many_labels_are_counted_but_not_listed():
    with pytest.raises(DataValidationError, match="found 500$"):
        infer_positive_label(pd.Series(np.arange(500), name="reading"))


def test_a_positive_label_that_does_not_occur_is_refused_with_the_labels_there_are(ai4i):
    with pytest.raises(DataValidationError, match="positive label 'maybe' does not occur .* 'no' \\(9,"):
        infer_positive_label(ai4i[TARGET], positive="maybe")
