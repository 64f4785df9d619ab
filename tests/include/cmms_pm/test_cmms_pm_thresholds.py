"""Choosing the alert threshold per strategy, on rows where the right answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from cmms_pm.thresholds import (
    DecisionPolicy,
    ThresholdError,
    choose_threshold,
    metrics_at,
    valid_threshold,
)

# Ten rows, risks 0.95 … 0.05 (highest first), failures at the ranks marked 1.
RISKS = np.array([0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.05])
LABELS = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])


def alerts(choice, risks=RISKS) -> int:
    return int((np.asarray(risks) >= choice["threshold"]).sum())


def test_f1_picks_the_cut_with_the_best_f1_halfway_to_the_next_risk():
    # Cuts after rank 2: F1 0.667, rank 4: 0.75, rank 7: 0.727 -> the top 4 rows alert.
    choice = choose_threshold(LABELS, RISKS, DecisionPolicy())
    assert choice["threshold"] == pytest.approx(0.60)  # between 0.65 (alerts) and 0.55 (does not)
    assert alerts(choice) == 4 and choice["f1"] == pytest.approx(0.75)
    assert (choice["precision"], choice["recall"]) == (pytest.approx(0.75), pytest.approx(0.75))
    assert choice["met"] and choice["chosen_by"] == "f1" and "highest F1" in choice["note"]
    # The choice is what metrics_at measures at that threshold (the same rows).
    assert metrics_at(LABELS, RISKS, choice["threshold"], choice["costs"])["f1"] == choice["f1"]


def test_cost_trades_missed_failures_against_inspections_by_their_prices():
    cheap_miss = DecisionPolicy(strategy="cost", missed_failure_cost=1.0, needless_inspection_cost=1.0)
    dear_miss = DecisionPolicy(strategy="cost", missed_failure_cost=20.0, needless_inspection_cost=1.0)
    # Equal prices: minimise errors. The top 2 (2 misses) and the top 4 (1 miss, 1 false alarm) tie
    # at 2 errors: a tie goes to the higher threshold (fewer alerts).
    assert alerts(choose_threshold(LABELS, RISKS, cheap_miss)) == 2
    # A miss costs 20 inspections: alert down to the last failure (rank 7): 3 FP, 0 FN.
    choice = choose_threshold(LABELS, RISKS, dear_miss)
    assert alerts(choice) == 7 and choice["recall"] == 1.0
    assert choice["expected_cost"] == pytest.approx(3 * 1.0 / 10)


def test_a_cost_no_threshold_beats_is_said_and_falls_back_as_the_spec_says():
    # Labels unrelated to the risk order: inspecting is dear, missing is cheap -> never alerting wins.
    labels = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    policy = DecisionPolicy(strategy="cost", missed_failure_cost=1.0, needless_inspection_cost=50.0)
    choice = choose_threshold(labels, RISKS, policy)
    assert not choice["met"] and choice["chosen_by"] == "fallback: f1"
    assert "no threshold costs less than never alerting" in choice["note"]
    assert choice["threshold"] == choose_threshold(labels, RISKS, DecisionPolicy())["threshold"]
    fixed = choose_threshold(labels, RISKS, DecisionPolicy(**{**policy.__dict__, "fallback": "fixed"}))
    assert fixed["threshold"] == 0.5 and fixed["chosen_by"] == "fallback: fixed"
    with pytest.raises(ThresholdError, match="fallback is 'fail'.*no version is registered"):
        choose_threshold(labels, RISKS, DecisionPolicy(**{**policy.__dict__, "fallback": "fail"}))


def test_precision_floor_takes_the_most_recall_that_keeps_the_floor():
    # Precision by cut: 1, 1, .67, .75, .6, .5, .57, .5, .44, .4
    choice = choose_threshold(LABELS, RISKS, DecisionPolicy(strategy="precision_floor", min_precision=0.7))
    assert alerts(choice) == 4 and choice["precision"] >= 0.7 and choice["recall"] == 0.75
    strict = choose_threshold(LABELS, RISKS, DecisionPolicy(strategy="precision_floor", min_precision=0.99))
    assert alerts(strict) == 2 and strict["precision"] == 1.0
    loose = choose_threshold(LABELS, RISKS, DecisionPolicy(strategy="precision_floor", min_precision=0.55))
    assert alerts(loose) == 7  # 4/7 = 0.571 is the deepest cut at or above 0.55


def test_a_precision_floor_no_threshold_reaches_falls_back_and_says_so():
    labels = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    policy = DecisionPolicy(
        strategy="precision_floor", min_precision=0.9, fallback="fixed", fixed_threshold=0.3
    )
    choice = choose_threshold(labels, RISKS, policy)
    assert not choice["met"] and choice["threshold"] == 0.3
    assert (
        "no threshold reaches precision 0.9000" in choice["note"]
        and "fixed threshold 0.3000" in choice["note"]
    )


def test_alert_budget_share_of_the_rows():
    choice = choose_threshold(LABELS, RISKS, DecisionPolicy(strategy="alert_budget", alert_share=0.3))
    assert alerts(choice) == 3 and choice["budget"] == {"share": 0.3, "allowed": 3}
    assert (
        alerts(choose_threshold(LABELS, RISKS, DecisionPolicy(strategy="alert_budget", alert_share=1.0)))
        == 10
    )


def test_alert_budget_per_day_never_exceeds_k_on_any_day_and_counts_an_asset_once_a_day():
    rng = np.random.default_rng(5)
    days = np.repeat(np.arange(6), 50)  # 6 days x 50 rows
    risks = rng.random(300)
    labels = (rng.random(300) < risks * 0.4).astype(int)
    policy = DecisionPolicy(strategy="alert_budget", alerts_per_day=4)
    choice = choose_threshold(labels, risks, policy, days=days)
    per_day = np.bincount(days[risks >= choice["threshold"]], minlength=6)
    assert per_day.max() == 4  # the budget binds on the busiest day, and is never exceeded
    assert choice["budget"]["per_day"] == 4 and choice["budget"]["days"] == 6
    # The same asset at two snapshots of one day is one work order: its copy does not use the budget.
    twice = np.r_[risks, risks[:50]]
    entities = np.r_[np.arange(300), np.arange(50)]
    again = choose_threshold(
        np.r_[labels, labels[:50]], twice, policy, days=np.r_[days, days[:50]], entities=entities
    )
    assert again["threshold"] == pytest.approx(choice["threshold"])


def test_a_per_day_budget_without_the_rows_time_uses_the_share_or_fails_clearly():
    both = DecisionPolicy(strategy="alert_budget", alerts_per_day=2, alert_share=0.2)
    choice = choose_threshold(LABELS, RISKS, both)  # no days given: the share applies, and the note says so
    assert alerts(choice) == 2 and "no time column" in choice["note"]
    with pytest.raises(ThresholdError, match="per_day needs the rows' time"):
        choose_threshold(LABELS, RISKS, DecisionPolicy(strategy="alert_budget", alerts_per_day=2))


def test_a_budget_that_ties_at_the_top_cannot_be_met():
    risks = np.array([0.9, 0.9, 0.9, 0.2, 0.1])
    labels = np.array([1, 0, 1, 0, 1])
    choice = choose_threshold(labels, risks, DecisionPolicy(strategy="alert_budget", alert_share=0.4))
    assert not choice["met"] and "with at least one alert" in choice["note"]


def test_no_failures_in_the_rows_is_a_clear_error_not_a_threshold():
    with pytest.raises(ThresholdError, match="hold no failure"):
        choose_threshold(np.zeros(10), RISKS, DecisionPolicy())
    with pytest.raises(ThresholdError, match="all failures"):
        choose_threshold(np.ones(10), RISKS, DecisionPolicy())


def test_thresholds_stay_strictly_inside_0_and_1():
    # A perfect separation at risk 1.0 / 0.0 still gives a threshold in (0, 1).
    choice = choose_threshold([1, 1, 0, 0], [1.0, 1.0, 0.0, 0.0], DecisionPolicy())
    assert 0.0 < choice["threshold"] < 1.0 and choice["f1"] == 1.0
    low = choose_threshold([1, 1, 0, 0], [0.0, 0.0, 0.0, 0.0], DecisionPolicy())
    assert 0.0 < low["threshold"] < 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.37", 0.37),
        (0.5, 0.5),
        ("1", None),
        ("0", None),
        ("nan", None),
        ("inf", None),
        ("x", None),
        (None, None),
    ],
)
def test_valid_threshold_accepts_only_numbers_strictly_inside_0_1(value, expected):
    assert valid_threshold(value) == expected


def test_policy_from_the_spec_section(shipped_spec):
    policy = DecisionPolicy.from_spec(shipped_spec.decision)
    assert policy.strategy == "f1" and policy.costs == {"missed_failure": 10.0, "needless_inspection": 1.0}
    budget = DecisionPolicy.from_spec({"strategy": "alert_budget", "alert_budget": {"per_day": 5}})
    assert (budget.alerts_per_day, budget.alert_share, budget.fallback) == (5, None, "f1")
