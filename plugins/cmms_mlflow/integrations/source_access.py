"""Reading a spec's data source through Airflow connections: S3 files and SQL tables or queries.

The path checks and the parsing live in :mod:`cmms_pm.sources`; this side adds what only Airflow
knows: credentials and endpoints (from connections, never from a source URI or the worker's
environment) and SQL through the connection's common-sql hook, with the run's data interval bound
as parameters. Errors are typed: :class:`SourceUnavailableError` (retryable: storage or database
down) or a non-retryable :class:`BadDataError` / :class:`SourceConfigurationError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cmms_mlflow.exceptions import (
    BadDataError,
    SourceConfigurationError,
    SourceUnavailableError,
    source_errors_fail_the_task,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs

    from cmms_pm.timeseries.config import TimeSeriesConfig

log = logging.getLogger(__name__)

#: Seconds to wait for an S3 connection and for each request, unless the connection's extras
#: ``config_kwargs`` say ``connect_timeout`` / ``read_timeout``.
S3_CONNECT_TIMEOUT = 10.0
S3_REQUEST_TIMEOUT = 60.0

#: The named parameters a SQL query may use; a table source uses both.
INTERVAL_PARAMETERS = ("data_interval_start", "data_interval_end")
# DB-API paramstyle of the drivers behind the SQL hooks we pin and test (psycopg 2 and 3 alike, also
# through SQLAlchemy, which PostgresHook.get_df uses; sqlite3 through a raw connection). Another
# pyformat or named driver is one entry here and a test.
_PARAMSTYLES = {"postgres": "pyformat", "sqlite": "named"}
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%")


# --- connections ---------------------------------------------------------------------------------


def _connection(conn_id: str, purpose: str) -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise SourceConfigurationError(
            f"connection {conn_id!r} is not defined; it is needed to {purpose}"
        ) from None


def s3_filesystem(aws_conn_id: str) -> pyarrow.fs.S3FileSystem:
    """An S3 filesystem with the credentials, region and endpoint of an Airflow connection only.

    Access key: the connection's login or extra ``aws_access_key_id``; secret: its password or extra
    ``aws_secret_access_key`` (masked in logs); optional extras ``aws_session_token``,
    ``region_name``, ``endpoint_url`` (an S3-compatible server: the admin's setting, never a URI's).
    """
    from airflow.sdk.log import mask_secret
    from pyarrow import fs

    conn = _connection(aws_conn_id, "read s3:// data sources")
    extra = conn.extra_dejson
    access_key = conn.login or extra.get("aws_access_key_id")
    secret_key = conn.password or extra.get("aws_secret_access_key")
    if not access_key or not secret_key:
        raise SourceConfigurationError(
            f"connection {aws_conn_id!r} has no S3 credentials: set its login and password (or extras "
            "aws_access_key_id and aws_secret_access_key); they never come from a source URI or the "
            "worker's environment"
        )
    mask_secret(secret_key)
    token = extra.get("aws_session_token")
    if token:
        mask_secret(token)
    timeouts = extra.get("config_kwargs") or {}
    options: dict[str, Any] = {
        "access_key": access_key,
        "secret_key": secret_key,
        "session_token": token,
        "connect_timeout": float(timeouts.get("connect_timeout", S3_CONNECT_TIMEOUT)),
        "request_timeout": float(timeouts.get("read_timeout", S3_REQUEST_TIMEOUT)),
    }
    if extra.get("region_name"):
        options["region"] = extra["region_name"]
    if extra.get("endpoint_url"):
        options.update(_endpoint(aws_conn_id, extra["endpoint_url"]))
    return fs.S3FileSystem(**options)


def _endpoint(conn_id: str, url: str) -> dict[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
        raise SourceConfigurationError(
            f"connection {conn_id!r}: extra endpoint_url must be http(s)://host[:port], got {url!r}"
        )
    return {"endpoint_override": parts.netloc, "scheme": parts.scheme}


# --- files ---------------------------------------------------------------------------------------


def read_file_source(
    raw: str,
    *,
    aws_conn_id: str = "aws_default",
    roots: Sequence[str] | None = None,
    declared: str | None = None,
) -> pd.DataFrame:
    """Check ``raw`` against the allowed roots, then read it (S3 through ``aws_conn_id``).

    ``declared``: the spec's own source path (its folder is allowed when ``raw`` is exactly it).
    A refused path, a missing or unparsable file fail the task for good (:class:`BadDataError`);
    unreachable storage raises the retryable :class:`SourceUnavailableError`.
    """
    from cmms_pm.sources import read_table, resolve_file_source

    with source_errors_fail_the_task():
        location = resolve_file_source(raw, roots=roots, declared=declared)
        filesystem = s3_filesystem(aws_conn_id) if location.scheme == "s3" else None
        return read_table(location, filesystem=filesystem)


# --- SQL -----------------------------------------------------------------------------------------


def read_sql_source(source: Mapping[str, Any], *, interval_start: str, interval_end: str) -> pd.DataFrame:
    """The rows of a spec's SQL source for one data interval, through the connection's SQL hook.

    ``source`` has ``conn_id`` and either ``table`` + ``timestamp_column`` (rows with
    ``start <= timestamp < end``) or ``query`` using ``%(data_interval_start)s`` /
    ``%(data_interval_end)s`` (write a literal ``%`` as ``%%``). Values are always bound as
    parameters in the driver's own paramstyle, never formatted into the SQL.
    """
    from cmms_pm.spec import CONN_ID_PATTERN, SQL_IDENTIFIER_PATTERN

    conn_id = str(source.get("conn_id", ""))
    if not re.match(CONN_ID_PATTERN, conn_id):
        raise SourceConfigurationError(f"SQL source: conn_id {conn_id!r} is not a valid connection id")
    table, query = source.get("table"), source.get("query")
    if (table is None) == (query is None):
        raise SourceConfigurationError(f"SQL source of connection {conn_id!r}: give either table or query")
    if table is not None:
        timestamp = source.get("timestamp_column")
        for field, name in (("table", table), ("timestamp_column", timestamp)):
            if not isinstance(name, str) or not re.match(SQL_IDENTIFIER_PATTERN, name):
                raise SourceConfigurationError(
                    f"SQL source of connection {conn_id!r}: {field} {name!r} is not a plain SQL identifier "
                    "(letters, digits and '_', optionally schema.table)"
                )
    what = f"table {table!r}" if table is not None else "query"
    start, end = _interval(interval_start, interval_end)
    hook = _sql_hook(conn_id)
    if table is not None:
        column = source["timestamp_column"]  # a plain identifier: checked above
        sql = (
            f"SELECT * FROM {_quote(hook, table)} WHERE {_quote(hook, column)} >= %(data_interval_start)s "
            f"AND {_quote(hook, column)} < %(data_interval_end)s"
        )
    else:
        sql = str(query)
    style = _paramstyle(hook, conn_id)
    values = _interval_values(hook, start, end)
    statement, parameters = _bind(sql, style, values, conn_id=conn_id)
    if not parameters:
        log.warning(
            "the query of connection %r ignores the data interval: every run reads the same rows", conn_id
        )
    try:
        frame = hook.get_df(statement, parameters=parameters)
    except Exception as err:  # each driver has its own exception tree
        error, shows_driver_text = _sql_error(err, conn_id=conn_id, what=what)
        # Chain the driver's error only when its text is shown anyway: it may quote data otherwise.
        raise error from (err if shows_driver_text else None)
    from cmms_pm.frame_checks import duplicate_columns_problem

    duplicates = duplicate_columns_problem(frame.columns)
    if duplicates:
        raise BadDataError(f"SQL source of connection {conn_id!r} ({what}) returned {duplicates}")
    log.info(
        "read %d rows, %d columns from connection %r (%s)", len(frame), len(frame.columns), conn_id, what
    )
    return frame


def _interval(interval_start: str, interval_end: str) -> tuple[datetime, datetime]:
    bounds = []
    for name, text in (("interval_start", interval_start), ("interval_end", interval_end)):
        try:
            moment = datetime.fromisoformat(str(text))
        except ValueError:
            raise SourceConfigurationError(f"{name} {text!r} is not an ISO-8601 timestamp") from None
        bounds.append(moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC))
    if bounds[0] > bounds[1]:
        raise SourceConfigurationError(
            f"data interval starts after it ends: {interval_start} > {interval_end}"
        )
    return bounds[0], bounds[1]


def _interval_values(hook: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """The bounds as the database compares them.

    SQLite has no timestamp type: it compares text, so the bounds are UTC text in its own format
    (what ``CURRENT_TIMESTAMP`` and pandas' ``to_sql`` write). Other databases get ISO-8601 text with
    the UTC offset, which they read as a ``timestamptz`` instant or, for a column without time zone,
    as that UTC wall time.
    """
    if hook.conn_type == "sqlite":
        return {
            "data_interval_start": start.replace(tzinfo=None).isoformat(sep=" "),
            "data_interval_end": end.replace(tzinfo=None).isoformat(sep=" "),
        }
    return {"data_interval_start": start.isoformat(), "data_interval_end": end.isoformat()}


def _sql_hook(conn_id: str) -> Any:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    conn = _connection(conn_id, "read its SQL source")
    try:
        hook = conn.get_hook()
    except Exception as err:  # unknown conn type, provider not installed
        raise SourceConfigurationError(
            f"connection {conn_id!r} (type {conn.conn_type!r}) has no usable hook: {err}"
        ) from err
    if not isinstance(hook, DbApiHook):
        raise SourceConfigurationError(
            f"connection {conn_id!r} (type {conn.conn_type!r}) is not a SQL connection (no common-sql hook)"
        )
    return hook


def _quote(hook: Any, identifier: str) -> str:
    """Each part of a validated ``[schema.]name`` quoted the connection's way (default ``"name"``)."""
    return ".".join(hook.escape_word_format.format(part) for part in identifier.split("."))


def _paramstyle(hook: Any, conn_id: str) -> str:
    style = _PARAMSTYLES.get(hook.conn_type)
    if style is None:
        raise SourceConfigurationError(
            f"connection {conn_id!r} (type {hook.conn_type!r}): SQL sources know the parameter style of "
            f"{sorted(_PARAMSTYLES)} connections; add this driver's to "
            "cmms_mlflow.integrations.source_access._PARAMSTYLES"
        )
    return style


def _bind(sql: str, style: str, values: Mapping[str, Any], *, conn_id: str) -> tuple[str, Any]:
    """``sql`` written with ``%(name)s`` placeholders and ``%%``, rewritten for ``style``.

    Returns the statement and the parameters it uses. A pyformat driver reads ``%%`` as ``%`` itself;
    for a named one (sqlite3) it is rewritten, and no parameters are passed when none is used.
    """
    used: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        if match.group(0) == "%":
            raise SourceConfigurationError(
                f"the query of connection {conn_id!r} has a lone '%': write a literal % as %%"
            )
        if name is None:
            return "%%"
        if name not in values:
            raise SourceConfigurationError(
                f"the query of connection {conn_id!r} uses %({name})s; the parameters are "
                f"{list(INTERVAL_PARAMETERS)}"
            )
        used.append(name)
        return f"%({name})s" if style == "pyformat" else f":{name}"

    statement = _PLACEHOLDER.sub(placeholder, sql)
    parameters = {name: values[name] for name in used}
    if style == "pyformat":
        # Always a mapping, even empty, so the driver always reads %% as % (SQLAlchemy passes one anyway).
        return statement, parameters
    return statement.replace("%%", "%"), parameters or None


def _sqlstate(err: BaseException) -> tuple[BaseException, str]:
    """The driver's own exception and its SQLSTATE ("" if none).

    pandas wraps it in its ``DatabaseError`` (whose text quotes the SQL and the driver's message),
    SQLAlchemy in a ``DBAPIError`` with ``.orig``: follow the chain down to the driver.
    """
    current: BaseException | None = err
    deepest = err
    for _ in range(10):  # chains are short; never loop on a cycle
        if current is None:
            break
        deepest = current
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if state:
            return current, str(state)
        current = getattr(current, "orig", None) or current.__cause__
    return deepest, ""


def _sql_error(err: BaseException, *, conn_id: str, what: str) -> tuple[Exception, bool]:
    """A typed error naming the connection and table, and whether it shows the driver's text.

    The text is shown only when it cannot carry data (connection problems, unknown table or column,
    syntax); otherwise the driver's class and SQLSTATE, since a data error may quote a value.
    """
    orig, state = _sqlstate(err)
    kind = type(orig).__name__
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else kind
    sqlite = type(orig).__module__.startswith("sqlite3")
    where = f"SQL source of connection {conn_id!r} ({what})"
    unavailable = state[:2] in ("08", "53", "57", "40") or (sqlite and re.search(r"locked|busy", text))
    if unavailable or (not state and not sqlite and kind in ("OperationalError", "InterfaceError")):
        return SourceUnavailableError(f"{where} is unavailable: {kind}: {text}"), True
    # 42: unknown table/column, syntax; a ProgrammingError with no SQLSTATE is the client's own
    # complaint about the statement (psycopg: a stray placeholder).
    rejected = state.startswith("42") or (not state and not sqlite and kind == "ProgrammingError")
    if rejected or (sqlite and re.search(r"no such (table|column)|syntax error", text)):
        return SourceConfigurationError(f"{where} was rejected by the database: {kind}: {text}"), True
    detail = f" (SQLSTATE {state})" if state else ""
    return BadDataError(f"{where} failed: {kind}{detail}"), False


# --- time-series tables --------------------------------------------------------------------------

#: Connection types whose database computes a time-series spec's features itself (the PostgreSQL
#: dialect of cmms_pm.timeseries.sql; TimescaleDB is PostgreSQL).
PUSHDOWN_CONN_TYPES = ("postgres",)


@contextmanager
def open_timeseries(config: TimeSeriesConfig, *, as_of: int, read_from: int | None) -> Iterator[Any]:
    """``(engine, sources, local)`` of a time-series spec's tables, closed on exit.

    File tables (local or ``s3://``, each through its own ``aws_conn_id``) are read in place by an
    embedded DuckDB, inside the allowed roots; SQL tables must all live in the telemetry's
    connection, whose database then runs the generated query (pushdown) and sends back only the
    feature table. ``local`` is the DuckDB session that holds the feature table either way.
    """
    from cmms_pm.timeseries.build import file_sources, sql_sources
    from cmms_pm.timeseries.engine import DbApiEngine, DuckDBEngine

    local = DuckDBEngine()
    try:
        telemetry = config.telemetry.source
        if telemetry["kind"] == "sql":
            conn_id = str(telemetry["conn_id"])
            hook = _sql_hook(conn_id)
            if hook.conn_type not in PUSHDOWN_CONN_TYPES:
                raise SourceConfigurationError(
                    f"connection {conn_id!r} (type {hook.conn_type!r}): time-series features are pushed "
                    f"down to {list(PUSHDOWN_CONN_TYPES)} databases; put the tables in files instead"
                )

            def typed(err: Exception) -> Exception:
                return _sql_error(err, conn_id=conn_id, what="time-series feature query")[0]

            engine: Any = DbApiEngine(hook.get_conn, label=f"connection {conn_id!r}", on_error=typed)
            sources = sql_sources(config, engine)
        else:
            engine = local
            sources = file_sources(
                config,
                local,
                as_of=as_of,
                read_from=read_from if read_from is not None else 0,
                filesystem_for=lambda source: s3_filesystem(source.get("aws_conn_id", "aws_default")),
            )
        yield engine, sources, local
    finally:
        local.close()
