"""Build a time-series feature table: resolve the tables, check them, run the generated SQL.

    sources = file_sources(config, engine, as_of=..., read_from=...)   # or sql_sources(...)
    report = check_sources(config, engine, sources, as_of=..., read_from=...)
    table = build_features(config, engine, sources, snapshots, local=local_duckdb)

Bad input is refused here with a :class:`~cmms_pm.exceptions.DataValidationError` that names the
table, the column and counts (never values): timestamps that do not parse, mixed time zones,
duplicate or out-of-order readings, a missing column, no readings in the window. Entities that
appear in an event log but not in the telemetry are reported (``report.notes``), not fatal.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cmms_pm.exceptions import DataSourceError, DataValidationError
from cmms_pm.sources import FileLocation
from cmms_pm.timeseries.config import Table, TimeSeriesConfig, duration_text
from cmms_pm.timeseries.engine import DbApiEngine, DuckDBEngine
from cmms_pm.timeseries.sql import Relations, Snapshots, feature_query, normalized

log = logging.getLogger(__name__)

#: A path component that dates a file (``date=2026-01-01``, ``dt=2026-01-01``, ``2026-01-01``).
_DATE_PART = re.compile(r"(?:^|=)(\d{4}-\d{2}-\d{2})$")
# An ISO time of day followed by its UTC offset; group 2 is the offset.
_OFFSET = r":[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
_UTC_SPELLINGS = {"Z", "+00", "+0000", "+00:00", "-00", "-0000", "-00:00"}
#: The local table the feature table is written to (in the local DuckDB session).
FEATURES_TABLE = "ts_features"

Engine = DuckDBEngine | DbApiEngine


@dataclass(frozen=True)
class Sources:
    """The FROM item of each table in an engine, and how the telemetry's file order is read."""

    relations: Relations
    kinds: Mapping[str, str]  # table -> "file" | "sql"
    text_time: Mapping[str, bool] = field(default_factory=dict)  # time column read as text
    ordered_telemetry: str | None = None  # telemetry with __file and file_row_number (files only)
    files: Mapping[str, list[str]] = field(default_factory=dict)  # table -> files read (for lineage)


@dataclass
class SourceReport:
    """What the checks found: rows and times of the telemetry, notes for the manifest."""

    telemetry_rows: int = 0
    first_reading: int | None = None
    last_reading: int | None = None
    notes: list[str] = field(default_factory=list)


def epoch(moment: str | datetime) -> int:
    """Whole epoch seconds of an ISO 8601 time (a naive one is UTC)."""
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


# --- sources -------------------------------------------------------------------------------------


def file_sources(
    config: TimeSeriesConfig,
    engine: DuckDBEngine,
    *,
    as_of: int,
    read_from: int,
    roots: list[str] | None = None,
    filesystem_for: Callable[[Mapping[str, Any]], Any] | None = None,
) -> Sources:
    """Resolve every file table of ``config`` inside the allowed roots and open it in ``engine``.

    A folder's files dated by a path component (``date=YYYY-MM-DD``) after ``as_of`` are never read
    (a backfill for day D reads what existed up to D); telemetry and alarm files dated before
    ``read_from`` are skipped too. ``filesystem_for(source)`` gives the pyarrow filesystem of an
    ``s3://`` source (the plugin builds it from the source's Airflow AWS connection).
    """
    from cmms_pm.sources import dataset_files, resolve_dataset_source

    relations: dict[str, str] = {}
    text_time: dict[str, bool] = {}
    files_read: dict[str, list[str]] = {}
    ordered = None
    for table in config.tables():
        source = table.source
        if source["kind"] != "file":
            raise DataSourceError(
                f"timeseries.{table.name}: a {source['kind']} table cannot be read beside file tables; "
                "put every table in files, or every table in the telemetry's database"
            )
        location = resolve_dataset_source(source["path"], roots=roots)
        filesystem = filesystem_for(source) if location.scheme == "s3" and filesystem_for else None
        files = dataset_files(location, filesystem=filesystem, roots=roots)
        lower = read_from if table.name in ("telemetry", "alarms") else None
        files = [f for f in files if _dated_within(f, lower=lower, upper=as_of)]
        fmt = source.get("format") or _format_of(files, table.name, source["path"])
        if not files:
            raise DataValidationError(
                f"timeseries.{table.name}: no .{fmt if source.get('format') else 'csv/.parquet'} file in "
                f"{location.uri!r} up to {iso(as_of)}"
            )
        relations[table.name] = engine.file_relation(files, fmt=fmt, filesystem=filesystem)
        if table.name == "telemetry" and filesystem is None:
            # Local files keep their row order (duplicates and readings that go back in time are
            # both found in it); on S3 (an Arrow dataset) only duplicates are checked.
            ordered = engine.file_relation(files, fmt=fmt, order=True)
        files_read[table.name] = [f.uri for f in files]
        if table.time:
            kind = engine.columns(relations[table.name]).get(table.time, "")
            text_time[table.name] = kind.upper() == "VARCHAR"
    return Sources(
        relations=Relations(**relations),
        kinds={name: "file" for name in relations},
        text_time=text_time,
        ordered_telemetry=ordered,
        files=files_read,
    )


def sql_sources(config: TimeSeriesConfig, engine: DbApiEngine) -> Sources:
    """Every table of ``config`` as a table of one database (the telemetry's connection)."""
    conn_id = config.telemetry.source.get("conn_id")
    relations = {}
    for table in config.tables():
        source = table.source
        if source["kind"] != "sql" or source.get("conn_id") != conn_id:
            raise DataSourceError(
                f"timeseries.{table.name}: the features are computed in the telemetry's database "
                f"(connection {conn_id!r}); this table must be a table of that connection too"
            )
        relations[table.name] = engine.table_relation(source["table"])
    return Sources(relations=Relations(**relations), kinds={name: "sql" for name in relations})


def _dated_within(location: FileLocation, *, lower: int | None, upper: int) -> bool:
    """False for a file whose path dates it to a day entirely after ``upper`` or before ``lower``."""
    for part in reversed(location.path.split("/")[:-1]):
        match = _DATE_PART.search(part)
        if match:
            try:
                day = epoch(match.group(1) + "T00:00:00+00:00")
            except ValueError:
                return True
            return day <= upper and (lower is None or day + 86400 > lower)
    return True


def _format_of(files: list[FileLocation], table: str, path: str) -> str:
    suffixes = {"csv" if f.suffix == ".csv" else "parquet" for f in files}
    if len(suffixes) > 1:
        raise DataValidationError(
            f"timeseries.{table}: {path!r} holds both CSV and Parquet files; set source.format to choose"
        )
    return suffixes.pop() if suffixes else "parquet"


# --- checks --------------------------------------------------------------------------------------


def check_sources(
    config: TimeSeriesConfig,
    engine: Engine,
    sources: Sources,
    *,
    as_of: int,
    read_from: int | None,
    require_readings: bool = True,
) -> SourceReport:
    """Refuse bad tables before any feature is computed; ``read_from`` None: from the first reading.
    ``require_readings``: no reading in the window is an error (training), or not (scoring)."""
    dialect = engine.dialect
    q = dialect.ident
    report = SourceReport()
    for table in config.tables():
        relation = getattr(sources.relations, table.name)
        _check_columns(config, table, engine.columns(relation))
        if table.time is None:
            continue
        time, entity = q(table.time), q(table.entity)
        parsed = dialect.epoch_seconds(time)
        unparsed = (
            f"count(*) FILTER (WHERE {time} IS NOT NULL AND {parsed} IS NULL)"
            if dialect.name == "duckdb"
            else "0"
        )
        window = f"{parsed} <= {as_of}" + (f" AND {parsed} > {read_from}" if read_from is not None else "")
        ((rows, no_time, bad_time, no_entity, in_window, first, last),) = engine.rows(
            f"SELECT count(*), count(*) FILTER (WHERE {time} IS NULL), {unparsed}, "
            f"count(*) FILTER (WHERE {entity} IS NULL), count(*) FILTER (WHERE {window}), "
            f"min({parsed}) FILTER (WHERE {parsed} <= {as_of}), "
            f"max({parsed}) FILTER (WHERE {parsed} <= {as_of}) "
            f"FROM {relation}"
        )
        problems = []
        if no_time:
            problems.append(f"{no_time:,} rows have no {table.time!r}")
        if bad_time:
            problems.append(
                f"{bad_time:,} of {rows:,} values of {table.time!r} do not parse as timestamps "
                "(write ISO 8601, e.g. 2026-01-31T14:00:00Z)"
            )
        if no_entity:
            problems.append(f"{no_entity:,} rows have no {table.entity!r}")
        if problems:
            raise DataValidationError(f"timeseries.{table.name}: " + "; ".join(problems))
        if sources.text_time.get(table.name):
            _check_offsets(engine, table, relation)
        if table.name == "telemetry":
            _check_numbers(engine, table.name, relation, config.signals)
            if not in_window and require_readings:
                span = f"{iso(read_from)} .. {iso(as_of)}" if read_from is not None else f"up to {iso(as_of)}"
                raise DataValidationError(
                    f"timeseries.telemetry has no readings in the window {span} ({rows:,} rows in the "
                    "files read)"
                )
            report.telemetry_rows, report.first_reading, report.last_reading = int(in_window), first, last
    assets = sources.relations.assets
    if config.assets is not None and assets is not None:  # a relation for every table the spec names
        _check_numbers(engine, "assets", assets, config.asset_numeric)
        _check_unique_assets(engine, config.assets, assets)
    low = read_from if read_from is not None else report.first_reading
    _check_readings_order(config, engine, sources, as_of=as_of, read_from=(low or 0) - 1)
    return report


def _check_columns(config: TimeSeriesConfig, table: Table, found: Mapping[str, str]) -> None:
    wanted = [table.entity, *([table.time] if table.time else [])]
    if table.name == "telemetry":
        wanted += list(config.signals)
    elif table.name == "failures" and config.failure_component:
        wanted.append(config.failure_component)
    elif table.name == "maintenance" and config.maintenance_component:
        wanted.append(config.maintenance_component)
    elif table.name == "alarms" and config.alarm_code:
        wanted.append(config.alarm_code)
    elif table.name == "assets":
        wanted += [*config.asset_categorical, *config.asset_numeric]
        wanted += [config.install_date] if config.install_date else []
    missing = [column for column in wanted if column not in found]
    if missing:
        role = {table.time: "time column", table.entity: "entity column"}
        named = ", ".join(f"{c!r}" + (f" (its {role[c]})" if c in role else "") for c in missing)
        raise DataValidationError(
            f"timeseries.{table.name}: column(s) {named} not in the table; it has {len(found)} columns: "
            f"{sorted(found)[:30]}"
        )


def _check_offsets(engine: Engine, table: Table, relation: str) -> None:
    """Text timestamps must all carry the same UTC offset (or none: UTC)."""
    q = engine.dialect.ident
    rows = engine.rows(
        f"SELECT DISTINCT regexp_extract({q(table.time_column)}, '{_OFFSET}', 2) FROM {relation} "
        f"WHERE {q(table.time_column)} IS NOT NULL LIMIT 20"
    )
    zones = sorted({"UTC" if row[0] in _UTC_SPELLINGS else (row[0] or "no offset") for row in rows})
    if len(zones) > 1:
        raise DataValidationError(
            f"timeseries.{table.name}: column {table.time!r} mixes time zones ({', '.join(zones)}); "
            "write every timestamp in UTC (or with one offset)"
        )


def _check_numbers(engine: Engine, table: str, relation: str, columns: Sequence[str]) -> None:
    if engine.dialect.name != "duckdb" or not columns:
        return
    q = engine.dialect.ident
    counts = engine.rows(
        "SELECT "
        + ", ".join(
            f"count(*) FILTER (WHERE {q(c)} IS NOT NULL AND TRY_CAST({q(c)} AS DOUBLE) IS NULL)"
            for c in columns
        )
        + f" FROM {relation}"
    )[0]
    bad = {c: n for c, n in zip(columns, counts, strict=True) if n}
    if bad:
        listed = ", ".join(f"{c!r} ({n:,} rows)" for c, n in bad.items())
        raise DataValidationError(f"timeseries.{table}: values that are not numbers in {listed}")


def _check_unique_assets(engine: Engine, assets: Table, relation: str) -> None:
    q = engine.dialect.ident
    entity = q(assets.entity)
    ((duplicated,),) = engine.rows(
        f"SELECT count(*) FROM (SELECT {entity} FROM {relation} GROUP BY 1 HAVING count(*) > 1) d"
    )
    if duplicated:
        raise DataValidationError(
            f"timeseries.assets: {duplicated:,} assets have more than one row "
            "(one row of attributes per asset)"
        )


def _check_readings_order(
    config: TimeSeriesConfig, engine: Engine, sources: Sources, *, as_of: int, read_from: int
) -> None:
    """Duplicate (entity, time) readings; in files, readings of an asset that go back in time."""
    dialect = engine.dialect
    tel = config.telemetry
    window = f"t > {read_from} AND t <= {as_of}"
    if sources.ordered_telemetry is not None:
        q = dialect.ident
        rows = engine.rows(
            "SELECT count(*) FILTER (WHERE t = prev), count(*) FILTER (WHERE t < prev), "
            "count(DISTINCT entity) FILTER (WHERE t <= prev) FROM ("
            "SELECT entity, t, lag(t) OVER (PARTITION BY entity ORDER BY __file, file_row_number) AS prev "
            f"FROM (SELECT CAST({q(tel.entity)} AS VARCHAR) AS entity, "
            f"{dialect.epoch_seconds(q(tel.time_column))} AS t, "
            f"__file, file_row_number FROM {sources.ordered_telemetry}) o WHERE {window}) l"
        )
        duplicates, backwards, entities = rows[0]
    else:
        query = normalized(config, sources.relations, dialect)["telemetry"]
        rows = engine.rows(
            f"SELECT count(*), 0, count(DISTINCT entity) FROM (SELECT entity, t FROM ({query}) n "
            f"WHERE {window} GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        duplicates, backwards, entities = rows[0]
    problems = []
    if duplicates:
        problems.append(f"{duplicates:,} duplicate ({tel.entity!r}, {tel.time!r}) readings")
    if backwards:
        problems.append(
            f"{backwards:,} readings out of order (earlier than the asset's reading before them in the file; "
            "sort each file by time)"
        )
    if problems:
        raise DataValidationError(f"timeseries.telemetry: {' and '.join(problems)} in {entities:,} assets")


# --- the feature table ---------------------------------------------------------------------------


def build_features(
    config: TimeSeriesConfig,
    engine: Engine,
    sources: Sources,
    snapshots: Snapshots,
    *,
    local: DuckDBEngine,
    table: str = FEATURES_TABLE,
    readings: int = 0,
) -> list[str]:
    """Run the feature query on ``engine`` and keep its result as ``table`` in the ``local`` DuckDB
    session (the same session when ``engine`` is local); return the queries that ran.

    The result is streamed into compressed Parquet files in the session's own temporary folder and
    ``table`` is a view over them: at fleet scale the feature table outgrows the memory limit, and a
    compressed file costs less to write and to read back (the split reads it three times) than the
    engine's uncompressed spill of a table. DuckDB's per-bucket aggregation keeps one hash table per
    thread that does not spill well: with ``readings`` above what its memory limit holds
    (:meth:`DuckDBEngine.shards`), the assets are built in shards (windows never cross assets).
    """
    shards = local.shards(readings) if engine is local else 1
    queries = [
        feature_query(config, sources.relations, snapshots, engine.dialect, shard=(part, shards))
        for part in range(shards)
    ]
    log.info(
        "building %s snapshots %s .. %s (as of %s, %s) on %s in %d shard(s)",
        "the latest" if snapshots.latest else "training", iso(snapshots.start), iso(snapshots.end),
        iso(snapshots.as_of), duration_text(config.resolution) + " buckets", engine.dialect.name, shards,
    )  # fmt: skip
    paths = [local.scratch(f"{table}-{part:04d}.parquet") for part in range(shards)]
    local.execute(f"DROP VIEW IF EXISTS {local.dialect.ident(table)}")
    if engine is local:
        for sql, path in zip(queries, paths, strict=True):
            local.execute(f"COPY ({sql}) TO {local.dialect.literal(path)} (FORMAT parquet, COMPRESSION zstd)")
    else:
        _write_batches(engine.batches(queries[0]), paths[0])
    if not os.path.exists(paths[0]):
        # No snapshot at all from a database: an empty table with the query's columns.
        columns = [*config.id_columns, *config.feature_names(), config.label_column]
        empty = ", ".join(f"NULL AS {local.dialect.ident(c)}" for c in columns)
        local.execute(
            f"COPY (SELECT {empty} WHERE false) TO {local.dialect.literal(paths[0])} (FORMAT parquet)"
        )
    listed = "[" + ", ".join(local.dialect.literal(p) for p in paths) + "]"
    local.execute(f"CREATE VIEW {local.dialect.ident(table)} AS SELECT * FROM read_parquet({listed})")
    return queries


def _write_batches(batches: Any, path: str) -> None:
    """Arrow record batches (a database's answer) into one Parquet file, schema of the first batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
            writer.write_table(pa.Table.from_batches([batch]).cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def event_entities_without_telemetry(
    config: TimeSeriesConfig,
    engine: Engine,
    sources: Sources,
    *,
    local: DuckDBEngine,
    as_of: int,
    table: str = FEATURES_TABLE,
) -> list[str]:
    """Notes for entities that have events (up to ``as_of``) but no snapshot in the feature table."""
    queries = normalized(config, sources.relations, engine.dialect)
    notes = []
    known = {
        row[0]
        for row in local.rows(
            f"SELECT DISTINCT {local.dialect.ident(config.entity)} FROM {local.dialect.ident(table)}"
        )
    }
    for name in ("failures", "maintenance", "alarms"):
        if name not in queries:
            continue
        entities = {
            row[0]
            for row in engine.rows(f"SELECT DISTINCT entity FROM ({queries[name]}) e WHERE t <= {as_of}")
        }
        unknown = entities - known - {None}
        if unknown:
            notes.append(
                f"{len(unknown):,} {config.entity} value(s) in the {name} log have no snapshot in the "
                "telemetry (their events are not used)"
            )
    return notes


def failure_events(
    config: TimeSeriesConfig, engine: Engine, sources: Sources, *, start: int, end: int
) -> list[tuple[str, int, str | None]]:
    """The failures logged in ``(start, end]`` (epoch seconds) as ``(entity, epoch seconds,
    component or None)``, oldest first: what happened after a prediction (outcomes, label audits)."""
    query = normalized(config, sources.relations, engine.dialect)["failures"]
    rows = engine.rows(
        f"SELECT entity, t, component FROM ({query}) f "
        f"WHERE t > {int(start)} AND t <= {int(end)} ORDER BY 2, 1, 3"
    )
    return [(str(entity), int(t), component) for entity, t, component in rows]
