"""A time-series spec's batch: snapshots x features x labels, split forward in time, as Parquet.

The batch is what every downstream task reads — train/validation/holdout feature tables (one row per
asset and snapshot; the entity and ``snapshot_time`` are id columns, never features) and the
manifest of :mod:`cmms_pm.batch` with its ``split`` record — so train, register, validate, promote
and score work as for a flat table.

For a run whose data interval ends at ``E`` (``as_of``):

* nothing stamped after ``E`` is read (files dated after E are not even opened);
* snapshots run from the start of the training window (``E - training_window``, or the first
  reading plus the longest window) to the newest snapshot with a mature label, ``E - H``: later
  snapshots cannot know their label yet and are never trained on;
* the same interval reads the same rows and computes exact sums, so it writes the same bytes.
"""

from __future__ import annotations

import logging
from typing import Any

from cmms_pm.batch import Manifest
from cmms_pm.exceptions import DataValidationError
from cmms_pm.spec import ModelSpec
from cmms_pm.timeseries.build import (
    FEATURES_TABLE,
    Engine,
    Sources,
    build_features,
    check_sources,
    epoch,
    event_entities_without_telemetry,
    iso,
)
from cmms_pm.timeseries.config import SNAPSHOT_TIME, TimeSeriesConfig, duration_text
from cmms_pm.timeseries.engine import DuckDBEngine
from cmms_pm.timeseries.split import PARTS, entity_groups, time_boundaries
from cmms_pm.timeseries.sql import Snapshots, snapshot_ceil, snapshot_floor

log = logging.getLogger(__name__)


def training_range(config: TimeSeriesConfig, *, as_of: int, first_reading: int | None) -> tuple[int, int]:
    """``(start, end)`` epoch seconds of the snapshots a run at ``as_of`` trains on."""
    if config.training_window is not None:
        start = snapshot_ceil(as_of - config.training_window, config.cadence)
    else:
        start = snapshot_ceil((first_reading or as_of) + config.lookback, config.cadence)
    end = snapshot_floor(as_of - config.horizon, config.cadence)
    return start, end


def read_from(config: TimeSeriesConfig, *, as_of: int) -> int | None:
    """The oldest reading a run at ``as_of`` needs (None: all of them, no training window)."""
    if config.training_window is None:
        return None
    return training_range(config, as_of=as_of, first_reading=None)[0] - config.lookback


def prepare_timeseries_batch(
    *,
    spec: ModelSpec,
    engine: Engine,
    sources: Sources,
    local: DuckDBEngine,
    source: str,
    interval_start: str,
    interval_end: str,
    out_uri: str,
) -> Manifest:
    """Check the tables, build the snapshots of the run's training window, split them in time and
    write the batch; :class:`DataValidationError` for every bad input of the module docstring."""
    from cmms_pm.data import finish_batch, interval_seed, write_split_batches

    config = spec.timeseries
    assert config is not None, f"spec {spec.name!r} has no timeseries section"
    as_of = epoch(interval_end)
    seed = interval_seed(interval_start, interval_end)
    report = check_sources(config, engine, sources, as_of=as_of, read_from=read_from(config, as_of=as_of))
    start, end = training_range(config, as_of=as_of, first_reading=report.first_reading)
    if end < start:
        newest = iso(report.last_reading) if report.last_reading else "none"
        raise DataValidationError(
            f"the label horizon {duration_text(config.horizon)} leaves no mature snapshot: a snapshot needs "
            f"{duration_text(config.horizon)} of data after it and the first snapshot with full "
            f"{duration_text(config.lookback)} windows is {iso(start)}, after the newest mature one "
            f"{iso(end)} (data up to {iso(as_of)}, newest reading {newest})"
        )
    snapshots = Snapshots(as_of=as_of, start=start, end=end)
    build_features(config, engine, sources, snapshots, local=local, readings=report.telemetry_rows)
    notes = list(report.notes) + event_entities_without_telemetry(
        config, engine, sources, local=local, as_of=as_of
    )
    for note in notes:
        log.warning("%s", note)
    table = local.dialect.ident(FEATURES_TABLE)
    label = local.dialect.ident(config.label_column)
    time = local.dialect.ident(SNAPSHOT_TIME)
    ((rows, mature, positives, first, last),) = local.rows(
        f"SELECT count(*), count({label}), coalesce(sum({label}), 0), "
        f"min(epoch({time})) FILTER (WHERE {label} IS NOT NULL), "
        f"max(epoch({time})) FILTER (WHERE {label} IS NOT NULL) "
        f"FROM {table}"
    )
    window = f"{iso(start)} .. {iso(end)}"
    if not mature:
        raise DataValidationError(
            f"no snapshot with a mature label in {window}: no asset reported telemetry on the "
            f"{duration_text(config.cadence)} cadence there ({rows:,} snapshots)"
        )
    if not positives:
        raise DataValidationError(
            f"no failure in the training window: 0 of {mature:,} snapshots in {window} is followed by a "
            f"failure within {duration_text(config.horizon)}; nothing to learn (check the failures log, "
            "or train on a longer training_window)"
        )
    split = spec.split
    bounds = time_boundaries(
        int(first), int(last), validation=split["validation"], holdout=split["holdout"],
        gap=int(split["gap_hours"] * 3600),
    )  # fmt: skip
    part = bounds.sql_part(f"epoch({time})")
    group_clause = ""
    record = bounds.record(
        time_column=SNAPSHOT_TIME, label_horizon_hours=config.horizon_hours, as_of=iso(as_of),
        cadence_hours=config.cadence / 3600,
    )  # fmt: skip
    if split.get("entity_column"):
        entities = [
            row[0] for row in local.rows(f"SELECT DISTINCT {local.dialect.ident(config.entity)} FROM {table}")
        ]
        groups = entity_groups(entities, seed=seed, validation=split["validation"], holdout=split["holdout"])
        import pyarrow as pa

        local.con.register(
            "__entity_parts", pa.table({"entity": list(groups), "part": list(groups.values())})
        )
        group_clause = (
            f" AND {part} = (SELECT p.part FROM __entity_parts p WHERE p.entity = "
            f"{local.dialect.ident(config.entity)})"
        )
        record["entity_column"] = config.entity
    columns = _batch_columns(config, local)
    entries = {}
    for name in PARTS:
        sql = (
            f"SELECT {columns} FROM {table} WHERE {label} IS NOT NULL AND {part} = '{name}'{group_clause} "
            f"ORDER BY 1, 2"
        )
        schema, batches = _stream(local, sql)
        entries[name] = write_split_batches(out_uri, name, schema, batches, target=config.label_column)
        if entries[name]["rows"] == 0 or entries[name]["positives"] == 0:
            period = {
                "train": (bounds.first, bounds.train_end),
                "validation": (bounds.validation_start, bounds.validation_end),
                "holdout": (bounds.holdout_start, bounds.last),
            }[name]
            raise DataValidationError(
                f"the {name} period {iso(period[0])} .. {iso(period[1])} has {entries[name]['rows']:,} "
                f"snapshots and {entries[name]['positives']:,} followed by a failure: a time split needs "
                "failures in every period (train on a longer window, or change split.validation/holdout)"
            )
    record["rows_in_gaps"] = int(mature) - sum(entry["rows"] for entry in entries.values())
    record["immature_snapshots_excluded"] = int(rows - mature)
    kinds = config.feature_kinds()
    log.info(
        "time-series batch: %d snapshots (%d positive) from %s; split %s", mature, positives, window,
        {name: entry["rows"] for name, entry in entries.items()},
    )  # fmt: skip
    return finish_batch(
        out_uri,
        entries,
        target=config.label_column,
        columns=[c.strip('"') for c in _batch_column_names(config)],
        metadata={
            "features": kinds,
            "source": source,
            "spec": spec.name,
            "seed": seed,
            "data_interval_start": interval_start,
            "data_interval_end": interval_end,
            "data_version": f"{interval_start}/{interval_end}",
            "training_date": interval_end[:10],
            "split": record,
            "notes": notes,
            "snapshots": {"first": iso(start), "last": iso(end), "cadence_hours": config.cadence / 3600},
        },
    )


def _batch_column_names(config: TimeSeriesConfig) -> list[str]:
    return [*config.id_columns, *config.feature_names(), config.label_column]


def _batch_columns(config: TimeSeriesConfig, local: DuckDBEngine) -> str:
    """The batch's columns: ids, features, the label as 0/1 int64, the snapshot time in UTC."""
    q = local.dialect.ident
    out = []
    for name in _batch_column_names(config):
        if name == SNAPSHOT_TIME:
            out.append(f"CAST({q(name)} AS TIMESTAMPTZ) AS {q(name)}")
        elif name == config.label_column:
            out.append(f"CAST({q(name)} AS BIGINT) AS {q(name)}")
        else:
            out.append(q(name))
    return ", ".join(out)


def _stream(local: DuckDBEngine, sql: str) -> tuple[Any, Any]:
    reader = local.con.sql(sql).to_arrow_reader(65_536)
    return reader.schema, reader
