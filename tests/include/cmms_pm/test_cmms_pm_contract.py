"""The data contract: learned from a training split, round-tripped as JSON, and checked against new data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cmms_pm.contract import (
    CONTRACT_VERSION,
    MAX_CATEGORIES,
    QUANTILES,
    ContractCheck,
    DataContract,
    check_and_flag,
    check_batch,
    derive_contract,
    flag_rows,
    observed_kind,
)
from cmms_pm.data import generate_telemetry
from cmms_pm.exceptions import CmmsPmError, ContractError
from cmms_pm.schema import CATEGORICAL, INTEGER_COLUMNS, NUMERIC, TARGET

TELEMETRY_KINDS = {
    **{name: "categorical" for name in CATEGORICAL},
    **{name: "numeric" for name in NUMERIC if name not in INTEGER_COLUMNS},
    **{name: "integer" for name in INTEGER_COLUMNS},
}
MACHINE_TARGET = "Machine failure"
MACHINE_KINDS = {
    "Type": "categorical",
    "Air temperature [K]": "numeric",
    "Rotational speed [rpm]": "integer",
    "Torque [Nm]": "numeric",
    "Tool wear [min]": "integer",
}
SECRET = "SECRET-VALUE-7f3a"
"""A data value that must never appear in a message, a summary or a report."""


def machines(n: int, seed: int) -> pd.DataFrame:
    """A foreign-looking frame: an id, a product id, a category L/M/H, sensors with units in brackets."""
    rng = np.random.default_rng(seed)
    quality = rng.choice(np.array(["L", "M", "H"], dtype=object), size=n, p=[0.6, 0.3, 0.1])
    torque = rng.normal(40.0, 10.0, n).round(1)
    return pd.DataFrame(
        {
            "UDI": np.arange(1, n + 1),
            "Product ID": pd.array([f"{q}{50000 + i}" for i, q in enumerate(quality)], dtype="str"),
            "Type": pd.array(quality, dtype="str"),
            "Air temperature [K]": rng.normal(300.0, 2.0, n).round(1),
            "Rotational speed [rpm]": rng.normal(1540, 180, n).round().astype(np.int64),
            "Torque [Nm]": torque,
            "Tool wear [min]": rng.integers(0, 250, n),
            MACHINE_TARGET: (rng.random(n) < 0.02 + 0.06 * (torque > 50)).astype(np.int64),
        }
    )


@pytest.fixture(scope="module")
def telemetry_contract(telemetry: pd.DataFrame) -> DataContract:
    return derive_contract(telemetry, target=TARGET, feature_kinds=TELEMETRY_KINDS)


@pytest.fixture(scope="module")
def machine_train() -> pd.DataFrame:
    return machines(4_000, 1)


@pytest.fixture(scope="module")
def machine_contract(machine_train: pd.DataFrame) -> DataContract:
    return derive_contract(machine_train, target=MACHINE_TARGET, feature_kinds=MACHINE_KINDS)


@pytest.fixture
def machine_batch(machine_train: pd.DataFrame) -> pd.DataFrame:
    """Training rows, so clean by construction: a copy that a test may corrupt."""
    return machine_train.sample(2_000, random_state=2).reset_index(drop=True)


def _as_json(value: dict) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


# --- deriving a contract -------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["telemetry_contract", "machine_contract"])
def test_contract_round_trips_through_json(which, request):
    contract = request.getfixturevalue(which)
    restored = DataContract.from_dict(json.loads(_as_json(contract.to_dict())))
    assert restored == contract
    assert _as_json(restored.to_dict()) == _as_json(contract.to_dict())


def test_the_same_frame_gives_the_same_contract_dict(machine_train, machine_contract):
    again = derive_contract(machine_train.copy(), target=MACHINE_TARGET, feature_kinds=dict(MACHINE_KINDS))
    assert json.dumps(again.to_dict()) == json.dumps(machine_contract.to_dict())


def test_contract_records_every_column_but_the_target_with_its_observed_kind(machine_contract):
    kinds = {column.name: (column.kind, column.feature) for column in machine_contract.columns}
    assert kinds == {
        "UDI": ("integer", False),
        "Product ID": ("categorical", False),
        "Type": ("categorical", True),
        "Air temperature [K]": ("numeric", True),
        "Rotational speed [rpm]": ("integer", True),
        "Torque [Nm]": ("numeric", True),
        "Tool wear [min]": ("integer", True),
    }
    assert machine_contract.features == tuple(MACHINE_KINDS)
    assert machine_contract.column(MACHINE_TARGET) is None
    assert machine_contract.rows == 4_000
    assert 0.02 < machine_contract.positive_rate < 0.04


def test_non_feature_columns_carry_no_values_into_the_contract(machine_contract):
    product = machine_contract.column("Product ID")
    assert product.to_dict() == {
        "name": "Product ID",
        "kind": "categorical",
        "feature": False,
        "missing_rate": 0.0,
    }


def test_numeric_feature_has_ordered_quantiles_and_bins_that_cover_every_row(telemetry_contract):
    assert NUMERIC
    for name in NUMERIC:
        column = telemetry_contract.column(name)
        quantiles = [column.quantiles[level] for level in QUANTILES]
        assert list(column.quantiles) == list(QUANTILES)
        assert column.min <= quantiles[0] and quantiles == sorted(quantiles) and quantiles[-1] <= column.max
        assert list(column.bin_edges) == sorted(set(column.bin_edges))
        assert len(column.bin_shares) == len(column.bin_edges) + 1
        assert sum(column.bin_shares) + column.missing_rate == pytest.approx(1.0)


def test_deciles_of_a_few_valued_integer_column_are_deduplicated(telemetry_contract):
    column = telemetry_contract.column("failures_last_year")
    assert column.kind == "integer"
    assert len(column.bin_edges) < 9


def test_categories_are_shares_most_frequent_first(machine_contract):
    column = machine_contract.column("Type")
    assert list(column.categories) == ["L", "M", "H"]
    assert sum(column.categories.values()) == pytest.approx(1.0)
    assert column.other_share == 0.0 and column.distinct == 3


def test_categories_beyond_the_cap_are_pooled_in_other_share():
    codes = np.repeat(np.arange(300), np.arange(300, 0, -1))
    frame = pd.DataFrame({"code": pd.array([f"c{i:03d}" for i in codes], dtype="str"), "y": codes % 2})
    column = derive_contract(frame, target="y", feature_kinds={"code": "categorical"}).column("code")
    assert len(column.categories) == MAX_CATEGORIES and column.distinct == 300
    assert list(column.categories)[:2] == ["c000", "c001"]
    pooled = np.arange(100, 0, -1).sum() / len(frame)
    assert column.other_share == pytest.approx(pooled)
    assert sum(column.categories.values()) + column.other_share == pytest.approx(1.0)


def test_missing_rates_are_recorded(machine_train):
    train = machine_train.copy()
    train.loc[train.index[:400], "Torque [Nm]"] = np.nan
    contract = derive_contract(train, target=MACHINE_TARGET, feature_kinds=MACHINE_KINDS)
    column = contract.column("Torque [Nm]")
    assert column.missing_rate == pytest.approx(0.1)
    assert sum(column.bin_shares) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "kind, values",
    [
        ("numeric", [1.5, np.nan]),
        ("integer", pd.array([1, None], dtype="Int64")),
        ("categorical", pd.array(["a", None], dtype="str")),
        ("categorical", pd.Categorical(["a", "b"])),
        ("boolean", [True, False]),
        ("boolean", pd.Series([True, None], dtype=object)),
        ("datetime", pd.to_datetime(["2024-01-01", "2024-01-02"])),
        ("other", pd.Series(["a", 1], dtype=object)),
    ],
)
def test_observed_kind_follows_the_values(kind, values):
    assert observed_kind(pd.Series(values)) == kind


@pytest.mark.parametrize(
    "frame, kinds, expected",
    [
        (pd.DataFrame({"x": [1.0]}), {"x": "numeric"}, "target column 'y' is not in the training frame"),
        (pd.DataFrame({"x": [1.0], "y": [SECRET]}), {"x": "numeric"}, "must hold only the labels 0 and 1"),
        (pd.DataFrame({"x": [1.0], "y": [np.nan]}), {"x": "numeric"}, "must hold only the labels 0 and 1"),
        (pd.DataFrame({"x": [1.0], "y": [1]}), {"z [m]": "numeric"}, "feature columns ['z [m]'] are not"),
        (pd.DataFrame({"x": [SECRET], "y": [1]}), {"x": "numeric"}, "'x' is declared numeric but"),
        (pd.DataFrame({"x": [1.0], "y": [1]}), {"x": "text"}, "need a kind among"),
        (pd.DataFrame({"x": [1.0], "y": [1]}), {"y": "numeric"}, "cannot also be a feature"),
        (pd.DataFrame({"x": [], "y": []}), {"x": "numeric"}, "from 0 rows"),
        (
            pd.DataFrame([[1.0, 2.0, 1]], columns=["x", "x", "y"]),
            {"x": "numeric"},
            "duplicate column names ['x']",
        ),
    ],
)
def test_derive_refuses_bad_training_data_naming_columns_not_values(frame, kinds, expected):
    with pytest.raises(ContractError) as caught:
        derive_contract(frame, target="y", feature_kinds=kinds)
    assert expected in str(caught.value)
    assert SECRET not in str(caught.value)
    assert isinstance(caught.value, CmmsPmError) and isinstance(caught.value, ValueError)


def test_a_contract_of_an_unknown_version_is_refused(machine_contract):
    data = {**machine_contract.to_dict(), "version": CONTRACT_VERSION + 1}
    with pytest.raises(ContractError, match=r"version 2 is not supported .*reads version 1"):
        DataContract.from_dict(data)


def test_a_contract_with_an_unknown_column_field_is_refused(machine_contract):
    data = machine_contract.to_dict()
    data["columns"][0]["colour"] = "red"
    with pytest.raises(ContractError, match=r"unknown fields \['colour'\]"):
        DataContract.from_dict(data)


# --- checking a batch --------------------------------------------------------------------------


def test_a_batch_from_the_same_distribution_passes_the_schema_and_categories(telemetry_contract):
    check = check_batch(generate_telemetry(3_000, 99), telemetry_contract)
    assert not check.schema_changed and check.schema_change_message() == ""
    assert check.unseen_categories == {} and check.missing == {}
    # A fresh sample may step a few rows past the training extremes, never many.
    assert all(found["share"] < 0.005 for found in check.out_of_range.values())


def test_added_removed_and_retyped_columns_are_named_in_the_message(machine_contract, machine_batch):
    batch = machine_batch.drop(columns=["Tool wear [min]"])
    batch["Humidity [%]"] = 40.0
    batch["Torque [Nm]"] = batch["Torque [Nm]"].map(lambda value: f"{value} Nm").astype("str")
    check = check_batch(batch, machine_contract)
    assert check.schema_changed
    assert check.added == ["Humidity [%]"] and check.removed == ["Tool wear [min]"]
    assert check.retyped == [{"column": "Torque [Nm]", "expected": "numeric", "found": "categorical"}]
    message = check.schema_change_message()
    assert "1 column added ['Humidity [%]']" in message
    assert "1 column removed ['Tool wear [min]']" in message
    assert "'Torque [Nm]' (numeric -> categorical)" in message
    assert " Nm" not in message.replace("'Torque [Nm]'", "")


def test_integers_that_became_floats_because_of_nan_are_not_a_retype(machine_contract, machine_batch):
    batch = machine_batch.copy()
    batch.loc[batch.index[:10], "Rotational speed [rpm]"] = np.nan
    assert batch["Rotational speed [rpm]"].dtype == np.float64
    check = check_batch(batch, machine_contract)
    assert not check.schema_changed
    assert check.missing == {
        "Rotational speed [rpm]": {"rows": 10, "share": 10 / 2_000, "training_share": 0.0}
    }


def test_integers_in_place_of_categories_are_a_retype(machine_contract, machine_batch):
    batch = machine_batch.assign(Type=machine_batch["Type"].map({"L": 0, "M": 1, "H": 2}))
    check = check_batch(batch, machine_contract)
    assert check.retyped == [{"column": "Type", "expected": "categorical", "found": "integer"}]


def test_an_entirely_missing_column_is_reported_as_missing_not_retyped(machine_contract, machine_batch):
    batch = machine_batch.assign(Type=pd.Series([None] * len(machine_batch), dtype=object))
    check = check_batch(batch, machine_contract)
    assert not check.schema_changed
    assert check.missing["Type"]["rows"] == 2_000 and check.missing["Type"]["share"] == 1.0


def test_the_target_and_ignored_columns_are_not_added(telemetry_contract):
    batch = generate_telemetry(500, 5).assign(equipment_id=lambda frame: np.arange(len(frame)))
    assert check_batch(batch, telemetry_contract).added == ["equipment_id"]
    assert not check_batch(batch, telemetry_contract, ignore=["equipment_id"]).schema_changed


def test_ignored_contract_columns_may_be_absent(machine_contract, machine_batch):
    batch = machine_batch.drop(columns=["UDI", "Product ID", MACHINE_TARGET])
    assert check_batch(batch, machine_contract).removed == ["UDI", "Product ID"]
    assert not check_batch(batch, machine_contract, ignore=("UDI", "Product ID")).schema_changed


def test_unseen_categories_are_counted_per_column_without_their_values(machine_contract, machine_batch):
    batch = machine_batch.copy()
    batch.loc[batch.index[:5], "Type"] = SECRET
    batch.loc[batch.index[5:7], "Type"] = "XL"
    check = check_batch(batch, machine_contract)
    assert check.unseen_categories == {"Type": {"rows": 7, "values": 2}}
    assert "unseen categories in 1 column (7 rows)" in check.summary()
    for text in (check.summary(), check.schema_change_message(), _as_json(check.to_dict())):
        assert SECRET not in text and "XL" not in text


def test_values_past_the_range_tolerance_are_out_of_range(machine_contract, machine_batch):
    column = machine_contract.column("Torque [Nm]")
    spread = column.quantiles["0.99"] - column.quantiles["0.01"]
    batch = machine_batch.copy()
    torque = batch.columns.get_loc("Torque [Nm]")
    batch.iloc[:20, torque] = column.max + 0.06 * spread
    batch.iloc[20:25, torque] = column.min - 0.06 * spread
    batch.iloc[25:40, torque] = column.max + 0.04 * spread
    batch.iloc[40:45, torque] = np.inf
    check = check_batch(batch, machine_contract)
    assert check.out_of_range["Torque [Nm]"] == {"rows": 30, "share": 30 / 2_000}


def test_a_check_is_json_able_and_its_summary_is_one_line(machine_contract, machine_batch):
    batch = machine_batch.drop(columns=["UDI"])
    batch.loc[batch.index[:3], "Air temperature [K]"] = np.nan
    check = check_batch(batch, machine_contract)
    data = json.loads(_as_json(check.to_dict()))
    assert data["schema_changed"] is True and data["removed"] == ["UDI"]
    assert data["missing"]["Air temperature [K]"]["rows"] == 3
    assert "\n" not in check.summary()
    assert check.summary().startswith("2000 rows; schema: 0 added, 1 removed, 0 retyped;")


def test_an_empty_batch_has_no_findings(machine_contract, machine_batch):
    check = check_batch(machine_batch.head(0), machine_contract)
    assert check.to_dict() == ContractCheck(rows=0).to_dict()
    assert check.schema_change_message() == ""


def test_a_category_coded_as_numbers_keeps_its_categories_when_nan_turns_it_into_floats():
    train = pd.DataFrame({"grade": [1, 2, 3, 1, 2, 3] * 10, "y": [0, 1] * 30})
    contract = derive_contract(train, target="y", feature_kinds={"grade": "categorical"})
    assert list(contract.column("grade").categories) == ["1", "2", "3"]
    batch = pd.DataFrame({"grade": [1.0, 2.0, np.nan, 4.0]})
    check = check_batch(batch, contract)
    assert not check.schema_changed
    assert check.unseen_categories == {"grade": {"rows": 1, "values": 1}}
    assert flag_rows(batch, contract)["unseen_category"].tolist() == [False, False, False, True]


def test_a_frame_with_duplicate_column_names_is_refused(machine_contract):
    batch = pd.DataFrame([[1.0, 2.0]], columns=["Torque [Nm]", "Torque [Nm]"])
    with pytest.raises(ContractError, match=r"duplicate column names \['Torque \[Nm\]'\]"):
        check_batch(batch, machine_contract)


# --- flagging rows for scoring -------------------------------------------------------------------


def test_flag_rows_flags_exactly_the_rows_with_a_problem(machine_contract, machine_batch):
    batch = machine_batch.set_axis(machine_batch.index + 1_000)
    type_, torque, air = (
        batch.columns.get_loc(name) for name in ("Type", "Torque [Nm]", "Air temperature [K]")
    )
    batch.iloc[3, type_] = SECRET
    batch.iloc[5, air] = np.nan
    batch.iloc[8, torque] = 1e6
    batch.iloc[9, type_] = "XL"
    batch.iloc[9, torque] = -1e6
    batch.iloc[9, air] = np.nan
    flags = flag_rows(batch, machine_contract)

    assert list(flags.columns) == ["unseen_category", "missing_value", "out_of_range", "contract_issues"]
    assert flags.index.equals(batch.index)
    assert flags.index[flags["unseen_category"]].tolist() == [1003, 1009]
    assert flags.index[flags["missing_value"]].tolist() == [1005, 1009]
    assert flags.index[flags["out_of_range"]].tolist() == [1008, 1009]
    issues = flags["contract_issues"]
    assert issues.loc[1003] == "unseen_category:Type"
    assert issues.loc[1005] == "missing_value:Air temperature [K]"
    assert issues.loc[1008] == "out_of_range:Torque [Nm]"
    assert (
        issues.loc[1009]
        == "unseen_category:Type; missing_value:Air temperature [K]; out_of_range:Torque [Nm]"
    )
    flagged = flags.index.isin([1003, 1005, 1008, 1009])
    assert (issues[~flagged] == "").all()
    assert not flags.loc[~flagged, ["unseen_category", "missing_value", "out_of_range"]].any().any()
    assert not issues.str.contains(SECRET).any()


def test_flag_rows_ignores_non_feature_columns(machine_contract, machine_batch):
    batch = machine_batch.assign(**{"Product ID": SECRET, "UDI": np.nan})
    assert (flag_rows(batch, machine_contract)["contract_issues"] == "").all()


def test_a_feature_absent_from_the_input_flags_every_row_as_missing(machine_contract, machine_batch):
    flags = flag_rows(machine_batch.drop(columns=["Tool wear [min]"]).head(50), machine_contract)
    assert flags["missing_value"].all()
    assert (flags["contract_issues"] == "missing_value:Tool wear [min]").all()


def test_text_in_a_numeric_feature_is_flagged_out_of_range(machine_contract, machine_batch):
    batch = machine_batch.head(4).astype({"Torque [Nm]": object})
    batch.iloc[1, batch.columns.get_loc("Torque [Nm]")] = "n/a"
    flags = flag_rows(batch, machine_contract)
    assert flags["out_of_range"].tolist() == [False, True, False, False]
    assert not flags["missing_value"].any()


def test_flag_rows_of_an_empty_frame_is_empty(machine_contract, machine_batch):
    flags = flag_rows(machine_batch.head(0), machine_contract)
    assert len(flags) == 0
    assert list(flags.columns) == ["unseen_category", "missing_value", "out_of_range", "contract_issues"]


@pytest.mark.parametrize("retype", [False, True])
def test_check_and_flag_gives_what_check_batch_and_flag_rows_give(machine_contract, machine_batch, retype):
    batch = machine_batch.set_axis(machine_batch.index + 7)
    type_, torque, air = (
        batch.columns.get_loc(name) for name in ("Type", "Torque [Nm]", "Air temperature [K]")
    )
    batch.iloc[2, type_] = "XL"
    batch.iloc[4, type_] = "XXL"
    batch.iloc[4, air] = np.nan
    batch.iloc[6, torque] = 1e6
    batch = batch.assign(extra=1)
    if retype:  # a retyped feature is not checked, but its rows are still flagged
        batch = batch.astype({"Torque [Nm]": object})
        batch.iloc[1, batch.columns.get_loc("Torque [Nm]")] = "n/a"
    check, flags = check_and_flag(batch, machine_contract, ignore=["UDI"])

    assert check.to_dict() == check_batch(batch, machine_contract, ignore=["UDI"]).to_dict()
    pd.testing.assert_frame_equal(flags, flag_rows(batch, machine_contract))
    assert check.unseen_categories == {"Type": {"rows": 2, "values": 2}}
    assert flags.index[flags["contract_issues"] != ""].tolist() == [*([8] if retype else []), 9, 11, 13]
