"""Outcomes: were the champion's alerts right? Stored predictions scored against the failures that
later became known (issue 20).

Pure domain code (no Airflow, no MLflow): the caller reads the scoring DAG's stored predictions
(``predictions.parquet``: the asset id, ``scored_at``, ``at_risk``, ``model_version``,
``decision_threshold``) and a failure log as a plain frame ``(entity, failure_time[, component])``,
from a spec's ``outcomes.source`` or a time-series spec's failure events
(:func:`failure_log` normalizes either). Works from the stored predictions only, so a version whose
artifacts were pruned is still measured.

The rules (the label rule of STYLE.md, applied after the fact):

* a prediction made at ``t`` is right about a failure in ``(t, t + horizon]`` of the same asset;
* it has **matured** once ``t + horizon <= known_until`` (the newest outcome time known, by default
  the newest failure in the log); younger predictions are counted as pending, never as misses;
* a failure stamped after ``now`` or of an asset no prediction names is reported (counted, the first
  few listed) and left out, never fatal.

Per version and scoring day (UTC): TP/FP/FN/TN over the rows, precision, recall and F1 at the
threshold the rows were alerted at, alerts raised, failures caught (distinct failures some alert of
that day foresaw) and missed (foreseen by none of that day's rows), and the median lead time in
hours between an alert and the failure it foresaw.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, TypedDict

import pandas as pd

from cmms_pm.exceptions import OutcomeLogError

#: The columns of a normalized failure log (``component`` may be missing).
ENTITY, FAILURE_TIME, COMPONENT = "entity", "failure_time", "component"
#: The prediction columns outcomes read (plus the spec's entity column).
PREDICTION_COLUMNS = ("scored_at", "at_risk", "model_version")
#: How many odd failures a report lists (all are counted).
MAX_LISTED = 20
REALIZED_METRICS = ("f1", "recall")


class Counts(TypedDict):
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None
    f1: float | None
    alerts: int
    failures_caught: int
    failures_missed: int
    lead_time_hours_median: float | None


class DayOutcome(Counts):
    day: str  # YYYY-MM-DD, the scoring day (UTC)
    predictions: int


class VersionOutcome(TypedDict):
    version: str
    threshold: float | None
    first_day: str
    last_day: str
    matured: int
    pending: int
    totals: Counts
    days: list[DayOutcome]


class OddFailures(TypedDict):
    count: int
    listed: list[dict[str, str]]


class OutcomeReport(TypedDict):
    known_until: str | None
    horizon_hours: float
    failures: int  # failures used
    future: OddFailures
    unknown_assets: OddFailures
    unreadable: int  # log rows without an entity or a time
    versions: list[VersionOutcome]


def failure_log(
    frame: pd.DataFrame,
    *,
    entity_column: str,
    time_column: str,
    component_column: str | None = None,
) -> pd.DataFrame:
    """A raw failure log (a file, a SQL table, a time-series spec's failure events) as the frame
    :func:`measure` reads: ``entity`` (text), ``failure_time`` (UTC), ``component`` (text or None).

    Times may be ISO text, datetimes (naive ones are UTC) or epoch seconds. A missing column is an
    :class:`OutcomeLogError`; a row whose time does not parse keeps ``NaT`` (counted as unreadable).
    """
    missing = [c for c in (entity_column, time_column, component_column) if c and c not in frame.columns]
    if missing:
        raise OutcomeLogError(
            f"failure log: column(s) {missing!r} not found (it has {list(frame.columns)[:20]!r})"
        )
    times = frame[time_column]
    if pd.api.types.is_numeric_dtype(times) and not pd.api.types.is_bool_dtype(times):
        parsed = pd.to_datetime(times, unit="s", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(times, utc=True, errors="coerce", format="mixed")
    log = pd.DataFrame(
        {
            ENTITY: frame[entity_column].astype("str").reset_index(drop=True),  # missing stays missing
            FAILURE_TIME: pd.to_datetime(parsed, utc=True).reset_index(drop=True),
        }
    )
    log[COMPONENT] = frame[component_column].astype("object").to_numpy() if component_column else None
    return log


def measure(
    predictions: pd.DataFrame,
    failures: pd.DataFrame,
    *,
    entity_column: str,
    horizon_hours: float,
    now: Any,
    known_until: Any = None,
) -> OutcomeReport:
    """Realized outcomes per version and day of ``predictions`` against ``failures`` (see the module).

    ``failures`` as :func:`failure_log` returns it; ``now``: the measuring run's time (failures after
    it are reported as future); ``known_until``: the newest outcome time known (default: the newest
    usable failure, never after ``now``).
    """
    horizon = _horizon(horizon_hours)
    now_ts = _utc(now, "now")
    rows = _prediction_rows(predictions, entity_column)
    log = _checked_log(failures)
    unreadable = int((log[ENTITY].isna() | log[FAILURE_TIME].isna()).sum())
    log = log[log[ENTITY].notna() & log[FAILURE_TIME].notna()]
    future = log[log[FAILURE_TIME] > now_ts]
    log = log[log[FAILURE_TIME] <= now_ts]
    scored_assets = log[ENTITY].isin(rows[ENTITY].unique())
    unknown = log[~scored_assets]
    log = log[scored_assets]
    if known_until is not None:
        known = min(_utc(known_until, "known_until"), now_ts)
    else:
        known = log[FAILURE_TIME].max() if len(log) else None
    matured = rows[rows["scored_at"] + horizon <= known] if known is not None else rows.iloc[0:0]
    joined = _join(matured, log, horizon)
    versions = []
    for version in sorted(rows["model_version"].unique(), key=_version_key):
        mine = joined[joined["model_version"] == version]
        all_rows = rows[rows["model_version"] == version]
        days = [
            DayOutcome(day=day, predictions=int(len(part)), **_counts(part))
            for day, part in mine.groupby("day", sort=True)
        ]
        versions.append(
            VersionOutcome(
                version=str(version),
                threshold=_threshold(all_rows),
                first_day=str(all_rows["day"].min()),
                last_day=str(all_rows["day"].max()),
                matured=int(len(mine)),
                pending=int(len(all_rows) - len(mine)),
                totals=_counts(mine, earliest_lead=True),
                days=days,
            )
        )
    return OutcomeReport(
        known_until=None if known is None else known.isoformat(),
        horizon_hours=float(horizon_hours),
        failures=int(len(log)),
        future=_odd(future),
        unknown_assets=_odd(unknown),
        unreadable=unreadable,
        versions=versions,
    )


def realized_over_window(version: VersionOutcome, *, window_days: int) -> Counts | None:
    """The version's outcomes pooled over its newest ``window_days`` matured days (the days in
    ``(last - window_days, last]``), or None when nothing of it has matured. Failures caught and
    missed are summed over the days; the lead time is the median of the daily medians."""
    if not version["days"]:
        return None
    last = date.fromisoformat(version["days"][-1]["day"])
    first = (last - timedelta(days=int(window_days) - 1)).isoformat()
    window = [d for d in version["days"] if d["day"] >= first]
    tp, fp, fn, tn = (sum(int(d[k]) for d in window) for k in ("tp", "fp", "fn", "tn"))
    return Counts(
        tp=tp, fp=fp, fn=fn, tn=tn, **_rates(tp, fp, fn),
        alerts=tp + fp,
        failures_caught=sum(d["failures_caught"] for d in window),
        failures_missed=sum(d["failures_missed"] for d in window),
        lead_time_hours_median=_median([d["lead_time_hours_median"] for d in window]),
    )  # fmt: skip


def retrain_reason(
    report: OutcomeReport,
    *,
    version: str,
    window_days: int,
    metric: str,
    floor: float,
    min_failures: int = 1,
) -> str | None:
    """Why ``version`` (the champion) should be retrained, or None: its realized ``metric`` (f1 or
    recall) over the window is below ``floor``, judged only on at least ``min_failures`` failures
    within the window (fewer failures say nothing; no verdict either way)."""
    if metric not in REALIZED_METRICS:
        raise OutcomeLogError(f"realized metric {metric!r} is not one of {list(REALIZED_METRICS)}")
    found = next((v for v in report["versions"] if v["version"] == str(version)), None)
    pooled = realized_over_window(found, window_days=window_days) if found else None
    if found is None or pooled is None or pooled["tp"] + pooled["fn"] < max(1, int(min_failures)):
        return None
    value = (pooled["f1"] if metric == "f1" else pooled["recall"]) or 0.0  # REALIZED_METRICS
    if value >= floor:
        return None
    return (
        f"realized {metric} {value:.3f} of v{version} over the {window_days} day(s) to "
        f"{found['days'][-1]['day']} is below the floor {floor:g} "
        f"({pooled['tp'] + pooled['fn']} failures, {pooled['failures_caught']} caught, "
        f"{pooled['alerts']} alerts)"
    )


def retrain_key(spec_name: str, day: str) -> str:
    """The history key (hex) of a retraining request: one per spec and day, whoever asks twice."""
    from cmms_pm.registry_plan import event_key

    return event_key("retrain", spec_name, day)


def day_index(day: str, first_day: str) -> int:
    """MLflow step of ``day``: days since ``first_day`` (the version's first scoring day)."""
    return (date.fromisoformat(day) - date.fromisoformat(first_day)).days


# --- internals -----------------------------------------------------------------------------------


def _horizon(hours: Any) -> pd.Timedelta:
    try:
        value = float(hours)
    except (TypeError, ValueError):
        raise OutcomeLogError(f"horizon_hours {hours!r} is not a number") from None
    if not 0 < value <= 24 * 366:
        raise OutcomeLogError(f"horizon_hours {hours!r} must be above 0 and at most a year")
    return pd.Timedelta(hours=value)


def _utc(value: Any, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise OutcomeLogError(f"{what} {value!r} is not a time") from None
    if ts is pd.NaT:
        raise OutcomeLogError(f"{what} {value!r} is not a time")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _prediction_rows(predictions: pd.DataFrame, entity_column: str) -> pd.DataFrame:
    needed = [entity_column, *PREDICTION_COLUMNS]
    missing = [c for c in needed if c not in predictions.columns]
    if missing:
        raise OutcomeLogError(
            f"predictions: column(s) {missing!r} not found; stored predictions of the scoring DAG have "
            f"{needed!r} (it has {list(predictions.columns)[:20]!r})"
        )
    scored = pd.to_datetime(predictions["scored_at"], utc=True, errors="coerce", format="mixed")
    if scored.isna().any():
        raise OutcomeLogError(f"predictions: {int(scored.isna().sum())} row(s) have no valid scored_at")
    # Whole columns, never element by element (a year of a large fleet is millions of rows).
    rows = pd.DataFrame(
        {
            ENTITY: predictions[entity_column].astype("str").reset_index(drop=True),
            "scored_at": scored.dt.as_unit("ns").reset_index(drop=True),
            "at_risk": predictions["at_risk"].astype("bool").reset_index(drop=True),
            "model_version": predictions["model_version"].astype("str").reset_index(drop=True),
        }
    )
    odd = ~rows["model_version"].str.fullmatch(r"[1-9][0-9]{0,9}")
    if odd.any():  # registry versions are positive integers; anything else was not written by scoring
        raise OutcomeLogError(
            f"predictions: {int(odd.sum())} row(s) have a model_version that is no registry version, "
            f"e.g. {rows.loc[odd, 'model_version'].iloc[0][:40]!r}"
        )
    rows["threshold"] = (
        pd.to_numeric(predictions["decision_threshold"], errors="coerce").to_numpy()
        if "decision_threshold" in predictions.columns
        else float("nan")
    )
    rows["day"] = rows["scored_at"].dt.strftime("%Y-%m-%d")
    return rows


def _checked_log(failures: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (ENTITY, FAILURE_TIME) if c not in failures.columns]
    if missing:
        raise OutcomeLogError(
            f"failures: column(s) {missing!r} not found; normalize the log with failure_log() first"
        )
    log = pd.DataFrame(
        {
            ENTITY: failures[ENTITY].astype("str").reset_index(drop=True),  # missing stays missing
            FAILURE_TIME: pd.to_datetime(failures[FAILURE_TIME], utc=True, errors="coerce")
            .dt.as_unit("ns")
            .reset_index(drop=True),
        }
    )
    log[COMPONENT] = failures[COMPONENT].to_numpy() if COMPONENT in failures.columns else None
    return log


def _join(rows: pd.DataFrame, log: pd.DataFrame, horizon: pd.Timedelta) -> pd.DataFrame:
    """Each matured row with the first failure of its asset after it (an as-of join, forward, strictly
    later); ``failed`` when that failure is within the horizon."""
    left = rows.sort_values("scored_at", kind="stable").reset_index(drop=True)
    right = log[[ENTITY, FAILURE_TIME]].sort_values(FAILURE_TIME, kind="stable").drop_duplicates()
    right = right.assign(**{FAILURE_TIME: right[FAILURE_TIME].dt.as_unit("ns")})
    left["scored_at"] = left["scored_at"].dt.as_unit("ns")
    joined = pd.merge_asof(
        left,
        right.assign(_at=right[FAILURE_TIME]),
        left_on="scored_at",
        right_on="_at",
        by=ENTITY,
        direction="forward",
        allow_exact_matches=False,
    ).drop(columns="_at")
    joined["failed"] = joined[FAILURE_TIME].notna() & (joined[FAILURE_TIME] <= joined["scored_at"] + horizon)
    joined["lead_hours"] = (joined[FAILURE_TIME] - joined["scored_at"]).dt.total_seconds() / 3600.0
    return joined


def _counts(part: pd.DataFrame, *, earliest_lead: bool = False) -> Counts:
    alert, failed = part["at_risk"], part["failed"]
    tp, fp = int((alert & failed).sum()), int((alert & ~failed).sum())
    fn, tn = int((~alert & failed).sum()), int((~alert & ~failed).sum())
    hits = part[alert & failed]
    caught = set(zip(hits[ENTITY], hits[FAILURE_TIME], strict=True))
    misses = part[~alert & failed]
    missed = set(zip(misses[ENTITY], misses[FAILURE_TIME], strict=True)) - caught
    if earliest_lead and len(hits):
        # A failure foreseen on several days: its lead time is from the first alert.
        leads = hits.groupby([ENTITY, FAILURE_TIME])["lead_hours"].max()
    else:
        leads = hits["lead_hours"]
    return Counts(
        tp=tp, fp=fp, fn=fn, tn=tn, **_rates(tp, fp, fn),
        alerts=tp + fp,
        failures_caught=len(caught),
        failures_missed=len(missed),
        lead_time_hours_median=round(float(leads.median()), 3) if len(leads) else None,
    )  # fmt: skip


class Rates(TypedDict):
    precision: float | None
    recall: float | None
    f1: float | None


def _rates(tp: int, fp: int, fn: int) -> Rates:
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
    }


def _median(values: Sequence[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return round(float(pd.Series(known).median()), 3) if known else None


def _threshold(rows: pd.DataFrame) -> float | None:
    values = rows["threshold"].dropna()
    return float(values.mode().iloc[0]) if len(values) else None


def _odd(frame: pd.DataFrame) -> OddFailures:
    listed = [
        {ENTITY: str(e), FAILURE_TIME: t.isoformat()}
        for e, t in zip(frame[ENTITY].head(MAX_LISTED), frame[FAILURE_TIME].head(MAX_LISTED), strict=True)
    ]
    return OddFailures(count=int(len(frame)), listed=listed)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if str(version).isdigit() else (2**63, str(version))
