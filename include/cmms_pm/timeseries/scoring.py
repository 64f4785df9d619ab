"""Scoring a time-series spec: each asset's latest snapshot, built exactly as training built them.

The scoring time ``T`` (the run's ``run_after``) falls between two snapshots; the latest snapshot is
the newest cadence point ``t <= T``, and its features read only rows stamped ``<= t`` with the same
generated SQL as the training batch, so a model sees at scoring what it saw in training. Every
asset gets one row: ``snapshot_time``, ``telemetry_age_hours`` (how old its newest reading is at
``t``), and its flags — ``stale_telemetry`` when that age exceeds the spec's ``stale_after``,
``missing_telemetry`` for an asset (of the assets table or the event logs) with no reading in the
longest window. Stale rows are scored and flagged; missing ones cannot be scored and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cmms_pm.timeseries.build import FEATURES_TABLE, Engine, Sources, build_features, check_sources, iso
from cmms_pm.timeseries.config import SNAPSHOT_TIME, TELEMETRY_AGE, TimeSeriesConfig, duration_text
from cmms_pm.timeseries.engine import DuckDBEngine
from cmms_pm.timeseries.sql import Snapshots, normalized, snapshot_floor

if TYPE_CHECKING:
    import pandas as pd

STALE = "stale_telemetry"
MISSING = "missing_telemetry"


@dataclass
class LatestSnapshots:
    """The rows to score (ids, features, ``telemetry_age_hours``) and the assets that have none."""

    frame: pd.DataFrame
    snapshot_time: str
    missing: list[str] = field(default_factory=list)
    stale_after_hours: float = 0.0


def latest_snapshots(
    config: TimeSeriesConfig, engine: Engine, sources: Sources, *, local: DuckDBEngine, scored_at: int
) -> LatestSnapshots:
    """Each asset's snapshot at the newest cadence point at or before ``scored_at`` (epoch seconds)."""
    t = snapshot_floor(scored_at, config.cadence)
    check_sources(config, engine, sources, as_of=t, read_from=t - config.lookback, require_readings=False)
    build_features(config, engine, sources, Snapshots(as_of=t, start=t, end=t, latest=True), local=local)
    q = local.dialect.ident
    columns = [*config.id_columns, *config.feature_names(), TELEMETRY_AGE]
    frame = (
        local.con.sql(
            f"SELECT {', '.join(q(c) for c in columns if c != SNAPSHOT_TIME)}, "
            f"CAST({q(SNAPSHOT_TIME)} AS TIMESTAMPTZ) AS {q(SNAPSHOT_TIME)} "
            f"FROM {q(FEATURES_TABLE)} ORDER BY 1"
        )
        .to_arrow_table()
        .to_pandas()
    )
    frame = frame[columns]
    known = set(frame[config.entity])
    missing = sorted(known_assets(config, engine, sources, as_of=t) - known)
    return LatestSnapshots(
        frame=frame, snapshot_time=iso(t), missing=missing, stale_after_hours=config.stale_after / 3600
    )


def known_assets(config: TimeSeriesConfig, engine: Engine, sources: Sources, *, as_of: int) -> set[str]:
    """Every asset the spec's tables name up to ``as_of``: the assets table, the event logs."""
    queries = normalized(config, sources.relations, engine.dialect)
    found: set[str] = set()
    for name, query in queries.items():
        if name == "telemetry":
            continue
        where = "" if name == "assets" else f" WHERE t <= {as_of}"
        found |= {row[0] for row in engine.rows(f"SELECT DISTINCT entity FROM ({query}) e{where}")}
    return found - {None}


def telemetry_flags(frame: pd.DataFrame, *, stale_after_hours: float) -> tuple[Any, list[str]]:
    """Per row: whether its telemetry is stale, and the issue text (``stale_telemetry:30h``)."""
    age = frame[TELEMETRY_AGE].to_numpy(dtype="float64")
    stale = age > stale_after_hours
    issues = [f"{STALE}:{value:.0f}h" if flag else "" for value, flag in zip(age, stale, strict=True)]
    return stale, issues


def describe(latest: LatestSnapshots, config: TimeSeriesConfig) -> str:
    stale, _ = telemetry_flags(latest.frame, stale_after_hours=latest.stale_after_hours)
    return (
        f"snapshot {latest.snapshot_time}: {len(latest.frame)} assets with telemetry "
        f"({int(stale.sum())} stale: newest reading older than {duration_text(config.stale_after)}), "
        f"{len(latest.missing)} without any reading in the last {duration_text(config.lookback)}"
    )
