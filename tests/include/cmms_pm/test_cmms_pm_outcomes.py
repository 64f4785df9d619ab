"""Outcomes on a synthetic fleet whose truth is known: which assets failed when, which were alerted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmms_pm.exceptions import OutcomeLogError
from cmms_pm.outcomes import failure_log, measure, realized_over_window, retrain_key, retrain_reason

START = pd.Timestamp("2026-03-01T03:00:00Z")
HORIZON = 48.0


def _fleet(days: int = 10, units: int = 40, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Daily predictions of ``units`` assets (v1 the first half of the days, v2 the rest) and a log
    of failures; v1 alerts with a noisy view of the truth, v2 alerts at random."""
    rng = np.random.default_rng(seed)
    failures = []
    for unit in range(units):
        for _ in range(rng.integers(0, 3)):
            failures.append(
                (f"EQ-{unit:03d}", START + pd.Timedelta(hours=float(rng.uniform(0, 24 * (days + 1)))))
            )
    log = pd.DataFrame(failures, columns=["asset", "failed_at"])
    rows = []
    for day in range(days):
        at = START + pd.Timedelta(days=day)
        version = "1" if day < days // 2 else "2"
        for unit in range(units):
            asset = f"EQ-{unit:03d}"
            soon = any(a == asset and at < t <= at + pd.Timedelta(hours=HORIZON) for a, t in failures)
            alert = (soon != (rng.uniform() < 0.1)) if version == "1" else bool(rng.uniform() < 0.3)
            rows.append((asset, at, alert, version, 0.4 if version == "1" else 0.6))
    predictions = pd.DataFrame(
        rows, columns=["equipment_id", "scored_at", "at_risk", "model_version", "decision_threshold"]
    )
    return predictions, log


def _truth(predictions: pd.DataFrame, log: pd.DataFrame, known: pd.Timestamp) -> dict:
    """The brute-force answer: every matured row checked against every failure, one by one."""
    out: dict = {}
    events = list(zip(log["asset"], log["failed_at"], strict=True))
    for row in predictions.itertuples():
        if row.scored_at + pd.Timedelta(hours=HORIZON) > known:
            continue
        ahead = sorted(t for a, t in events if a == row.equipment_id and row.scored_at < t)
        failed = bool(ahead) and ahead[0] <= row.scored_at + pd.Timedelta(hours=HORIZON)
        cell = out.setdefault((row.model_version, row.scored_at.strftime("%Y-%m-%d")), [0, 0, 0, 0, []])
        cell[
            {(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}[(row.at_risk, failed)]
        ] += 1
        if row.at_risk and failed:
            cell[4].append((ahead[0] - row.scored_at).total_seconds() / 3600)
    return out


def test_realized_counts_rates_and_lead_times_equal_the_brute_force_truth():
    predictions, raw = _fleet()
    log = failure_log(raw, entity_column="asset", time_column="failed_at")
    report = measure(predictions, log, entity_column="equipment_id", horizon_hours=HORIZON, now="2030-01-01")
    known = raw["failed_at"].max()
    truth = _truth(predictions, raw, known)
    seen = {}
    for version in report["versions"]:
        for day in version["days"]:
            tp, fp, fn, tn, leads = truth[(version["version"], day["day"])]
            assert (day["tp"], day["fp"], day["fn"], day["tn"]) == (tp, fp, fn, tn), day
            assert day["alerts"] == tp + fp and day["predictions"] == tp + fp + fn + tn
            assert day["precision"] == (pytest.approx(tp / (tp + fp)) if tp + fp else None)
            assert day["recall"] == (pytest.approx(tp / (tp + fn)) if tp + fn else None)
            assert day["lead_time_hours_median"] == (
                pytest.approx(np.median(leads), abs=1e-3) if leads else None
            )
            seen[(version["version"], day["day"])] = day
    assert set(seen) == set(truth)  # every matured day, nothing else
    v1, v2 = report["versions"]
    assert (v1["threshold"], v2["threshold"]) == (0.4, 0.6)
    # v1 sees the truth through 10% noise, v2 alerts at random: the realized numbers say so.
    assert v1["totals"]["f1"] > 0.6 > 0.4 > v2["totals"]["f1"]
    # Predictions younger than the horizon before the newest failure are pending, not misses.
    young = int((predictions["scored_at"] + pd.Timedelta(hours=HORIZON) > known).sum())
    assert v1["pending"] + v2["pending"] == young > 0
    assert v1["matured"] + v2["matured"] + young == len(predictions)


def test_the_horizon_and_maturity_boundaries():
    at = START
    predictions = pd.DataFrame(
        {
            "equipment_id": ["A", "B", "C", "D"],
            "scored_at": [at] * 4,
            "at_risk": [True, True, False, True],
            "model_version": ["3"] * 4,
        }
    )
    log = pd.DataFrame(
        {
            "entity": ["A", "B", "C", "D"],
            # A fails exactly at the horizon (counted), B exactly at scoring time (not after it:
            # before the prediction), C one second past the horizon (not counted), D 30 h later.
            "failure_time": [
                at + pd.Timedelta(hours=48),
                at,
                at + pd.Timedelta(hours=48, seconds=1),
                at + pd.Timedelta(hours=30),
            ],
        }
    )
    report = measure(predictions, log, entity_column="equipment_id", horizon_hours=48, now="2026-04-01")
    (version,) = report["versions"]
    day = version["days"][0]
    assert (day["tp"], day["fp"], day["fn"], day["tn"]) == (2, 1, 0, 1)
    assert day["failures_caught"] == 2 and day["lead_time_hours_median"] == pytest.approx(39.0)
    assert version["threshold"] is None  # predictions from before decision_threshold was stored
    # Known only up to 47 h after scoring: nothing has matured, so nothing is counted.
    early = measure(
        predictions, log, entity_column="equipment_id", horizon_hours=48, now="2026-04-01",
        known_until=at + pd.Timedelta(hours=47),
    )  # fmt: skip
    assert early["versions"][0]["days"] == [] and early["versions"][0]["pending"] == 4


def test_future_failures_and_unknown_assets_are_reported_not_fatal():
    predictions, raw = _fleet(days=4, units=10)
    raw = pd.concat(
        [
            raw,
            pd.DataFrame(
                {
                    "asset": ["EQ-001", "NOT-IN-FLEET", None],
                    "failed_at": ["2031-01-01", "2026-03-02", "2026-03-02"],
                }
            ),
        ],
        ignore_index=True,
    )
    raw.loc[len(raw)] = ["EQ-002", "not a time"]
    log = failure_log(raw, entity_column="asset", time_column="failed_at")
    report = measure(predictions, log, entity_column="equipment_id", horizon_hours=HORIZON, now="2026-03-20")
    assert report["future"]["count"] == 1 and report["future"]["listed"][0]["entity"] == "EQ-001"
    assert report["unknown_assets"] == {
        "count": 1, "listed": [{"entity": "NOT-IN-FLEET", "failure_time": "2026-03-02T00:00:00+00:00"}],
    }  # fmt: skip
    assert report["unreadable"] == 2
    # The future failure did not stretch the known horizon: it is the newest real failure.
    assert report["known_until"] == pd.Timestamp(raw["failed_at"].iloc[:-4].max()).isoformat()


def test_epoch_seconds_from_a_time_series_failure_log_are_read_as_utc():
    events = [("EQ-1", int(pd.Timestamp("2026-03-02T10:00Z").timestamp()), "bearing")]  # i18-ts's tuples
    log = failure_log(pd.DataFrame(events, columns=["entity", "t", "component"]), entity_column="entity",
                      time_column="t", component_column="component")  # fmt: skip
    assert (
        log["failure_time"].iloc[0] == pd.Timestamp("2026-03-02T10:00Z")
        and log["component"].iloc[0] == "bearing"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, f: (p.drop(columns="at_risk"), f), "at_risk"),
        (lambda p, f: (p, f.drop(columns="failure_time")), "failure_time"),
        (lambda p, f: (p.assign(scored_at="yesterday-ish"), f), "scored_at"),
        # A version is later put into MLflow search filters: only registry version numbers pass.
        (lambda p, f: (p.assign(model_version="1' or tags.x = '1"), f), "model_version"),
    ],
)
def test_frames_that_cannot_be_matched_are_a_typed_error_naming_the_column(change, message):
    predictions, raw = _fleet(days=2, units=3)
    log = failure_log(raw, entity_column="asset", time_column="failed_at")
    predictions, log = change(predictions, log)
    with pytest.raises(OutcomeLogError, match=message):
        measure(predictions, log, entity_column="equipment_id", horizon_hours=HORIZON, now="2030-01-01")
    with pytest.raises(OutcomeLogError, match="horizon_hours"):
        measure(predictions, log, entity_column="equipment_id", horizon_hours=0, now="2030-01-01")
    with pytest.raises(OutcomeLogError, match="not found"):
        failure_log(raw, entity_column="asset_id", time_column="failed_at")


def test_a_realized_drop_below_the_floor_gives_a_reason_and_too_few_failures_give_none():
    predictions, raw = _fleet()
    log = failure_log(raw, entity_column="asset", time_column="failed_at")
    report = measure(predictions, log, entity_column="equipment_id", horizon_hours=HORIZON, now="2030-01-01")
    v2 = report["versions"][1]
    pooled = realized_over_window(v2, window_days=3)
    assert pooled is not None and pooled["f1"] < 0.5
    newest = [d for d in v2["days"] if d["day"] >= v2["days"][-3]["day"]]
    assert (pooled["tp"], pooled["fn"]) == (sum(d["tp"] for d in newest), sum(d["fn"] for d in newest))
    leads = [d["lead_time_hours_median"] for d in newest if d["lead_time_hours_median"] is not None]
    assert pooled["lead_time_hours_median"] == pytest.approx(float(np.median(leads)), abs=1e-3)
    reason = retrain_reason(report, version="2", window_days=3, metric="f1", floor=0.5)
    assert reason is not None and "realized f1" in reason and "v2" in reason and "floor 0.5" in reason
    assert retrain_reason(report, version="1", window_days=3, metric="recall", floor=0.5) is None
    assert (
        retrain_reason(report, version="2", window_days=3, metric="f1", floor=0.5, min_failures=10_000)
        is None
    )
    assert retrain_reason(report, version="9", window_days=3, metric="f1", floor=0.5) is None
    with pytest.raises(OutcomeLogError, match="realized metric"):
        retrain_reason(report, version="2", window_days=3, metric="roc_auc", floor=0.5)
    key = retrain_key("pm", "2026-03-10")
    assert key.isalnum() and key == retrain_key("pm", "2026-03-10")  # a history key: one per spec and day
    assert key not in (retrain_key("pm", "2026-03-11"), retrain_key("pm2", "2026-03-10"))


def _spec_with(outcomes):
    import copy

    import yaml

    from cmms_pm.spec import PROJECT_DIR, build_spec

    raw = yaml.safe_load((PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml").read_text())
    raw = copy.deepcopy(raw)
    if outcomes is not None:
        raw["outcomes"] = outcomes
    return raw, build_spec


def test_the_outcomes_section_is_optional_and_filled_with_its_defaults():
    raw, build = _spec_with(None)
    assert build(raw).outcomes is None  # without it: no outcomes DAG, training on its cron only
    raw, build = _spec_with(
        {
            "source": {"kind": "sql", "conn_id": "cmms", "table": "failures"},
            "entity_column": "asset_id",
            "time_column": "failed_at",
            "floor": {"value": 0.4},
        }
    )
    spec = build(raw)
    assert spec.outcomes["horizon_hours"] == 168 and spec.outcomes["window_days"] == 14
    assert spec.outcomes["floor"] == {"value": 0.4, "metric": "f1", "min_failures": 5}
    assert spec.outcomes_dag_id == "predictive_maintenance_outcomes"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"horizon_hours": 0}, "outcomes.horizon_hours"),
        ({"floor": {"metric": "roc_auc", "value": 0.5}}, "outcomes.floor.metric"),
        ({"floor": {"value": 1.5}}, "outcomes.floor.value"),
        ({"source": {"kind": "synthetic"}}, "outcomes.source"),
        ({"time_column": "asset_id"}, "outcomes.time_column: must differ"),
        ({"window_days": 0}, "outcomes.window_days"),
    ],
)
def test_a_bad_outcomes_section_is_refused_naming_the_field(change, message):
    from cmms_pm.exceptions import SpecError

    outcomes = {
        "source": {"kind": "file", "path": "incoming/failures.csv"},
        "entity_column": "asset_id",
        "time_column": "failed_at",
        **change,
    }
    raw, build = _spec_with(outcomes)
    with pytest.raises(SpecError, match=message):
        build(raw)


def test_outcomes_need_an_id_column_to_match_failures_to_predictions():
    from cmms_pm.exceptions import SpecError

    raw, build = _spec_with(
        {"source": {"kind": "file", "path": "f.csv"}, "entity_column": "a", "time_column": "t"}
    )
    raw["id_columns"] = []
    with pytest.raises(SpecError, match="outcomes: failures are matched"):
        build(raw)
