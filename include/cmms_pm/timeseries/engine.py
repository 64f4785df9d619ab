"""Where the feature SQL runs: embedded DuckDB over files (default), or a SQL database (pushdown).

Both engines answer the same three questions — a table's columns, a small query's rows, a large
query's rows as Arrow record batches — so :mod:`cmms_pm.timeseries.build` runs the same checks and
the same generated query on either. :class:`DuckDBEngine` reads CSV/Parquet files in place
(``read_parquet``/``read_csv`` on the files an allow-list resolved, or an Arrow dataset on a
``pyarrow`` filesystem, e.g. S3 through an Airflow connection) and spills to disk past its memory
limit; :class:`DbApiEngine` sends the query to a database through a DB-API connection (the plugin
opens it from an Airflow SQL connection), so a warehouse computes its own windows.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from cmms_pm.exceptions import DataSourceError, DataSourceUnavailableError
from cmms_pm.sources import FileLocation
from cmms_pm.timeseries.sql import DUCKDB, POSTGRES, Dialect

log = logging.getLogger(__name__)

#: Engine memory before it spills to its temporary folder (DuckDB ``memory_limit``).
DEFAULT_MEMORY_LIMIT = os.environ.get("CMMS_TS_MEMORY_LIMIT", "2GB")
#: Readings the feature build aggregates at once per GB of the memory limit (more are built in
#: shards of assets): 10M readings held in 2 GB with 2 threads, 44M did not (DuckDB 2.0).
READINGS_PER_GB = 4_000_000
#: Rows per Arrow record batch streamed out of an engine.
BATCH_ROWS = 65_536
_GLOB = re.compile(r"[*?\[\]{}]")


class DuckDBEngine:
    """An in-process DuckDB session in UTC with a memory limit, spilling to a private folder."""

    dialect: Dialect = DUCKDB

    def __init__(
        self,
        *,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
        temp_directory: str | None = None,
    ) -> None:
        import duckdb

        self._tmp = tempfile.TemporaryDirectory(prefix="cmms-duckdb-", dir=temp_directory)
        self.memory_gb = _gigabytes(memory_limit)
        self.con = duckdb.connect(config={"allow_unsigned_extensions": False})
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(f"SET memory_limit = {DUCKDB.literal(memory_limit)}")
        self.con.execute(f"SET temp_directory = {DUCKDB.literal(self._tmp.name)}")
        # Results stream out unordered unless a query says ORDER BY (every result that is written
        # in order does): DuckDB need not buffer a whole result to keep its insertion order.
        self.con.execute("SET preserve_insertion_order = false")
        # Extensions are never downloaded (an S3 source comes through a pyarrow filesystem instead).
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET autoload_known_extensions = false")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self._views = 0
        self._csv_tables: dict[tuple[str, ...], str] = {}

    def close(self) -> None:
        self.con.close()
        self._tmp.cleanup()

    def shards(self, readings: int) -> int:
        """How many shards of assets a build over ``readings`` needs within the memory limit."""
        per_shard = max(1, int(READINGS_PER_GB * self.memory_gb))
        return max(1, -(-int(readings) // per_shard))

    def scratch(self, name: str) -> str:
        """A path in the session's private temporary folder (removed with the session)."""
        folder = os.path.join(self._tmp.name, "scratch")
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, name)

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sources -------------------------------------------------------------------------------

    def file_relation(
        self, files: Sequence[FileLocation], *, fmt: str, filesystem: Any | None = None, order: bool = False
    ) -> str:
        """A FROM item reading ``files`` (all CSV or all Parquet); ``order`` adds ``__file`` and
        ``file_row_number`` (a row's position in its file).

        Local Parquet is read in place by DuckDB at every scan. CSV is parsed once, as text (the
        checks count what does not parse), into a session table that every later scan reads (the
        checks and the feature query each scan their tables). Files on another filesystem (S3) are
        read through a ``pyarrow`` dataset registered as a view.
        """
        if not files:
            raise DataSourceError("no data files to read")
        if filesystem is not None or any(f.scheme != "local" for f in files):
            return self._arrow_relation(files, fmt=fmt, filesystem=filesystem)
        for location in files:
            if _GLOB.search(location.path):
                raise DataSourceError(
                    f"data file {location.uri!r}: file names with *, ?, [, ] or braces are not read "
                    "(DuckDB would expand them as a pattern)"
                )
        paths = "[" + ", ".join(DUCKDB.literal(f.path) for f in files) + "]"
        if fmt == "parquet":
            extra = ", filename = '__file', file_row_number = true" if order else ""
            return f"read_parquet({paths}, union_by_name = true, hive_partitioning = false{extra})"
        key = tuple(f.path for f in files)
        if key not in self._csv_tables:
            name = DUCKDB.ident(f"__csv_{len(self._csv_tables) + 1}")
            # One reader thread, in insertion order, keeps each file's order for row_number().
            self.execute("SET preserve_insertion_order = true")
            self.execute(
                f"CREATE TEMP TABLE {name} AS SELECT *, row_number() OVER () AS file_row_number FROM "
                f"read_csv({paths}, header = true, all_varchar = true, "
                "hive_partitioning = false, filename = '__file', parallel = false)"
            )
            self.execute("SET preserve_insertion_order = false")
            self._csv_tables[key] = name
        return self._csv_tables[key]

    def _arrow_relation(self, files: Sequence[FileLocation], *, fmt: str, filesystem: Any | None) -> str:
        import pyarrow.dataset as ds

        if fmt == "csv":
            import pyarrow.csv as pacsv

            # Every column as text, like the local CSV reader.
            header = _csv_header(files[0], filesystem)
            options = pacsv.ConvertOptions(column_types={name: "string" for name in header})
            file_format: Any = ds.CsvFileFormat(convert_options=options)
        else:
            file_format = ds.ParquetFileFormat()
        try:
            dataset = ds.dataset([f.path for f in files], filesystem=filesystem, format=file_format)
        except FileNotFoundError as err:
            raise DataSourceError(f"data files not found: {err}") from None
        except OSError as err:
            raise DataSourceUnavailableError(f"cannot open data files: {err}") from err
        self._views += 1
        name = f"__dataset_{self._views}"
        self.con.register(name, dataset)
        return DUCKDB.ident(name)

    # --- queries -------------------------------------------------------------------------------

    def columns(self, relation: str) -> dict[str, str]:
        """``{column: type}`` of a FROM item."""
        rows = self.con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        return {str(row[0]): str(row[1]) for row in rows}

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with _duckdb_errors():
            return self.con.execute(sql).fetchall()

    def batches(self, sql: str) -> Iterator[Any]:
        with _duckdb_errors():
            reader = self.con.sql(sql).to_arrow_reader(BATCH_ROWS)
        yield from reader

    def execute(self, sql: str) -> None:
        with _duckdb_errors():
            self.con.execute(sql)


def _gigabytes(text: str) -> float:
    """``"2GB"`` -> 2.0, ``"512MB"`` -> 0.5 (DuckDB's units; GiB and MiB alike)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B)\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"memory limit {text!r} is not like 2GB or 512MB")
    scale = {"K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3}[match.group(2)[0].upper()]
    return float(match.group(1)) * scale


@contextmanager
def _duckdb_errors() -> Iterator[None]:
    """DuckDB's I/O failures as typed errors; its messages may quote a value, so only the class."""
    import duckdb

    try:
        yield
    except duckdb.IOException as err:
        raise DataSourceUnavailableError(f"the feature engine could not read its input: {err}") from err
    except (duckdb.ConversionException, duckdb.InvalidInputException) as err:
        raise DataSourceError(
            f"the feature engine could not convert a value ({type(err).__name__}); check the column "
            "types of the source tables"
        ) from None


def _csv_header(location: FileLocation, filesystem: Any) -> list[str]:
    import pyarrow.csv as pacsv

    with filesystem.open_input_stream(location.path) as stream:
        reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=1 << 16))
        return list(reader.schema.names)


class DbApiEngine:
    """A SQL database reached through a DB-API connection factory (PostgreSQL dialect).

    Each query runs in its own transaction in UTC (``SET LOCAL TIME ZONE 'UTC'``), read-only, and is
    fetched in chunks; ``connect`` is called once per query (the plugin passes the Airflow hook's).
    """

    dialect: Dialect = POSTGRES

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        label: str = "database",
        on_error: Callable[[Exception], Exception] | None = None,
    ) -> None:
        self.connect = connect
        self.label = label
        self.on_error = on_error or self._typed_error

    def _typed_error(self, err: Exception) -> Exception:
        """A driver error as a typed one: connection trouble is retryable, the rest is not. Only the
        driver's class and SQLSTATE are shown (its text may quote a value)."""
        state = str(getattr(err, "pgcode", None) or getattr(err, "sqlstate", None) or "")
        detail = f"{type(err).__name__}" + (f" (SQLSTATE {state})" if state else "")
        if state[:2] in ("08", "53", "57") or type(err).__name__ in ("OperationalError", "InterfaceError"):
            return DataSourceUnavailableError(f"{self.label} is unavailable: {detail}")
        return DataSourceError(f"{self.label} refused the feature query: {detail}")

    def close(self) -> None:
        pass

    def table_relation(self, table: str) -> str:
        """The quoted ``[schema.]table`` (validated against the spec's SQL identifier pattern)."""
        from cmms_pm.spec import SQL_IDENTIFIER_PATTERN

        if not re.match(SQL_IDENTIFIER_PATTERN, table):
            raise DataSourceError(
                f"{table!r} is not a plain SQL table name (letters, digits, '_', schema.table)"
            )
        return ".".join(POSTGRES.ident(part) for part in table.split("."))

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        from cmms_pm.exceptions import CmmsPmError

        try:
            conn = self.connect()
        except CmmsPmError:
            raise
        except Exception as err:  # each driver has its own exception tree
            raise self.on_error(err) from None
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute("SET LOCAL TIME ZONE 'UTC'")
                yield cursor
            conn.rollback()
        except CmmsPmError:
            raise
        except Exception as err:
            raise self.on_error(err) from None
        finally:
            conn.close()

    def columns(self, relation: str) -> dict[str, str]:
        with self._cursor() as cursor:
            cursor.execute(f"SELECT * FROM {relation} LIMIT 0")
            return {str(column[0]): "" for column in cursor.description}

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()]

    def batches(self, sql: str) -> Iterator[Any]:
        import pyarrow as pa

        with self._cursor() as cursor:
            cursor.execute(sql)
            names = [str(column[0]) for column in cursor.description]
            types = [_pg_types().get(column[1], pa.string()) for column in cursor.description]
            while True:
                chunk = cursor.fetchmany(BATCH_ROWS)
                if not chunk:
                    return
                columns = list(zip(*chunk, strict=True))
                yield pa.RecordBatch.from_arrays(
                    [_arrow_array(values, kind) for values, kind in zip(columns, types, strict=True)],
                    names=names,
                )


@cache
def _pg_types() -> dict[int, Any]:
    import pyarrow as pa

    # PostgreSQL type OIDs of the feature query's columns.
    return {
        16: pa.bool_(), 20: pa.int64(), 21: pa.int64(), 23: pa.int64(), 25: pa.string(), 1043: pa.string(),
        700: pa.float64(), 701: pa.float64(), 1700: pa.float64(), 1114: pa.timestamp("us"),
        1184: pa.timestamp("us", tz="UTC"),
    }  # fmt: skip


def _arrow_array(values: Sequence[Any], kind: Any) -> Any:
    """A column fetched from a database as Arrow of the column's type (numeric becomes double)."""
    import decimal

    import pyarrow as pa

    if pa.types.is_floating(kind):
        values = [float(v) if isinstance(v, decimal.Decimal) else v for v in values]
    return pa.array(values, type=kind)
