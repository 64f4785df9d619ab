"""The foreign-schema dataset the tests build (tests/datasets.py): its shape, its rarity, its
learnability, and the batches crafted from it."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from datasets import (
    COLUMNS,
    SENSORS,
    TARGET,
    ai4i_drifted,
    ai4i_like,
    with_schema_change,
    with_unseen_category,
)


@pytest.fixture(scope="module")
def ai4i() -> pd.DataFrame:
    return ai4i_like()


def test_columns_and_types_are_those_of_ai4i_2020(ai4i):
    assert tuple(ai4i.columns) == COLUMNS
    assert len(ai4i) == 10_000
    assert ai4i["UDI"].tolist() == list(range(1, 10_001))
    assert ai4i["Product ID"].is_unique
    assert ai4i["Product ID"].str.fullmatch(r"[LMH]\d{5}").all()
    assert (ai4i["Product ID"].str[0] == ai4i["Type"]).all()
    for column in ("UDI", "Rotational speed [rpm]", "Tool wear [min]"):
        assert pd.api.types.is_integer_dtype(ai4i[column]), column
    for column in ("Air temperature [K]", "Process temperature [K]", "Torque [Nm]"):
        assert pd.api.types.is_float_dtype(ai4i[column]), column
    assert set(ai4i[TARGET]) == {"no", "yes"}


def test_type_shares_and_failure_rate_are_close_to_ai4i(ai4i):
    shares = ai4i["Type"].value_counts(normalize=True)
    assert shares["L"] == pytest.approx(0.6, abs=0.02)
    assert shares["M"] == pytest.approx(0.3, abs=0.02)
    assert shares["H"] == pytest.approx(0.1, abs=0.02)
    assert (ai4i[TARGET] == "yes").mean() == pytest.approx(0.034, abs=0.008)


def test_sensors_are_physically_plausible(ai4i):
    gap = ai4i["Process temperature [K]"] - ai4i["Air temperature [K]"]
    assert gap.between(5, 15).all()
    assert ai4i["Rotational speed [rpm]"].between(1168, 2886).all()
    assert ai4i["Torque [Nm]"].between(3.8, 76.6).all()
    assert ai4i["Tool wear [min]"].between(0, 253).all()
    assert ai4i["Torque [Nm]"].corr(ai4i["Rotational speed [rpm]"]) < -0.8


def test_same_seed_same_frame_other_seed_other_frame():
    pd.testing.assert_frame_equal(ai4i_like(500, seed=7), ai4i_like(500, seed=7))
    assert not ai4i_like(500, seed=7).equals(ai4i_like(500, seed=8))


def test_labels_may_be_integers():
    frame = ai4i_like(2_000, labels=(0, 1))

    assert pd.api.types.is_integer_dtype(frame[TARGET])
    assert set(frame[TARGET]) == {0, 1}


def test_ten_thousand_rows_take_well_under_a_second():
    started = time.perf_counter()
    ai4i_like(10_000, seed=1)
    assert time.perf_counter() - started < 0.5  # about 0.03 s; the margin is for a busy CI machine


def test_failures_are_learnable_from_the_sensors_but_not_perfectly(ai4i):
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from cmms_pm.estimators import build_pipeline

    y = (ai4i[TARGET] == "yes").astype(int)
    train, test, y_train, y_test = train_test_split(ai4i, y, test_size=0.3, stratify=y, random_state=0)
    model = build_pipeline("random_forest", {}, categorical=["Type"], numeric=list(SENSORS))

    f1 = f1_score(y_test, model.fit(train, y_train).predict(test))

    assert 0.55 < f1 < 0.95  # measured 0.64-0.69 over seeds 0-4 (hist_gradient_boosting 0.78-0.81)


def test_unseen_category_replaces_the_first_rows_or_the_given_ones(ai4i):
    first = with_unseen_category(ai4i, rows=12)
    chosen = with_unseen_category(ai4i, column="Type", value="Z", rows=[3, 40])

    assert (first["Type"] == "X").sum() == 12 and (first["Type"].iloc[:12] == "X").all()
    assert chosen.index[chosen["Type"] == "Z"].tolist() == [3, 40]
    assert (ai4i["Type"] != "X").all()  # the input is left alone


def test_schema_change_renames_adds_and_retypes(ai4i):
    changed = with_schema_change(
        ai4i, rename={"Torque [Nm]": "Torque"}, add=["Humidity [%]"], retype=["Rotational speed [rpm]"]
    )

    assert "Torque [Nm]" not in changed and "Torque" in changed
    assert pd.api.types.is_float_dtype(changed["Humidity [%]"])
    assert changed["Rotational speed [rpm]"].str.endswith(" units").all()


def test_drifted_batch_moves_torque_and_type(ai4i):
    drifted = ai4i_drifted()

    assert drifted["Torque [Nm]"].mean() - ai4i["Torque [Nm]"].mean() == pytest.approx(8.0, abs=1.0)
    assert drifted["Type"].value_counts(normalize=True)["H"] == pytest.approx(0.5, abs=0.05)
    assert np.isin(drifted[TARGET].unique(), ["no", "yes"]).all()
