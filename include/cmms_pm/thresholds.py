"""The alert threshold: chosen on validation rows by the spec's ``decision`` strategy, never on the holdout.

A row is an alert when its risk is at or above the threshold. Every distinct risk on the rows is a
candidate cut; the threshold returned lies halfway between the chosen cut and the next lower risk,
so the rows decide which alerts there are, not float noise, and it is always inside (0, 1).

Strategies (``decision.strategy``):

- ``f1``: the cut with the highest F1.
- ``cost``: the cut with the lowest expected cost ``(missed_failure * FN + needless_inspection * FP)
  / rows``. Not met when no cut costs less than both trivial policies (never alert, alert on all).
- ``precision_floor``: the cut with the most recall whose precision reaches ``min_precision``.
- ``alert_budget``: the cut with the most recall that raises at most ``per_day`` alerts on every
  day of the rows (an asset counted once a day; needs the rows' time) or at most ``share`` of the
  rows. Not met when no cut with at least one alert fits (ties at the top, a budget below one alert).

When the strategy is not met, ``decision.fallback`` says what happens: the F1-best threshold
(``f1``), ``fixed_threshold`` (``fixed``), or :class:`ThresholdError` (``fail``). The choice
records which one decided and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from cmms_pm.exceptions import DataValidationError

#: Thresholds are kept strictly inside (0, 1): a version tag outside is refused when read back.
THRESHOLD_MIN = 1e-6
THRESHOLD_MAX = 1.0 - 1e-6
#: The threshold of a version from before thresholds were chosen (and of any model without one).
DEFAULT_THRESHOLD = 0.5
_EPS = 1e-12


class ThresholdError(DataValidationError):
    """No threshold can be chosen: no positives, or the strategy is not met and the spec says fail."""


@dataclass(frozen=True)
class DecisionPolicy:
    """The spec's ``decision`` section, typed."""

    strategy: str = "f1"
    missed_failure_cost: float = 10.0
    needless_inspection_cost: float = 1.0
    min_precision: float | None = None
    alerts_per_day: int | None = None
    alert_share: float | None = None
    fallback: str = "f1"
    fixed_threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def from_spec(cls, decision: Mapping[str, Any]) -> DecisionPolicy:
        costs = decision.get("costs") or {}
        budget = decision.get("alert_budget") or {}
        return cls(
            strategy=decision.get("strategy", "f1"),
            missed_failure_cost=float(costs.get("missed_failure", 10.0)),
            needless_inspection_cost=float(costs.get("needless_inspection", 1.0)),
            min_precision=decision.get("min_precision"),
            alerts_per_day=budget.get("per_day"),
            alert_share=budget.get("share"),
            fallback=decision.get("fallback", "f1"),
            fixed_threshold=float(decision.get("fixed_threshold", DEFAULT_THRESHOLD)),
        )

    @property
    def costs(self) -> dict[str, float]:
        return {
            "missed_failure": self.missed_failure_cost,
            "needless_inspection": self.needless_inspection_cost,
        }


class ThresholdChoice(TypedDict):
    """What :func:`choose_threshold` decided, on which rows, and how the rows fare at that threshold."""

    threshold: float
    strategy: str  # the spec's strategy
    chosen_by: str  # the strategy, or "fallback: f1" / "fallback: fixed"
    met: bool  # whether the strategy itself was met
    note: str  # one sentence: what was asked and what was chosen
    rows: int
    positives: int
    alerts: int
    precision: float
    recall: float
    f1: float
    expected_cost: float
    costs: dict[str, float]
    budget: dict[str, Any]  # per_day / share asked, alerts on the busiest day (when per day)


def metrics_at(y_true: Any, proba: Any, threshold: float, costs: Mapping[str, float]) -> dict[str, float]:
    """Alerts, precision, recall, F1 and expected cost per row of ``proba >= threshold``."""
    y = np.asarray(y_true).astype(int)
    alert = np.asarray(proba, dtype=float) >= threshold
    tp = int((alert & (y == 1)).sum())
    fp = int((alert & (y == 0)).sum())
    fn = int((~alert & (y == 1)).sum())
    return _rates(tp, fp, fn, len(y), costs)


def _rates(tp: float, fp: float, fn: float, n: int, costs: Mapping[str, float]) -> dict[str, float]:
    return {
        "alerts": float(tp + fp),
        "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
        "recall": float(tp / (tp + fn)) if tp + fn else 0.0,
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0,
        "expected_cost": float((costs["missed_failure"] * fn + costs["needless_inspection"] * fp) / n)
        if n
        else 0.0,
    }


@dataclass(frozen=True)
class _Curve:
    """Per candidate cut (distinct risks, highest first): the threshold and the confusion counts."""

    scores: np.ndarray
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    rows: int

    @property
    def fn(self) -> np.ndarray:
        return self.positives - self.tp

    def f1(self) -> np.ndarray:
        return 2 * self.tp / np.maximum(2 * self.tp + self.fp + self.fn, 1)

    def precision(self) -> np.ndarray:
        return self.tp / np.maximum(self.tp + self.fp, 1)

    def cost(self, policy: DecisionPolicy) -> np.ndarray:
        return (policy.missed_failure_cost * self.fn + policy.needless_inspection_cost * self.fp) / self.rows


def _curve(y: np.ndarray, p: np.ndarray) -> _Curve:
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last row of each run of equal risks
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    scores = ps[last]
    lower = np.r_[scores[1:], 0.0]
    thresholds = np.clip((scores + lower) / 2.0, THRESHOLD_MIN, THRESHOLD_MAX)
    return _Curve(scores, thresholds, tp, fp, int(ys.sum()), len(ys))


def choose_threshold(
    y_true: Any,
    proba: Any,
    policy: DecisionPolicy,
    *,
    days: Any = None,
    entities: Any = None,
) -> ThresholdChoice:
    """The threshold ``policy`` chooses on these (validation) rows.

    ``days``: each row's day (anything hashable; e.g. the snapshot time's date) for a per-day
    alert budget; ``entities``: each row's asset, so an asset alerted twice a day counts once.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    if y.shape != p.shape or y.ndim != 1:
        raise DataValidationError(f"labels have shape {y.shape} but risks have shape {p.shape}")
    if not np.isfinite(p).all():
        raise DataValidationError("risks must be finite numbers to choose a threshold")
    positives = int(y.sum())
    if positives == 0:
        raise ThresholdError(
            f"the validation rows ({len(y)}) hold no failure (positive label): no alert threshold can be "
            "chosen; a batch needs failures in its validation split"
        )
    if positives == len(y):
        raise ThresholdError(
            f"the validation rows ({len(y)}) are all failures: no alert threshold can be chosen"
        )
    curve = _curve(y, p)
    budget: dict[str, Any] = {}
    index, unmet = _by_strategy(curve, policy, p, days, entities, budget)
    if index is not None:
        return _choice(
            curve.thresholds[index], policy, y, p, policy.strategy, True, _met_note(policy, budget), budget
        )
    if policy.fallback == "fail":
        raise ThresholdError(f"{unmet}; decision.fallback is 'fail', so no version is registered")
    if policy.fallback == "fixed":
        threshold = policy.fixed_threshold
        note = f"{unmet}; fell back to the fixed threshold {threshold:.4f} (decision.fallback: fixed)"
        return _choice(threshold, policy, y, p, "fallback: fixed", False, note, budget)
    best = int(np.argmax(curve.f1()))
    note = f"{unmet}; fell back to the F1-best threshold (decision.fallback: f1)"
    return _choice(curve.thresholds[best], policy, y, p, "fallback: f1", False, note, budget)


def _by_strategy(
    curve: _Curve, policy: DecisionPolicy, p: np.ndarray, days: Any, entities: Any, budget: dict[str, Any]
) -> tuple[int | None, str]:
    """The chosen cut's index, or None and a sentence saying why the strategy is not met."""
    strategy = policy.strategy
    if strategy == "f1":
        return int(np.argmax(curve.f1())), ""
    if strategy == "cost":
        cost = curve.cost(policy)
        never = policy.missed_failure_cost * curve.positives / curve.rows
        everything = policy.needless_inspection_cost * (curve.rows - curve.positives) / curve.rows
        best = int(np.argmin(cost))
        if cost[best] < min(never, everything) - _EPS:
            return best, ""
        return None, (
            f"no threshold costs less than never alerting ({never:.4f} a row) or alerting on every row "
            f"({everything:.4f}) at missed_failure={policy.missed_failure_cost:g}, "
            f"needless_inspection={policy.needless_inspection_cost:g}"
        )
    if strategy == "precision_floor":
        floor = float(policy.min_precision or 0.0)
        feasible = np.flatnonzero(curve.precision() >= floor - _EPS)
        if len(feasible):
            # Most recall among the cuts that reach the floor; of equal recall, the highest cut
            # (fewest false alarms). Cuts are highest first, so tp and fp only grow with the index.
            most = curve.tp[feasible].max()
            return int(feasible[np.flatnonzero(curve.tp[feasible] == most)[0]]), ""
        return None, f"no threshold reaches precision {floor:.4f} (best {float(curve.precision().max()):.4f})"
    if strategy == "alert_budget":
        bound, what = _budget_bound(curve, policy, p, days, entities, budget)
        feasible = np.flatnonzero(curve.scores > bound)
        if len(feasible):
            return int(feasible[-1]), ""
        return None, f"no threshold keeps to {what} with at least one alert (ties at the top risk)"
    raise DataValidationError(
        f"decision.strategy {strategy!r} is not one of f1, cost, precision_floor, alert_budget"
    )


def _budget_bound(
    curve: _Curve, policy: DecisionPolicy, p: np.ndarray, days: Any, entities: Any, budget: dict[str, Any]
) -> tuple[float, str]:
    """The highest risk that must NOT alert for the budget to hold (cuts above it fit the budget)."""
    if policy.alerts_per_day is not None and days is not None:
        import pandas as pd

        k = int(policy.alerts_per_day)
        frame = pd.DataFrame({"day": np.asarray(days), "p": p})
        if entities is not None:
            frame["entity"] = np.asarray(entities)
            frame = frame.groupby(["day", "entity"], sort=False, dropna=False)["p"].max().reset_index()
        frame = frame.sort_values("p", ascending=False, kind="stable")
        rank = frame.groupby("day", sort=False, dropna=False).cumcount()
        over = frame.loc[rank == k, "p"]  # each day's (k+1)-th riskiest row (asset)
        budget.update(per_day=k, days=int(frame["day"].nunique()))
        return (float(over.max()) if len(over) else -math.inf), f"{k} alerts a day"
    share = policy.alert_share
    if policy.alerts_per_day is not None and share is not None:
        budget["per_day_skipped"] = "the batch has no time column: the share of the rows applies"
    if share is None:
        raise ThresholdError(
            "decision.alert_budget.per_day needs the rows' time (the batch's time column) and this batch "
            "has none; give decision.alert_budget.share (a share of the fleet) for batches without time"
        )
    allowed = int(math.floor(share * curve.rows + _EPS))
    budget.update(share=float(share), allowed=allowed)
    ordered = np.sort(p)[::-1]
    bound = float(ordered[allowed]) if allowed < len(ordered) else -math.inf
    return bound, f"{allowed} alerts ({share:.2%} of {curve.rows} rows)"


def _met_note(policy: DecisionPolicy, budget: Mapping[str, Any]) -> str:
    return {
        "f1": "the highest F1 on the validation rows",
        "cost": (
            f"the lowest expected cost (missed failure {policy.missed_failure_cost:g}, needless "
            f"inspection {policy.needless_inspection_cost:g})"
        ),
        "precision_floor": f"the most recall with precision ≥ {policy.min_precision}",
        "alert_budget": (
            f"the most recall within {budget['per_day']} alerts a day"
            if "per_day" in budget
            else f"the most recall within {budget.get('share', 0):.2%} of the rows alerted"
        ),
    }[policy.strategy]


def _choice(
    threshold: float,
    policy: DecisionPolicy,
    y: np.ndarray,
    p: np.ndarray,
    chosen_by: str,
    met: bool,
    why: str,
    budget: dict[str, Any],
) -> ThresholdChoice:
    threshold = float(min(max(threshold, THRESHOLD_MIN), THRESHOLD_MAX))
    at = metrics_at(y, p, threshold, policy.costs)
    note = f"threshold {threshold:.4f}: {why}" if met else f"{why}: threshold {threshold:.4f}"
    if budget.get("per_day_skipped"):
        note += f" ({budget['per_day_skipped']})"
    return {
        "threshold": threshold,
        "strategy": policy.strategy,
        "chosen_by": chosen_by,
        "met": met,
        "note": note,
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "alerts": int(at["alerts"]),
        "precision": at["precision"],
        "recall": at["recall"],
        "f1": at["f1"],
        "expected_cost": at["expected_cost"],
        "costs": policy.costs,
        "budget": budget,
    }


def valid_threshold(value: Any) -> float | None:
    """``value`` as a threshold if it is a number strictly inside (0, 1), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and 0.0 < number < 1.0 else None
