"""Raw fleet data shaped like a CMMS export: telemetry, failures, maintenance, alarms, assets.

What a maintenance system holds, not a feature table: hourly readings per asset, and event logs.
The physics is small but has what makes forecasting hard on real fleets:

* each asset has four **components** whose wear grows at a rate set by its model, its age and
  chance; wear shows in one signal each (comp1 → temperature up, comp2 → vibration up, comp3 →
  pressure down, comp4 → rotation down) and raises the alarm rate of one code each (E1..E4; E5 is
  noise);
* a component **fails** with a hazard that climbs with its wear (degradation precedes failures, by
  days, with a strength that varies from episode to episode); a failure is followed by
  **corrective** maintenance a few hours later, and **preventive** maintenance on a schedule per
  model: both reset the component's wear;
* every asset has sensor **offsets** of its own, and the whole fleet drifts (seasons, a slow
  recalibration): a model that saw the neighbouring hours of the same asset (a random split) scores
  visibly better than one judged on a later period (a time split), as on real fleets.

Seeded: :func:`generate_fleet` with the same arguments gives the same frames (``seed`` defaults to
the interval's, :func:`cmms_pm.data.interval_seed`). :func:`write_fleet` writes them as files the
time-series readers (and ``make new-model TELEMETRY=...``) take; the benchmarks write 100M readings
through :func:`write_telemetry_chunks` without holding them in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ENTITY = "asset_id"
TIME = "timestamp"
SIGNALS = ("temperature", "vibration", "pressure", "rotation")
COMPONENTS = ("comp1", "comp2", "comp3", "comp4")
ALARM_CODES = ("E1", "E2", "E3", "E4", "E5")
MODELS = ("M1", "M2", "M3", "M4")

_MODEL_SHARE = np.array([0.35, 0.3, 0.2, 0.15])
# Baselines per model: temperature °C, vibration mm/s, pressure bar, rotation rpm.
_BASE = np.array(
    [[62.0, 2.2, 8.0, 1480.0], [70.0, 2.8, 11.0, 1750.0], [58.0, 1.9, 6.0, 1450.0], [75.0, 3.4, 14.0, 2950.0]]
)
_NOISE = np.array([1.6, 0.25, 0.35, 18.0])
# How strongly each component's wear moves its signal (same order as SIGNALS / COMPONENTS).
_WEAR_EFFECT = np.array([9.0, 2.6, -3.5, -140.0])
# Wear per day at age 0, per model and component; age adds 4 % a year.
_WEAR_PER_DAY = np.array(
    [
        [0.015, 0.012, 0.010, 0.011],
        [0.018, 0.015, 0.012, 0.010],
        [0.012, 0.016, 0.014, 0.012],
        [0.020, 0.014, 0.011, 0.015],
    ]
)
_PM_INTERVAL_DAYS = np.array([75.0, 60.0, 90.0, 50.0])
_CORRECTIVE_DELAY_HOURS = (2, 10)
_PRECURSOR_HOURS = (48, 121)
_PRECURSOR_STRENGTH = (2.0, 8.0)  # times the signal's noise, at the failure


@dataclass(frozen=True)
class Fleet:
    """The five tables of a fleet, each sorted by asset then time (assets by id)."""

    telemetry: pd.DataFrame  # asset_id, timestamp, temperature, vibration, pressure, rotation
    failures: pd.DataFrame  # asset_id, timestamp, component
    maintenance: pd.DataFrame  # asset_id, timestamp, component, kind (preventive | corrective)
    alarms: pd.DataFrame  # asset_id, timestamp, code
    assets: pd.DataFrame  # asset_id, model, install_date, site


def fleet_seed(start: str, end: str) -> int:
    """The seed of a fleet for an interval: the batches' own (``cmms_pm.data.interval_seed``)."""
    from cmms_pm.data import interval_seed

    return interval_seed(start, end)


def generate_fleet(
    n_assets: int,
    start: str,
    end: str,
    *,
    seed: int | None = None,
    dropout: float = 0.002,
    silent_assets: int = 0,
    first_asset: int = 1,
) -> Fleet:
    """Hourly telemetry of ``n_assets`` assets from ``start`` (inclusive) to ``end`` (exclusive), UTC,
    with their failures, maintenance, alarms and attributes.

    ``dropout`` is the share of readings lost in transit; the last ``silent_assets`` assets stop
    reporting two days before ``end`` (stale telemetry). Asset ids run from ``first_asset``.
    """
    if n_assets < 1:
        raise ValueError(f"n_assets must be at least 1, got {n_assets}")
    hours = pd.date_range(
        pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"), freq="h", inclusive="left"
    )
    if len(hours) < 24:
        raise ValueError(f"the interval {start} .. {end} holds less than a day of hourly readings")
    rng = np.random.default_rng(fleet_seed(start, end) if seed is None else seed)
    ids = np.array([f"A{i:05d}" for i in range(first_asset, first_asset + n_assets)])
    assets = _assets(ids, hours[0], rng)
    model = assets["model"].map({name: i for i, name in enumerate(MODELS)}).to_numpy()
    age_years = ((hours[0] - assets["install_date"]).dt.days.to_numpy() / 365.25).clip(0.1, None)
    wear, events = _simulate(len(hours), model, age_years, rng)
    telemetry = _telemetry(ids, hours, model, wear, events, rng, dropout=dropout)
    del wear
    if silent_assets:
        cutoff = hours[-1] - pd.Timedelta(hours=48)
        silent = telemetry[ENTITY].isin(ids[-silent_assets:]) & (telemetry[TIME] > cutoff)
        telemetry = telemetry[~silent].reset_index(drop=True)
    failures, maintenance, alarms = _event_tables(ids, hours, events, rng)
    assets = assets.assign(install_date=assets["install_date"].dt.strftime("%Y-%m-%d"))
    return Fleet(
        telemetry=telemetry, failures=failures, maintenance=maintenance, alarms=alarms, assets=assets
    )


def _assets(ids: np.ndarray, first_hour: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    n = len(ids)
    model = rng.choice(len(MODELS), size=n, p=_MODEL_SHARE)
    age_days = rng.integers(200, 15 * 365, size=n)
    install = (first_hour.tz_convert(None).normalize() - pd.to_timedelta(age_days, unit="D")).tz_localize(
        "UTC"
    )
    site = rng.choice(["north", "south", "east"], size=n)
    return pd.DataFrame(
        {ENTITY: ids, "model": np.array(MODELS)[model], "install_date": install, "site": site}
    )


@dataclass
class _Events:
    failures: list[tuple[int, int, int]]  # (hour, asset, component)
    maintenance: list[tuple[int, int, int, int]]  # (hour, asset, component, 0 preventive / 1 corrective)
    alarms: list[tuple[int, int, int]]  # (hour, asset, code)


def _simulate(
    n_hours: int, model: np.ndarray, age_years: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, _Events]:
    """Wear per hour, asset and component (float32), and the events it caused."""
    n = len(model)
    shape = (n, len(COMPONENTS))
    asset_factor = rng.lognormal(0.0, 0.25, size=shape)
    rate = _WEAR_PER_DAY[model] * (1.0 + 0.04 * age_years)[:, None] * asset_factor / 24.0
    # Failure threshold: a component fails around wear 1, some earlier, some later.
    threshold = rng.normal(1.0, 0.15, size=shape).clip(0.55, 1.6)
    wear = rng.uniform(0.0, 0.6, size=shape)
    interval_h = _PM_INTERVAL_DAYS[None, :] * 24.0 * rng.uniform(0.9, 1.1, size=shape)
    next_pm = rng.uniform(0.0, 1.0, size=shape) * interval_h
    corrective_at = np.full(shape, -1, dtype=np.int64)
    history = np.empty((n_hours, n, len(COMPONENTS)), dtype=np.float32)
    events = _Events([], [], [])
    code_rate = 0.004  # alarms per hour of a worn component (times its wear squared)
    for hour in range(n_hours):
        wear += rate * rng.gamma(2.0, 0.5, size=shape)
        # Preventive maintenance on schedule (never on a component waiting for its corrective one).
        due = (next_pm <= hour) & (corrective_at < 0)
        if due.any():
            for asset, comp in zip(*np.nonzero(due), strict=True):
                events.maintenance.append((hour, int(asset), int(comp), 0))
            wear[due] = rng.uniform(0.0, 0.08, size=int(due.sum()))
            next_pm[due] += interval_h[due]
        # Failures: the hazard climbs steeply as wear passes the component's threshold.
        hazard = 0.001 * np.exp(12.0 * (wear / threshold - 1.0))
        failed = (rng.random(shape) < np.minimum(hazard, 0.5)) & (corrective_at < 0)
        if failed.any():
            for asset, comp in zip(*np.nonzero(failed), strict=True):
                events.failures.append((hour, int(asset), int(comp)))
            corrective_at[failed] = hour + rng.integers(*_CORRECTIVE_DELAY_HOURS, size=int(failed.sum()))
            threshold[failed] = rng.normal(1.0, 0.15, size=int(failed.sum())).clip(0.55, 1.6)
        repaired = corrective_at == hour
        if repaired.any():
            for asset, comp in zip(*np.nonzero(repaired), strict=True):
                events.maintenance.append((hour, int(asset), int(comp), 1))
            wear[repaired] = rng.uniform(0.0, 0.05, size=int(repaired.sum()))
            corrective_at[repaired] = -1
            next_pm[repaired] = hour + interval_h[repaired]
        # Alarms: code i follows component i's wear; E5 is noise.
        lam = np.concatenate([code_rate * np.minimum(wear, 2.0) ** 3, np.full((n, 1), 0.0015)], axis=1)
        raised = rng.random(lam.shape) < lam
        if raised.any():
            for asset, code in zip(*np.nonzero(raised), strict=True):
                events.alarms.append((hour, int(asset), int(code)))
        history[hour] = wear
    return history, events


def _telemetry(
    ids: np.ndarray,
    hours: pd.DatetimeIndex,
    model: np.ndarray,
    wear: np.ndarray,
    events: _Events,
    rng: np.random.Generator,
    *,
    dropout: float,
) -> pd.DataFrame:
    """Readings: model baseline + the asset's own offsets + fleet drift + daily cycle + wear + the
    precursor of each coming failure + noise."""
    n_hours, n = len(hours), len(ids)
    offsets = rng.normal(0.0, 1.0, size=(n, len(SIGNALS))) * _NOISE * np.array([2.0, 1.5, 1.5, 2.0])
    day_of_year = hours.day_of_year.to_numpy()
    hour_of_day = hours.hour.to_numpy()
    elapsed = np.arange(n_hours) / (24.0 * 365.0)
    # Fleet-wide changes over time: seasons (temperature), a slow recalibration (vibration, pressure).
    drift = np.stack(
        [
            4.0 * np.sin(2 * np.pi * (day_of_year - 110) / 365.25),
            0.35 * elapsed,
            -0.8 * elapsed,
            np.zeros(n_hours),
        ],
        axis=1,
    )
    daily = np.sin(2 * np.pi * hour_of_day / 24.0)
    cycle = np.stack([2.0 * daily, 0.1 * daily, np.zeros(n_hours), np.zeros(n_hours)], axis=1)
    # Episode strength: how loudly a component's wear shows varies per asset and component.
    loudness = rng.uniform(0.35, 1.4, size=(n, len(COMPONENTS))).astype(np.float32)
    values = np.empty((n_hours, n, len(SIGNALS)), dtype=np.float64)
    for i in range(len(SIGNALS)):
        effect = _WEAR_EFFECT[i] * (loudness[:, i] * wear[:, :, i]) ** 2
        values[:, :, i] = (
            _BASE[model, i][None, :]
            + offsets[None, :, i]
            + drift[:, None, i]
            + cycle[:, None, i]
            + effect
            + rng.normal(0.0, _NOISE[i], size=(n_hours, n))
        )
    # Precursors: in the last one to four days before a failure the failing component's signal
    # ramps away from normal, more loudly in some episodes than in others (some fail quietly).
    for hour, asset, comp in events.failures:
        length = int(rng.integers(*_PRECURSOR_HOURS))
        first = max(0, hour - length)
        ramp = ((np.arange(first, hour + 1) - (hour - length)) / length) ** 1.5
        strength = rng.uniform(*_PRECURSOR_STRENGTH)
        values[first : hour + 1, asset, comp] += np.sign(_WEAR_EFFECT[comp]) * strength * _NOISE[comp] * ramp
    values[:, :, 1] = np.maximum(values[:, :, 1], 0.05)
    values[:, :, 2] = np.maximum(values[:, :, 2], 0.1)
    keep = rng.random((n_hours, n)) >= dropout
    hour_index, asset_index = np.nonzero(keep)  # hour-major order
    order = np.lexsort((hour_index, asset_index))  # asset, then time
    hour_index, asset_index = hour_index[order], asset_index[order]
    decimals = (2, 3, 3, 1)
    frame = pd.DataFrame(
        {
            ENTITY: pd.array(ids[asset_index], dtype="str"),
            TIME: hours[hour_index],
            **{
                signal: np.round(values[hour_index, asset_index, i], decimals[i])
                for i, signal in enumerate(SIGNALS)
            },
        }
    )
    return frame


def _event_tables(
    ids: np.ndarray, hours: pd.DatetimeIndex, events: _Events, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The event logs, each event at a random minute of its hour (after that hour's reading)."""

    def stamp(hour_index: np.ndarray) -> pd.DatetimeIndex:
        minutes = rng.integers(1, 60, size=len(hour_index))
        return hours[hour_index] + pd.to_timedelta(minutes, unit="min")

    def table(rows: Sequence[tuple[int, ...]], columns: dict[str, tuple[str, ...] | None]) -> pd.DataFrame:
        data = np.array(rows, dtype=np.int64).reshape(-1, 2 + len(columns))
        order = np.lexsort((data[:, 0], data[:, 1]))
        data = data[order]
        frame = pd.DataFrame({ENTITY: pd.array(ids[data[:, 1]], dtype="str"), TIME: stamp(data[:, 0])})
        for offset, (name, labels) in enumerate(columns.items(), start=2):
            frame[name] = pd.array(np.array(labels)[data[:, offset]], dtype="str")
        return frame.sort_values([ENTITY, TIME], kind="stable").reset_index(drop=True)

    failures = table(events.failures, {"component": COMPONENTS})
    maintenance = table(events.maintenance, {"component": COMPONENTS, "kind": ("preventive", "corrective")})
    alarms = table(events.alarms, {"code": ALARM_CODES})
    return failures, maintenance, alarms


# --- files ---------------------------------------------------------------------------------------


def write_fleet(
    fleet: Fleet, folder: str | Path, *, fmt: str = "csv", partition_telemetry: bool = False
) -> dict[str, Path]:
    """Write the five tables under ``folder`` as ``<table>.<fmt>``; with ``partition_telemetry`` the
    readings go to ``telemetry/date=YYYY-MM-DD/part-0.<fmt>`` (a folder partitioned by day).

    Timestamps are ISO 8601 in UTC (``2026-01-01T05:00:00Z`` in CSV; typed in Parquet). Returns the
    path of each table.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("failures", "maintenance", "alarms", "assets"):
        paths[name] = _write(getattr(fleet, name), root / f"{name}.{fmt}", fmt)
    if partition_telemetry:
        days = fleet.telemetry[TIME].dt.strftime("%Y-%m-%d")
        for day, part in fleet.telemetry.groupby(days, sort=True):
            _write(part, root / "telemetry" / f"date={day}" / f"part-0.{fmt}", fmt)
        paths["telemetry"] = root / "telemetry"
    else:
        paths["telemetry"] = _write(fleet.telemetry, root / f"telemetry.{fmt}", fmt)
    return paths


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    from cmms_pm.csv_export import write_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        out = frame.copy()
        for column in out.columns:
            if isinstance(out[column].dtype, pd.DatetimeTZDtype):
                out[column] = out[column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        write_csv(out, path)
    else:
        frame.to_parquet(path, index=False)
    return path


def write_telemetry_chunks(
    folder: str | Path, *, n_assets: int, start: str, end: str, chunk_assets: int = 500, seed: int = 0
) -> Iterator[Path]:
    """Telemetry of a large fleet as one Parquet file per ``chunk_assets`` assets (bounded memory):
    the benchmarks' 10M and 100M readings. Yields each file as it is written."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for first in range(0, n_assets, chunk_assets):
        count = min(chunk_assets, n_assets - first)
        chunk_seed = int.from_bytes(hashlib.sha256(f"{seed}|{first}".encode()).digest()[:8], "big") >> 1
        fleet = generate_fleet(count, start, end, seed=chunk_seed, first_asset=first + 1)
        path = root / f"part-{first // chunk_assets:05d}.parquet"
        fleet.telemetry.to_parquet(path, index=False, row_group_size=1_000_000)
        del fleet
        yield path


def main(argv: list[str] | None = None) -> int:
    """``python -m cmms_pm.timeseries.generator --out .data/incoming/fleet``: raw fleet files to try
    ``make new-model TELEMETRY=...`` and a time-series spec on."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cmms_pm.timeseries.generator", description=main.__doc__)
    parser.add_argument(
        "--out", required=True, help="folder to write telemetry, failures, maintenance, alarms, assets"
    )
    parser.add_argument("--assets", type=int, default=200)
    parser.add_argument("--start", default="2026-01-01")
    parser.add_argument("--end", default="2026-05-01")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--partition", action="store_true", help="telemetry as a folder partitioned by day")
    parser.add_argument("--seed", type=int, default=None, help="default: the interval's")
    args = parser.parse_args(argv)
    fleet = generate_fleet(args.assets, args.start, args.end, seed=args.seed)
    paths = write_fleet(fleet, args.out, fmt=args.format, partition_telemetry=args.partition)
    for name, path in paths.items():
        rows = len(getattr(fleet, name))
        print(f"{name:<12} {rows:>10,} rows  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
