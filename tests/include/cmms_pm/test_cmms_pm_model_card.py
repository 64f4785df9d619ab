"""The model card: rendered from recorded facts, naming the period and the slices; user text stays text."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from cmms_pm import model_card
from cmms_pm.model_card import code, holdout_facts, interval_metrics, render, slice_metrics

COSTS = {"missed_failure": 10.0, "needless_inspection": 1.0}


def _holdout(n: int = 4000, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"equipment_type": rng.choice(["pump", "motor", "turbine"], n, p=[0.6, 0.35, 0.05])})
    risk = rng.random(n)
    y = (rng.random(n) < risk * 0.3).astype(int)
    return frame, y, risk


def test_intervals_surround_the_value_are_seeded_and_shrink_with_more_rows():
    frame, y, risk = _holdout()
    wide = interval_metrics(y[:400], risk[:400], 0.6, COSTS, seed=0)
    narrow = interval_metrics(y, risk, 0.6, COSTS, seed=0)
    for name in ("precision", "recall", "f1", "expected_cost"):
        assert narrow[name]["low"] <= narrow[name]["value"] <= narrow[name]["high"]
        assert narrow[name]["high"] - narrow[name]["low"] < wide[name]["high"] - wide[name]["low"]
    assert interval_metrics(y, risk, 0.6, COSTS, seed=0) == narrow  # seeded
    assert interval_metrics(y, risk, 0.6, COSTS, seed=1) != narrow


def test_the_multinomial_bootstrap_matches_a_row_bootstrap():
    frame, y, risk = _holdout(2000)
    rng = np.random.default_rng(0)
    f1s = []
    for _ in range(2000):
        rows = rng.integers(0, len(y), len(y))
        alert = risk[rows] >= 0.6
        tp = (alert & (y[rows] == 1)).sum()
        f1s.append(2 * tp / (2 * tp + (alert & (y[rows] == 0)).sum() + (~alert & (y[rows] == 1)).sum()))
    ours = interval_metrics(y, risk, 0.6, COSTS, seed=0)["f1"]
    assert ours["low"] == pytest.approx(np.percentile(f1s, 2.5), abs=0.01)
    assert ours["high"] == pytest.approx(np.percentile(f1s, 97.5), abs=0.01)


def test_slices_per_category_with_the_largest_first_and_the_rest_grouped(monkeypatch):
    frame, y, risk = _holdout()
    slices = slice_metrics(frame, y, risk, 0.6, ["equipment_type", "not_a_column"], COSTS)
    assert [s["value"] for s in slices] == ["pump", "motor", "turbine"]
    assert sum(s["rows"] for s in slices) == len(frame) and sum(s["positives"] for s in slices) == y.sum()
    pump = frame["equipment_type"].to_numpy() == "pump"
    assert slices[0]["recall"] == pytest.approx(
        ((risk >= 0.6) & pump & (y == 1)).sum() / (pump & (y == 1)).sum()
    )
    monkeypatch.setattr(model_card, "MAX_SLICES", 2)
    grouped = slice_metrics(frame, y, risk, 0.6, ["equipment_type"], COSTS)
    assert [s["value"] for s in grouped] == ["pump", "motor", "(other 1 values)"]


def _facts() -> dict:
    frame, y, risk = _holdout()
    return {
        "model_name": "pm_rf",
        "version": "3",
        "spec": "predictive_maintenance",
        "estimator": "random_forest",
        "estimator_title": "Random forest",
        "description": "Failure within 7 days",
        "target": {"column": "failure_within_7d", "positive": "1"},
        "data": {
            "source": "synthetic",
            "data_version": "2026-03-31T02:00:00+00:00/2026-04-01T02:00:00+00:00",
            "period_start": "2026-03-31T02:00:00+00:00",
            "period_end": "2026-04-01T02:00:00+00:00",
            "rows": 20000,
            "positives": 1800,
            "positive_rate": 0.09,
            "digest": "abcdef0123456789",
            "splits": {"train": {"rows": 14000, "positives": 1260}},
        },
        "split": {"strategy": "time", "train_end": "2026-03-20", "holdout_start": "2026-03-27"},
        "features": {"categorical": ["equipment_type"], "numeric": ["temperature_c"], "integer": []},
        "excluded": ["equipment_id"],
        "threshold": {
            "threshold": 0.41,
            "strategy": "f1",
            "chosen_by": "f1",
            "note": "best F1",
            "rows": 3000,
        },
        "calibration": {"method": "isotonic", "reason": "auto", "brier_before": 0.02, "brier_after": 0.01},
        "limitations": ["Few failures"],
        "holdout": holdout_facts(frame, y, risk, 0.6, COSTS, slice_columns=["equipment_type"]),
        "approval": {"outcome": "promoted", "decided_by": "airflow:pm_training/run1", "reason": "F1 ≥ 0.8"},
    }


def test_the_card_names_the_period_the_split_the_slices_and_the_threshold():
    card = render(_facts())
    assert card.startswith("# Model card: `pm_rf` version 3")
    assert "Period: 2026-03-31T02:00:00+00:00 to 2026-04-01T02:00:00+00:00" in card
    assert "Time split: train_end `2026-03-20`, holdout_start `2026-03-27`" in card
    assert "### Per slice" in card and "| `equipment_type` | `pump` |" in card and "| `turbine` |" in card
    assert "Threshold **0.4100**" in card and "At the version's threshold 0.6000" in card
    assert re.search(r"\| f1 \| 0\.\d{4} \(0\.\d{4} – 0\.\d{4}\) \|", card)
    assert "isotonic" in card and "Brier score 0.0200 before, 0.0100 after" in card
    for heading in ("Intended use", "Data", "Features", "Holdout metrics", "Known limitations", "Approval"):
        assert f"## {heading}" in card
    assert "Decided by: airflow:pm_training/run1" in card
    assert render(_facts()) == card  # pure


def test_a_card_before_validation_says_what_is_not_known_yet():
    facts = {**_facts(), "holdout": None, "approval": None, "version": None}
    card = render(facts)
    assert "Not evaluated yet" in card and "Not decided yet" in card and "version" not in card.splitlines()[0]


@pytest.mark.parametrize(
    "name", ["a|b", "x`y", "``", "<script>alert(1)</script>", "line\nbreak", "| --- |", "`lead"]
)
def test_column_names_stay_inside_their_code_span_and_table_cell(name):
    span = code(name)
    assert "\n" not in span and "|" not in span.replace("\\|", "")
    fence = re.match(r"`+", span).group(0)
    inner = span[len(fence) : -len(fence)]
    assert "`" * len(fence) not in inner  # the fence is longer than any backtick run inside
    facts = _facts()
    facts["features"] = {"categorical": [name], "numeric": [], "integer": []}
    facts["holdout"]["slices"] = [{**facts["holdout"]["slices"][0], "feature": name, "value": name}]
    row = next(line for line in render(facts).splitlines() if line.startswith("| `") and "rows" not in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 9  # eight cells, none split by the name
