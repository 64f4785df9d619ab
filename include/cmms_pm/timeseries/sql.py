"""One SQL generator for the feature table, in two dialects: DuckDB (files) and PostgreSQL (pushdown).

The query turns raw tables into one row per (entity, snapshot time) with point-in-time features and
a forward-looking label:

1. **normalize** each table: entity as text, time as whole epoch seconds (UTC), signals as numbers;
2. **bucket** every row by the bucket that ends at or after it (``k = ceil(t / r)``, ``r`` the
   :attr:`~cmms_pm.timeseries.config.TimeSeriesConfig.resolution`): per (entity, bucket), exact
   integer sums of the readings scaled to micro-units (so the result does not depend on how the
   engine splits the work: the same data gives the same bytes), minima, maxima, the newest value,
   alarm counts per code, the newest maintenance and failure per component, and the label's failures;
3. **windows** over the buckets of each entity (``RANGE`` frames on the bucket number, so missing
   buckets are fine): a feature at snapshot ``t`` reads the buckets ending in ``(t - w, t]``, i.e.
   rows stamped ``<= t``; the label counts failures in the buckets of ``(t, t + H]``;
4. **snapshots**: buckets ending on the cadence with a reading since the previous snapshot
   (training), or one marker row per entity at the scoring time (scoring).

Every identifier comes from a validated spec and is quoted here (:meth:`Dialect.ident`); every value
is a whole number computed here or a validated code quoted as a literal (:meth:`Dialect.literal`).
Nothing from a table's content ever becomes SQL text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cmms_pm.timeseries.config import SNAPSHOT_TIME, TELEMETRY_AGE, TimeSeriesConfig, duration_text

#: Readings are summed as whole micro-units: exact (and so order-independent) sums.
SCALE = 1_000_000
#: Aux columns of the feature table (never features): readings since the previous snapshot, and
#: the epoch second of the newest reading at or before the snapshot.
READINGS = "__readings_in_cadence"
LAST_READING = "__last_reading_epoch"
LABELLED = "__label_mature"


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines; everything else is one text."""

    name: str
    wide_int: str  # exact integer type wide enough for sums of squares
    text: str
    double: str

    def ident(self, name: str) -> str:
        """A quoted identifier; a name with control characters was refused by the spec already."""
        if any(ord(char) < 32 for char in name):
            raise ValueError(f"identifier {name!r} has control characters")
        return '"' + name.replace('"', '""') + '"'

    def literal(self, value: str) -> str:
        if any(ord(char) < 32 for char in value):
            raise ValueError(f"literal {value!r} has control characters")
        return "'" + value.replace("'", "''") + "'"

    def epoch_seconds(self, expression: str) -> str:
        """Whole epoch seconds of a time value (text with or without offset, timestamp, date)."""
        if self.name == "duckdb":
            return f"CAST(floor(epoch(TRY_CAST({expression} AS TIMESTAMPTZ))) AS BIGINT)"
        return f"CAST(floor(extract(epoch FROM CAST({expression} AS timestamptz))) AS BIGINT)"

    def number(self, expression: str) -> str:
        if self.name == "duckdb":
            return f"TRY_CAST({expression} AS DOUBLE)"
        return f"CAST({expression} AS double precision)"

    def div_ceil(self, expression: str, divisor: int) -> str:
        if self.name == "duckdb":
            return f"CAST(ceil({expression} / {divisor}.0) AS BIGINT)"
        return f"CAST(ceil({expression} / {divisor}.0) AS bigint)"

    def last_by(self, value: str, time: str, over: str = "") -> str:
        """The ``value`` of the row with the largest ``time`` (rows with a NULL time are skipped)."""
        if self.name == "duckdb":
            return f"arg_max({value}, {time}){over}"
        pair = f"ARRAY[CAST({time} AS double precision), CAST({value} AS double precision)]"
        return f"(max(CASE WHEN {time} IS NOT NULL THEN {pair} END){over})[2]"

    def timestamp(self, epoch_expression: str) -> str:
        """A UTC timestamp (without time zone) from epoch seconds."""
        if self.name == "duckdb":
            return f"make_timestamp(CAST({epoch_expression} AS BIGINT) * 1000000)"
        return f"(TIMESTAMP 'epoch' + CAST({epoch_expression} AS bigint) * INTERVAL '1 second')"

    def shard(self, expression: str, shards: int) -> str:
        """A stable bucket number in ``[0, shards)`` of a text value."""
        if self.name == "duckdb":
            return f"(hash({expression}) % {int(shards)})"
        return f"(abs(hashtext({expression})::bigint) % {int(shards)})"

    def real(self, expression: str) -> str:
        """An exact (wide integer) expression as a double: the one rounding, at the very end."""
        return f"CAST({expression} AS {self.double})"

    def greatest(self, *expressions: str) -> str:
        return f"greatest({', '.join(expressions)})"


DUCKDB = Dialect(name="duckdb", wide_int="HUGEINT", text="VARCHAR", double="DOUBLE")
POSTGRES = Dialect(name="postgres", wide_int="numeric", text="text", double="double precision")
DIALECTS = {"duckdb": DUCKDB, "postgres": POSTGRES}


@dataclass(frozen=True)
class Relations:
    """The FROM item of each table (a quoted table name, or a DuckDB table function call)."""

    telemetry: str
    failures: str
    maintenance: str | None = None
    alarms: str | None = None
    assets: str | None = None


@dataclass(frozen=True)
class Snapshots:
    """Which snapshots a query builds, in epoch seconds.

    ``as_of``: nothing stamped later is read (the run's data interval end, or the scoring time).
    Training: snapshots on the cadence in ``[start, end]`` with a reading since the previous one.
    Scoring (``latest``): one row per entity at ``end`` (a snapshot time), whatever its readings.
    """

    as_of: int
    start: int
    end: int
    latest: bool = False


def normalized(config: TimeSeriesConfig, relations: Relations, dialect: Dialect) -> dict[str, str]:
    """``{table: SELECT ...}``: each source as (entity text, t epoch seconds, its columns), ready for
    the checks and the feature query. Raw column names appear only here, quoted."""
    q = dialect.ident
    queries = {}
    tel = config.telemetry
    signals = ", ".join(f"{dialect.number(q(signal))} AS v{i}" for i, signal in enumerate(config.signals))
    queries["telemetry"] = (
        f"SELECT CAST({q(tel.entity)} AS {dialect.text}) AS entity, "
        f"{dialect.epoch_seconds(q(tel.time_column))} AS t, {signals} FROM {relations.telemetry}"
    )
    fail = config.failures
    component = (
        f"CAST({q(config.failure_component)} AS {dialect.text})" if config.failure_component else "NULL"
    )
    queries["failures"] = (
        f"SELECT CAST({q(fail.entity)} AS {dialect.text}) AS entity, "
        f"{dialect.epoch_seconds(q(fail.time_column))} AS t, {component} AS component "
        f"FROM {relations.failures}"
    )
    if config.maintenance is not None and relations.maintenance:
        maint = config.maintenance
        component = (
            f"CAST({q(config.maintenance_component)} AS {dialect.text})"
            if config.maintenance_component
            else "NULL"
        )
        queries["maintenance"] = (
            f"SELECT CAST({q(maint.entity)} AS {dialect.text}) AS entity, "
            f"{dialect.epoch_seconds(q(maint.time_column))} AS t, {component} AS component "
            f"FROM {relations.maintenance}"
        )
    if config.alarms is not None and config.alarm_code is not None and relations.alarms:
        alarms = config.alarms  # (the spec's schema requires code_column with alarms)
        queries["alarms"] = (
            f"SELECT CAST({q(alarms.entity)} AS {dialect.text}) AS entity, "
            f"{dialect.epoch_seconds(q(alarms.time_column))} AS t, "
            f"CAST({q(config.alarm_code)} AS {dialect.text}) AS code FROM {relations.alarms}"
        )
    if config.assets is not None and relations.assets:
        assets = config.assets
        columns = [f"CAST({q(assets.entity)} AS {dialect.text}) AS entity"]
        columns += [f"CAST({q(c)} AS {dialect.text}) AS {q('a_' + c)}" for c in config.asset_categorical]
        columns += [f"{dialect.number(q(c))} AS {q('a_' + c)}" for c in config.asset_numeric]
        if config.install_date:
            columns.append(f"{dialect.epoch_seconds(q(config.install_date))} AS installed")
        queries["assets"] = f"SELECT {', '.join(columns)} FROM {relations.assets}"
    return queries


def feature_query(
    config: TimeSeriesConfig,
    relations: Relations,
    snapshots: Snapshots,
    dialect: Dialect,
    *,
    shard: tuple[int, int] = (0, 1),
) -> str:
    """The whole feature table (see the module docstring) as one SELECT; with ``shard=(i, n)`` only
    the entities whose hash is ``i`` modulo ``n`` (windows never cross entities: the n shards'
    rows together are the whole table)."""
    q = dialect.ident
    r = config.resolution
    sources = normalized(config, relations, dialect)
    read_from = snapshots.start - config.lookback
    as_of = snapshots.as_of
    n_signals = len(config.signals)
    aggregates = set(config.aggregates)
    need_sq = "std" in aggregates
    need_slope = "slope" in aggregates
    # Slope times are seconds from the snapshot range's end: small numbers, exact products.
    origin = snapshots.end
    wide = dialect.wide_int
    label_components = config.label_components

    part, shards = shard
    mine = "" if shards == 1 else f" AND {dialect.shard('entity', shards)} = {int(part)}"
    parts = [f"src_tel AS ({sources['telemetry']})", f"src_fail AS ({sources['failures']})"]
    unions = []
    # -- 2. one row per (entity, bucket) over every source
    tel_cols = ["0 AS src", "entity", "t"]
    tel_cols += [f"v{i}" for i in range(n_signals)]
    blank_signals = [f"CAST(NULL AS {dialect.double}) AS v{i}" for i in range(n_signals)]
    tel_cols += [f"CAST(NULL AS {dialect.text}) AS tag"]
    unions.append(f"SELECT {', '.join(tel_cols)} FROM src_tel WHERE t > {read_from} AND t <= {as_of}{mine}")
    unions.append(
        f"SELECT 3 AS src, entity, t, {', '.join(blank_signals)}, component AS tag "
        f"FROM src_fail WHERE t <= {as_of}{mine}"
    )
    if "maintenance" in sources:
        parts.append(f"src_maint AS ({sources['maintenance']})")
        unions.append(
            f"SELECT 2 AS src, entity, t, {', '.join(blank_signals)}, component AS tag "
            f"FROM src_maint WHERE t <= {as_of}{mine}"
        )
    if "alarms" in sources:
        parts.append(f"src_alarm AS ({sources['alarms']})")
        unions.append(
            f"SELECT 1 AS src, entity, t, {', '.join(blank_signals)}, code AS tag "
            f"FROM src_alarm WHERE t > {read_from} AND t <= {as_of}{mine}"
        )
    if snapshots.latest:
        # One marker per entity with a reading in the lookback, at the scoring snapshot.
        unions.append(
            f"SELECT DISTINCT 4 AS src, entity, {snapshots.end} AS t, {', '.join(blank_signals)}, "
            f"CAST(NULL AS {dialect.text}) AS tag FROM src_tel WHERE t > {read_from} AND t <= {as_of}{mine}"
        )
    parts.append("rows_all AS (" + " UNION ALL ".join(unions) + ")")

    bucket = ["entity", f"{dialect.div_ceil('t', r)} AS k"]
    bucket.append("count(*) FILTER (WHERE src = 0) AS n_any")
    bucket.append("max(t) FILTER (WHERE src = 0) AS lt_any")
    for i in range(n_signals):
        v = f"v{i}"
        x = f"CAST(round({v} * {SCALE}) AS BIGINT)"
        bucket.append(f"count({v}) AS n{i}")
        # Exact integer sums all the way through the windows (wide integers): the result cannot
        # depend on the order in which an engine adds them up (threads, shards, positions).
        bucket.append(f"CAST(sum({x}) AS {wide}) AS s{i}")
        if need_sq:
            bucket.append(f"CAST(sum(CAST({x} AS {wide}) * {x}) AS {wide}) AS q{i}")
        if need_slope:
            tau = f"(t - {origin})"
            bucket.append(f"CAST(sum({tau}) FILTER (WHERE {v} IS NOT NULL) AS {wide}) AS ts{i}")
            bucket.append(
                f"CAST(sum(CAST({tau} AS {wide}) * {tau}) FILTER (WHERE {v} IS NOT NULL) AS {wide}) AS tt{i}"
            )
            bucket.append(f"CAST(sum(CAST({tau} AS {wide}) * {x}) AS {wide}) AS tx{i}")
        if {"min"} & aggregates:
            bucket.append(f"min({v}) AS lo{i}")
        if {"max"} & aggregates:
            bucket.append(f"max({v}) AS hi{i}")
        bucket.append(f"max(t) FILTER (WHERE {v} IS NOT NULL) AS lt{i}")
        bucket.append(f"{dialect.last_by(v, f'CASE WHEN {v} IS NOT NULL THEN t END')} AS la{i}")
    for j, code in enumerate(config.alarm_codes if "alarms" in sources else ()):
        bucket.append(f"count(*) FILTER (WHERE src = 1 AND tag = {dialect.literal(code)}) AS al{j}")
    if "maintenance" in sources:
        bucket.append("max(t) FILTER (WHERE src = 2) AS m_any")
        for j, component in enumerate(config.maintenance_components):
            bucket.append(f"max(t) FILTER (WHERE src = 2 AND tag = {dialect.literal(component)}) AS m{j}")
    bucket.append("max(t) FILTER (WHERE src = 3) AS f_any")
    for j, component in enumerate(config.components):
        bucket.append(f"max(t) FILTER (WHERE src = 3 AND tag = {dialect.literal(component)}) AS f{j}")
    if label_components:
        listed = ", ".join(dialect.literal(c) for c in label_components)
        bucket.append(f"count(*) FILTER (WHERE src = 3 AND tag IN ({listed})) AS fl")
    else:
        bucket.append("count(*) FILTER (WHERE src = 3) AS fl")
    bucket.append("count(*) FILTER (WHERE src = 4) AS mark")
    parts.append(f"buckets AS (SELECT {', '.join(bucket)} FROM rows_all GROUP BY 1, 2)")

    # -- 3. windows over each entity's buckets
    windows: dict[str, str] = {
        "cum": "PARTITION BY entity ORDER BY k RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    }

    def frame(seconds: int) -> str:
        name = f"w{seconds}"
        windows[name] = (
            f"PARTITION BY entity ORDER BY k RANGE BETWEEN {seconds // r - 1} PRECEDING AND CURRENT ROW"
        )
        return name

    windows["label"] = (
        f"PARTITION BY entity ORDER BY k RANGE BETWEEN 1 FOLLOWING AND {config.horizon // r} FOLLOWING"
    )
    cadence_frame = frame(config.cadence)
    win = [
        "entity",
        "k",
        "mark",
        f"sum(n_any) OVER {cadence_frame} AS readings",
        "max(lt_any) OVER cum AS lt_last",
    ]
    for i in range(n_signals):
        win.append(f"{dialect.last_by(f'la{i}', f'lt{i}', ' OVER cum')} AS last{i}")
        for seconds in config.windows:
            name = frame(seconds)
            suffix = f"{i}_{seconds}"
            win.append(f"sum(n{i}) OVER {name} AS n{suffix}")
            win.append(f"sum(s{i}) OVER {name} AS s{suffix}")
            if need_sq:
                win.append(f"sum(q{i}) OVER {name} AS q{suffix}")
            if need_slope:
                win += [
                    f"sum(ts{i}) OVER {name} AS ts{suffix}",
                    f"sum(tt{i}) OVER {name} AS tt{suffix}",
                    f"sum(tx{i}) OVER {name} AS tx{suffix}",
                ]
            if "min" in aggregates:
                win.append(f"min(lo{i}) OVER {name} AS lo{suffix}")
            if "max" in aggregates:
                win.append(f"max(hi{i}) OVER {name} AS hi{suffix}")
    for j in range(len(config.alarm_codes) if "alarms" in sources else 0):
        for seconds in config.alarm_windows:
            win.append(f"sum(al{j}) OVER {frame(seconds)} AS al{j}_{seconds}")
    if "maintenance" in sources:
        win.append("max(m_any) OVER cum AS m_any")
        win += [f"max(m{j}) OVER cum AS m{j}" for j in range(len(config.maintenance_components))]
    win.append("max(f_any) OVER cum AS f_any")
    win += [f"max(f{j}) OVER cum AS f{j}" for j in range(len(config.components))]
    win.append("sum(fl) OVER label AS fl_ahead")
    window_clause = ", ".join(f"{name} AS ({definition})" for name, definition in windows.items())
    parts.append(f"windowed AS (SELECT {', '.join(win)} FROM buckets WINDOW {window_clause})")

    # -- 4. snapshots and the final columns
    t_snap = f"(w.k * {r})"
    out = [f"w.entity AS {q(config.entity)}", f"{dialect.timestamp(t_snap)} AS {q(SNAPSHOT_TIME)}"]
    kinds = config.feature_kinds()
    cap_hours = config.time_since_cap / 3600
    names = iter(config.signal_features())
    longest = config.windows[-1]
    for i in range(n_signals):
        last = f"w.last{i}"
        real = dialect.real
        long_sum, long_count = real(f"w.s{i}_{longest}"), real(f"w.n{i}_{longest}")
        baseline = f"COALESCE({long_sum} / NULLIF({long_count}, 0) / {SCALE}, {last})"
        for seconds in config.windows:
            suffix = f"{i}_{seconds}"
            n, s = f"w.n{suffix}", f"w.s{suffix}"
            mean = f"COALESCE({real(s)} / NULLIF({real(n)}, 0) / {SCALE}, {last})"
            for aggregate in config.aggregates:
                if aggregate == "last" or (aggregate == "delta" and seconds == longest):
                    continue
                name = next(names)
                if aggregate == "mean":
                    value = mean
                elif aggregate == "delta":
                    value = f"({mean} - {baseline})"
                elif aggregate == "std":
                    variance = f"{real(f'{n} * w.q{suffix} - {s} * {s}')} / {real(f'{n} * ({n} - 1)')}"
                    value = (
                        f"CASE WHEN {n} >= 2 THEN sqrt({dialect.greatest(variance, '0')}) / {SCALE} "
                        "ELSE 0 END"
                    )
                elif aggregate == "slope":
                    numerator = f"({n} * w.tx{suffix} - w.ts{suffix} * {s})"
                    denominator = f"({n} * w.tt{suffix} - w.ts{suffix} * w.ts{suffix})"
                    value = (
                        f"CASE WHEN {n} >= 2 AND {denominator} > 0 "
                        f"THEN {real(numerator)} / {real(denominator)} * 3600.0 / {SCALE} ELSE 0 END"
                    )
                elif aggregate == "min":
                    value = f"COALESCE(w.lo{suffix}, {last})"
                else:
                    value = f"COALESCE(w.hi{suffix}, {last})"
                out.append(f"CAST({value} AS {dialect.double}) AS {q(name)}")
        if "last" in aggregates:
            out.append(f"CAST({last} AS {dialect.double}) AS {q(next(names))}")

    def since(column: str) -> str:
        hours = f"({t_snap} - {column}) / 3600.0"
        return f"CAST(COALESCE(least({hours}, {cap_hours}), {cap_hours}) AS {dialect.double})"

    since_names = iter(config.since_features())
    if "maintenance" in config.time_since and "maintenance" in sources:
        out.append(f"{since('w.m_any')} AS {q(next(since_names))}")
        out += [
            f"{since(f'w.m{j}')} AS {q(next(since_names))}" for j in range(len(config.maintenance_components))
        ]
    if "failures" in config.time_since:
        out.append(f"{since('w.f_any')} AS {q(next(since_names))}")
        out += [f"{since(f'w.f{j}')} AS {q(next(since_names))}" for j in range(len(config.components))]
    joins = ""
    if "assets" in sources:
        parts.append(f"src_assets AS ({sources['assets']})")
        joins = " LEFT JOIN src_assets a ON a.entity = w.entity"
        if config.install_date:
            out.append(
                f"CAST(({t_snap} - a.installed) / 86400.0 AS {dialect.double}) AS {q('asset_age_days')}"
            )
        out += [f"a.{q('a_' + c)} AS {q(c)}" for c in config.asset_numeric]
        out += [f"a.{q('a_' + c)} AS {q(c)}" for c in config.asset_categorical]
    if "alarms" in sources:
        alarm_names = iter(config.alarm_features())
        for seconds in config.alarm_windows:
            for j in range(len(config.alarm_codes)):
                out.append(f"CAST(COALESCE(w.al{j}_{seconds}, 0) AS BIGINT) AS {q(next(alarm_names))}")
    mature = f"({t_snap} + {config.horizon} <= {as_of})"
    out.append(
        f"CASE WHEN {mature} THEN CAST(COALESCE(w.fl_ahead, 0) > 0 AS INTEGER) END "
        f"AS {q(config.label_column)}"
    )
    out.append(f"CAST(COALESCE(w.readings, 0) AS BIGINT) AS {q(READINGS)}")
    out.append(f"w.lt_last AS {q(LAST_READING)}")
    out.append(f"CAST(({t_snap} - w.lt_last) / 3600.0 AS {dialect.double}) AS {q(TELEMETRY_AGE)}")
    if snapshots.latest:
        where = "w.mark > 0"
    else:
        cadence_buckets = config.cadence // r
        where = (
            f"w.k % {cadence_buckets} = 0 AND w.k >= {snapshots.start // r} AND w.k <= {snapshots.end // r} "
            "AND w.readings > 0"
        )
    del kinds
    body = "WITH " + ",\n".join(parts)
    # No ORDER BY: the engine streams the rows out as they come (an ordered result would hold the
    # whole feature table back); whoever writes them in order sorts them.
    return f"{body}\nSELECT {', '.join(out)}\nFROM windowed w{joins}\nWHERE {where}"


def snapshot_floor(epoch: int, cadence: int) -> int:
    """The newest snapshot time at or before ``epoch`` (snapshots are on the cadence from the epoch)."""
    return (epoch // cadence) * cadence


def snapshot_ceil(epoch: int, cadence: int) -> int:
    return -((-epoch) // cadence) * cadence


def describe_windows(config: TimeSeriesConfig) -> str:
    """``windows 6h, 24h, 7d on 6h buckets``: for logs and the scaffold's explanation."""
    windows = ", ".join(duration_text(w) for w in config.windows)
    return f"windows {windows} on {duration_text(config.resolution)} buckets"


def column_list(names: Sequence[str], dialect: Dialect) -> str:
    return ", ".join(dialect.ident(name) for name in names)
