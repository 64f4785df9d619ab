"""The typed view of a spec's ``timeseries`` section: tables, durations, feature and label names.

The schema lives in :mod:`cmms_pm.spec` (``TIMESERIES_SCHEMA``); this module turns a validated section
into a :class:`TimeSeriesConfig`, checks what JSON Schema cannot (a horizon shorter than the cadence,
a window longer than the training window, names used twice), and names every column the feature
build writes, so the feature table's columns are a pure function of the spec: the trigger form, the
contract and the scoring DAG know them before any data is read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, TypedDict

#: ``3h``, ``24h``, ``7d``, ``30m``: a positive whole number of minutes, hours or days.
DURATION_PATTERN = r"^(?![\s\S]*\n)[1-9][0-9]{0,5}[mhd]$"
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
#: Aggregates of a signal over a window. ``delta`` is the window's mean minus the longest window's
#: (a deviation from the asset's own recent baseline; not for the longest window itself); ``last``
#: is per signal: the newest reading at or before the snapshot.
AGGREGATES = ("mean", "std", "min", "max", "slope", "delta", "last")
#: Event logs whose "time since the last one" can be a feature.
SINCE_KINDS = ("maintenance", "failures")
#: The id columns of a time-series feature table besides the entity.
SNAPSHOT_TIME = "snapshot_time"
#: Scoring columns (not features): how old the asset's newest reading is at its snapshot.
TELEMETRY_AGE = "telemetry_age_hours"


def duration_seconds(text: str) -> int:
    """``"24h"`` → 86400. Raises ``ValueError`` for anything but :data:`DURATION_PATTERN`."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 30m, 3h or 7d")
    return int(text[:-1]) * _UNIT_SECONDS[text[-1]]


def duration_text(seconds: int) -> str:
    """The shortest spelling of ``seconds`` in days, hours or minutes (``172800`` → ``"2d"``)."""
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Table:
    """One source table: where it is, and its entity and time columns."""

    name: str  # telemetry | failures | maintenance | alarms | assets
    source: Mapping[str, Any]
    entity: str
    time: str | None  # None for assets (static)

    @property
    def time_column(self) -> str:
        """The time column of a timed table (every table but ``assets``)."""
        if self.time is None:
            raise ValueError(f"timeseries.{self.name} has no time column")
        return self.time


@dataclass(frozen=True)
class TimeSeriesConfig:
    """A validated ``timeseries`` section with every default resolved."""

    entity: str
    time: str
    telemetry: Table
    signals: tuple[str, ...]
    failures: Table
    failure_component: str | None
    components: tuple[str, ...]
    maintenance: Table | None
    maintenance_component: str | None
    maintenance_components: tuple[str, ...]
    alarms: Table | None
    alarm_code: str | None
    alarm_codes: tuple[str, ...]
    assets: Table | None
    asset_categorical: tuple[str, ...]
    asset_numeric: tuple[str, ...]
    install_date: str | None
    windows: tuple[int, ...]  # seconds, ascending
    aggregates: tuple[str, ...]
    alarm_windows: tuple[int, ...]
    time_since: tuple[str, ...]
    time_since_cap: int
    horizon: int
    horizon_text: str
    label_components: tuple[str, ...]
    cadence: int
    training_window: int | None
    stale_after: int
    spellings: Mapping[int, str] = field(default_factory=dict)  # seconds -> the spec's spelling

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> TimeSeriesConfig:
        """The view of a section the schema has validated (defaults filled)."""
        entity, time = section["entity"], section["time"]

        def table(name: str, *, timed: bool = True) -> Table | None:
            part = section.get(name)
            if part is None:
                return None
            return Table(
                name=name,
                source=part["source"],
                entity=part.get("entity", entity),
                time=part.get("time", time) if timed else None,
            )

        def required(name: str) -> Table:  # telemetry and failures: the schema requires them
            found = table(name)
            if found is None:
                raise KeyError(name)
            return found

        features, label = section["features"], section["label"]
        failures, maintenance = section["failures"], section.get("maintenance") or {}
        alarms, assets = section.get("alarms") or {}, section.get("assets") or {}
        cadence = duration_seconds(section["cadence"])
        training = section.get("training_window")
        stale = section.get("stale_after")
        spellings = {
            duration_seconds(text): text
            for text in reversed([*features["windows"], *features["alarm_windows"]])
        }
        return cls(
            entity=entity,
            time=time,
            telemetry=required("telemetry"),
            signals=tuple(section["telemetry"]["signals"]),
            failures=required("failures"),
            failure_component=failures.get("component_column"),
            components=tuple(failures.get("components", ())),
            maintenance=table("maintenance"),
            maintenance_component=maintenance.get("component_column"),
            maintenance_components=tuple(maintenance.get("components", ())),
            alarms=table("alarms"),
            alarm_code=alarms.get("code_column"),
            alarm_codes=tuple(alarms.get("codes", ())),
            assets=table("assets", timed=False),
            asset_categorical=tuple(assets.get("categorical", ())),
            asset_numeric=tuple(assets.get("numeric", ())),
            install_date=assets.get("install_date"),
            windows=tuple(sorted({duration_seconds(w) for w in features["windows"]})),
            aggregates=tuple(a for a in AGGREGATES if a in features["aggregates"]),
            alarm_windows=tuple(sorted({duration_seconds(w) for w in features["alarm_windows"]})),
            time_since=tuple(k for k in SINCE_KINDS if k in features["time_since"]),
            time_since_cap=duration_seconds(features["time_since_cap"]),
            horizon=duration_seconds(label["horizon"]),
            horizon_text=label["horizon"],
            label_components=tuple(label.get("components", ())),
            cadence=cadence,
            training_window=duration_seconds(training) if training else None,
            stale_after=duration_seconds(stale) if stale else cadence,
            spellings=spellings,
        )

    # --- derived sizes ------------------------------------------------------------------------

    @property
    def resolution(self) -> int:
        """Seconds per bucket: the greatest common divisor of the cadence, every window and the
        horizon, so every window and the label's (t, t + H] are whole buckets ending at a snapshot."""
        return reduce(math.gcd, (self.cadence, self.horizon, *self.windows, *self.alarm_windows))

    @property
    def lookback(self) -> int:
        """Seconds of readings a snapshot reads before itself: the longest window."""
        return max((*self.windows, *self.alarm_windows, self.cadence))

    @property
    def horizon_hours(self) -> float:
        return self.horizon / 3600

    # --- names --------------------------------------------------------------------------------

    def window_name(self, seconds: int) -> str:
        """A window as the spec spells it (``24h`` stays ``24h``)."""
        return self.spellings.get(seconds) or duration_text(seconds)

    @property
    def label_column(self) -> str:
        """``failure_within_48h``: 1 if a failure (of the label's components) follows within H."""
        return f"failure_within_{self.horizon_text}"

    def signal_features(self) -> list[str]:
        names = []
        for signal in self.signals:
            for window in self.windows:
                for aggregate in self.aggregates:
                    if aggregate == "delta" and window == self.windows[-1]:
                        continue
                    if aggregate != "last":
                        names.append(f"{signal}_{aggregate}_{self.window_name(window)}")
            if "last" in self.aggregates:
                names.append(f"{signal}_last")
        return names

    def alarm_features(self) -> list[str]:
        return (
            [
                f"alarms_{code}_{self.window_name(window)}"
                for window in self.alarm_windows
                for code in self.alarm_codes
            ]
            if self.alarms is not None
            else []
        )

    def since_features(self) -> list[str]:
        names = []
        if "maintenance" in self.time_since and self.maintenance is not None:
            names.append("hours_since_maintenance")
            names += [f"hours_since_maintenance_{c}" for c in self.maintenance_components]
        if "failures" in self.time_since:
            names.append("hours_since_failure")
            names += [f"hours_since_failure_{c}" for c in self.components]
        return names

    def age_features(self) -> list[str]:
        return ["asset_age_days"] if self.assets is not None and self.install_date else []

    def feature_kinds(self) -> dict[str, list[str]]:
        """The feature table's features by kind, in the order the build writes them."""
        return {
            "categorical": list(self.asset_categorical),
            "numeric": [
                *self.signal_features(),
                *self.since_features(),
                *self.age_features(),
                *self.asset_numeric,
            ],
            "integer": self.alarm_features(),
        }

    def feature_names(self) -> list[str]:
        kinds = self.feature_kinds()
        return [*kinds["categorical"], *kinds["numeric"], *kinds["integer"]]

    @property
    def id_columns(self) -> tuple[str, str]:
        """The entity and the snapshot time: they travel with every row, never as features."""
        return (self.entity, SNAPSHOT_TIME)

    def tables(self) -> list[Table]:
        return [t for t in (self.telemetry, self.failures, self.maintenance, self.alarms, self.assets) if t]

    # --- checks JSON Schema cannot make ----------------------------------------------------------

    def problems(self) -> list[str]:
        """Cross-field problems of the section, each ``timeseries.<field>: why``."""
        found = []
        if self.horizon < self.cadence:
            found.append(
                f"timeseries.label.horizon: {duration_text(self.horizon)} is shorter than the cadence "
                f"{duration_text(self.cadence)}: most failures would fall between two snapshots"
            )
        if self.training_window is not None:
            for window in (*self.windows, *self.alarm_windows, self.horizon):
                if window >= self.training_window:
                    found.append(
                        f"timeseries.training_window: {duration_text(self.training_window)} is not longer "
                        f"than the window/horizon {duration_text(window)}; no snapshot would have a full "
                        "window and a mature label"
                    )
                    break
        if self.label_components and not self.failure_component:
            found.append(
                "timeseries.label.components: the failures table has no component_column to filter by"
            )
        unknown = sorted(set(self.label_components) - set(self.components))
        if unknown:
            found.append(f"timeseries.label.components: {unknown} are not in timeseries.failures.components")
        if self.components and not self.failure_component:
            found.append("timeseries.failures.components: set component_column to say where they are")
        if self.maintenance_components and not self.maintenance_component:
            found.append("timeseries.maintenance.components: set component_column to say where they are")
        if self.alarms is not None and not self.alarm_codes:
            found.append(
                "timeseries.alarms.codes: list the alarm codes to count (make new-model infers them)"
            )
        if self.install_date and self.assets is None:
            found.append("timeseries.assets.install_date: needs an assets table")
        if self.stale_after < self.resolution:
            found.append(
                f"timeseries.stale_after: {duration_text(self.stale_after)} is shorter than the bucket "
                f"{duration_text(self.resolution)} the features are computed on"
            )
        reserved = {self.entity, SNAPSHOT_TIME, TELEMETRY_AGE, self.label_column}
        seen: dict[str, str] = {}
        for name in self.feature_names():
            if name in reserved:
                found.append(f"timeseries: feature {name!r} clashes with an id or label column")
            if name in seen:
                found.append(f"timeseries: feature name {name!r} is produced twice")
            seen[name] = name
        for table in self.tables():
            columns = [table.entity, *([table.time] if table.time else [])]
            if len(set(columns)) != len(columns):
                found.append(f"timeseries.{table.name}: entity and time are the same column {columns[0]!r}")
        if len(self.signals) != len(set(self.signals)):
            found.append("timeseries.telemetry.signals: a signal is listed twice")
        if {self.entity, self.time} & set(self.signals):
            found.append("timeseries.telemetry.signals: the entity or time column cannot be a signal")
        return found


class FeatureColumns(TypedDict):
    """The feature table's columns by kind: ``FeatureSpec``'s keyword arguments."""

    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    integer: tuple[str, ...]


def feature_spec_kwargs(config: TimeSeriesConfig) -> FeatureColumns:
    """``FeatureSpec`` keyword arguments of the feature table (``cmms_pm.spec`` builds it)."""
    kinds = config.feature_kinds()
    return {
        "categorical": tuple(kinds["categorical"]),
        "numeric": tuple(kinds["numeric"]),
        "integer": tuple(kinds["integer"]),
    }
