"""``make new-model TELEMETRY=... FAILURES=...``: a time-series spec inferred from raw files.

Reads the telemetry and the event logs (CSV or Parquet files, or folders of them) with DuckDB and
infers, each with the reason it prints: the entity and time columns (unless given), the signals, the
reading interval, the components, maintenance kinds and alarm codes, the asset attributes and
install date; then proposes a snapshot cadence and windows from the interval and the label horizon
(``HORIZON``, default 48h). The spec is written with :mod:`cmms_pm.scaffold`'s checks (round trip,
loads with :func:`cmms_pm.spec.load_spec`, replaced in one step).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmms_pm.exceptions import DataSourceError, DataValidationError, ScaffoldError
from cmms_pm.inference import looks_like_id_name
from cmms_pm.spec import ESTIMATOR_KINDS, TS_VALUE_PATTERN
from cmms_pm.timeseries.config import DURATION_PATTERN, duration_seconds, duration_text

DEFAULT_HORIZON = "48h"
#: Snapshot cadences the scaffold chooses from (the largest that is at most an eighth of the horizon).
CADENCES = ("1h", "3h", "6h", "12h", "1d")
#: A text column with at most this many values names components, kinds or codes.
MAX_CODES = 50
#: Above this many snapshots the scaffold proposes histogram gradient boosting.
LARGE_SNAPSHOTS = 100_000
_ENTITY_WORDS = {"asset", "machine", "equipment", "unit", "device", "vehicle", "pump", "turbine"}
_TIME_WORDS = {"time", "timestamp", "datetime", "date", "ts", "at", "when"}
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_TIME_TYPES = ("TIMESTAMP", "DATE")
_NUMBER_TYPES = ("DOUBLE", "FLOAT", "REAL", "DECIMAL", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT")


@dataclass
class Profile:
    """One file (or folder) as read: where it is, its columns and types, rows."""

    role: str
    path: Path
    relation: str
    types: dict[str, str]
    rows: int


@dataclass
class TimeSeriesScaffold:
    """What :func:`scaffold_timeseries` read, inferred and wrote, with the reason for each choice."""

    name: str
    spec_path: Path
    values: dict[str, Any]
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    notes: list[str] = field(default_factory=list)
    text: str = ""


def _words(name: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(name)}


def scaffold_timeseries(
    name: str,
    *,
    telemetry: str,
    failures: str,
    maintenance: str | None = None,
    alarms: str | None = None,
    assets: str | None = None,
    entity: str | None = None,
    time: str | None = None,
    horizon: str | None = None,
    estimator: str | None = None,
    models_dir: str | None = None,
    force: bool = False,
) -> TimeSeriesScaffold:
    """Infer a time-series spec from raw files and write ``<models dir>/<name>.yaml``."""
    from cmms_pm import spec_writer
    from cmms_pm.spec import models_dir as default_models_dir
    from cmms_pm.timeseries.engine import DuckDBEngine

    spec_writer.check_name(name)
    folder = Path(models_dir) if models_dir is not None else default_models_dir()
    spec_path = folder / f"{name}.yaml"
    if spec_path.exists() and not force:
        raise ScaffoldError(f"{spec_path} exists; review or remove it, or replace it with --force (FORCE=1)")
    spec_writer.check_model_name_free(name, folder, spec_path)
    horizon = horizon or DEFAULT_HORIZON
    if not re.fullmatch(DURATION_PATTERN, horizon):
        raise ScaffoldError(f"horizon {horizon!r} is not a duration like 24h, 48h or 7d")
    if estimator is not None and estimator not in ESTIMATOR_KINDS:
        raise ScaffoldError(f"estimator {estimator!r} is not one of {list(ESTIMATOR_KINDS)}")
    result = TimeSeriesScaffold(name=name, spec_path=spec_path, values={})
    paths = {"telemetry": telemetry, "failures": failures, "maintenance": maintenance, "alarms": alarms}
    paths["assets"] = assets
    with DuckDBEngine(memory_limit="1GB") as engine:
        profiles = {role: _profile(engine, role, raw) for role, raw in paths.items() if raw}
        section = _infer(engine, profiles, result, entity=entity, time=time, horizon=horizon)
        snapshots = _snapshot_estimate(engine, profiles["telemetry"], section)
    kind = estimator or ("hist_gradient_boosting" if snapshots > LARGE_SNAPSHOTS else "random_forest")
    result.reasons.append(
        (
            f"estimator {kind}",
            "as chosen (ESTIMATOR=...)"
            if estimator
            else f"about {snapshots:,} snapshots (hist_gradient_boosting above {LARGE_SNAPSHOTS:,}, "
            "else random_forest)",
        )
    )
    result.values = {
        "name": name,
        "description": f"Failure within {horizon} from raw telemetry and event logs ({Path(telemetry).name})",
        "registered_model": name,
        "experiment": name,
        "timeseries": section,
        "estimator": {"kind": kind},
    }
    result.text = render(result)
    spec_writer.check_round_trip(result.text, result.values, spec_path)
    spec_writer.write_checked(result.text, spec_path)
    return result


# --- reading ------------------------------------------------------------------------------------


def _profile(engine: Any, role: str, raw: str) -> Profile:
    """A local file or folder opened in DuckDB with its own column types (CSV types sniffed)."""
    from cmms_pm.sources import FileLocation

    path = Path(raw).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".csv", ".parquet", ".pq"))
    elif path.is_file():
        files = [path]
    else:
        raise DataSourceError(f"{role.upper()}={raw}: no such file or folder")
    if not files:
        raise DataSourceError(f"{role.upper()}={raw}: the folder holds no .csv or .parquet file")
    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) > 1 and ".csv" in suffixes:
        raise DataSourceError(f"{role.upper()}={raw}: holds both CSV and Parquet files")
    locations = [FileLocation("local", str(p.resolve()), str(p), p.suffix.lower()) for p in files]
    listed = "[" + ", ".join(engine.dialect.literal(f.path) for f in locations) + "]"
    if ".csv" in suffixes:
        relation = f"read_csv({listed}, header = true, sample_size = 100000, hive_partitioning = false)"
    else:
        relation = f"read_parquet({listed}, union_by_name = true, hive_partitioning = false)"
    # Read once into the session (it spills past its memory limit): every question below is a scan.
    table = engine.dialect.ident(f"scaffold_{role}")
    try:
        engine.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM {relation}")
        relation = table
        types = engine.columns(relation)
        ((rows,),) = engine.rows(f"SELECT count(*) FROM {relation}")
    except Exception as err:  # DuckDB's parser errors differ per format
        raise DataSourceError(f"{role.upper()}={raw}: cannot read it ({type(err).__name__})") from None
    if rows == 0:
        raise DataValidationError(
            f"{role.upper()}={raw}: 0 rows (a header only); a spec is inferred from data"
        )
    from cmms_pm.frame_checks import duplicate_columns_problem

    duplicates = duplicate_columns_problem(types)
    if duplicates:
        raise DataValidationError(f"{role.upper()}={raw}: {duplicates}")
    return Profile(role=role, path=path, relation=relation, types=types, rows=int(rows))


def _is_time(engine: Any, profile: Profile, column: str) -> bool:
    kind = profile.types[column].upper()
    if kind.startswith(_TIME_TYPES):
        return True
    if kind != "VARCHAR":
        return False
    q = engine.dialect.ident
    ((total, parsed),) = engine.rows(
        f"SELECT count(v), count(TRY_CAST(v AS TIMESTAMPTZ)) "
        f"FROM (SELECT {q(column)} AS v FROM {profile.relation} "
        f"WHERE {q(column)} IS NOT NULL LIMIT 1000) s"
    )
    return bool(total) and parsed >= 0.95 * total


def _is_number(profile: Profile, column: str) -> bool:
    return profile.types[column].upper().startswith(_NUMBER_TYPES)


def _distinct(engine: Any, profile: Profile, column: str, limit: int = MAX_CODES + 1) -> list[Any]:
    q = engine.dialect.ident
    rows = engine.rows(
        f"SELECT DISTINCT CAST({q(column)} AS VARCHAR) AS v FROM {profile.relation} "
        f"WHERE {q(column)} IS NOT NULL ORDER BY v LIMIT {limit}"
    )
    return [row[0] for row in rows]


# --- inference -----------------------------------------------------------------------------------


def _infer(
    engine: Any,
    profiles: Mapping[str, Profile],
    result: TimeSeriesScaffold,
    *,
    entity: str | None,
    time: str | None,
    horizon: str,
) -> dict[str, Any]:
    tel = profiles["telemetry"]
    timed = [p for role, p in profiles.items() if role != "assets"]
    time = time or _infer_time(engine, tel, result)
    entity = entity or _infer_entity(engine, profiles, tel, time, result)
    for profile in profiles.values():
        if entity not in profile.types:
            raise DataValidationError(
                f"{profile.role.upper()}={profile.path}: no column {entity!r}; give ENTITY=<column> "
                f"(the asset id column of every file); its columns are {sorted(profile.types)}"
            )
    if time not in tel.types:
        raise DataValidationError(
            f"TELEMETRY={tel.path}: no column {time!r} (TIME=); columns: {sorted(tel.types)}"
        )
    section: dict[str, Any] = {"entity": entity, "time": time}
    interval = _reading_interval(engine, tel, entity, time)
    result.reasons.append(
        ("reading interval", f"{duration_text(interval)} (the median gap between an asset's readings)")
    )
    signals = [
        c for c in tel.types if c not in (entity, time) and _is_number(tel, c) and _varies(engine, tel, c)
    ]
    if not signals:
        raise DataValidationError(f"TELEMETRY={tel.path}: no numeric column besides {entity!r} and {time!r}")
    dropped = [c for c in tel.types if c not in (entity, time, *signals)]
    result.reasons.append(
        (
            f"signals {signals}",
            "the telemetry's numeric columns" + (f" (not {dropped}: text or constant)" if dropped else ""),
        )
    )
    section["telemetry"] = {"source": _source(tel.path), "signals": signals}
    for profile in timed:
        if profile.role != "telemetry" and time not in profile.types:
            own = _infer_time(engine, profile, result)
            section.setdefault(profile.role, {})["time"] = own
    failures = profiles["failures"]
    part = section.setdefault("failures", {})
    part["source"] = _source(failures.path)
    component = _code_column(
        engine, failures, entity, part.get("time", time), ("comp", "component", "part", "failure")
    )
    if component:
        values = _codes(engine, failures, component, result, "failures")
        if values:
            part.update(component_column=component, components=values)
            result.reasons.append(
                (f"failure components {values}", f"the values of {component!r} in the failures log")
            )
    part = {"source": part.pop("source"), **part}
    section["failures"] = part
    if "maintenance" in profiles:
        maint = profiles["maintenance"]
        part = {"source": _source(maint.path), **section.get("maintenance", {})}
        mtime = part.get("time", time)
        component = _code_column(engine, maint, entity, mtime, ("comp", "component", "part"))
        if component:
            values = _codes(engine, maint, component, result, "maintenance")
            if values:
                part.update(component_column=component, components=values)
        kind = _code_column(
            engine, maint, entity, mtime, ("kind", "type", "category", "class"), exclude=(component,)
        )
        if kind:
            part["kind_column"] = kind
        section["maintenance"] = part
        result.reasons.append(
            (
                "maintenance",
                f"time since the last maintenance of each component ({component!r}); kinds in {kind!r}",
            )
        )
    if "alarms" in profiles:
        alarm = profiles["alarms"]
        part = {"source": _source(alarm.path), **section.get("alarms", {})}
        code = _code_column(
            engine, alarm, entity, part.get("time", time), ("code", "error", "alarm", "event", "id")
        )
        values = _codes(engine, alarm, code, result, "alarms") if code else []
        if not values:
            raise DataValidationError(
                f"ALARMS={alarm.path}: no column of alarm codes (text with at most {MAX_CODES} values)"
            )
        part.update(code_column=code, codes=values)
        section["alarms"] = part
        result.reasons.append((f"alarm codes {values}", f"the values of {code!r}: counted per window"))
    if "assets" in profiles:
        section["assets"] = _assets(engine, profiles["assets"], entity, result)
    cadence, windows = _cadence_and_windows(interval, horizon)
    result.reasons.append(
        (
            f"snapshots every {cadence}",
            f"one per asset and {cadence}: the largest of {list(CADENCES)} within an eighth of the "
            f"horizon {horizon} and not finer than the readings",
        )
    )
    result.reasons.append(
        (f"windows {windows}", "from one snapshot to a week, each at least three readings long")
    )
    section["features"] = {"windows": windows}
    section["label"] = {"horizon": horizon}
    section["cadence"] = cadence
    result.reasons.append(
        (
            f"label failure_within_{horizon}",
            f"a failure in the {horizon} after the snapshot (HORIZON={horizon}); snapshots newer than the "
            f"data minus {horizon} have no label yet and are not trained on",
        )
    )
    return section


def _infer_time(engine: Any, profile: Profile, result: TimeSeriesScaffold) -> str:
    candidates = [c for c in profile.types if _is_time(engine, profile, c)]
    if not candidates:
        raise DataValidationError(
            f"{profile.role.upper()}={profile.path}: no timestamp column found; give TIME=<column> "
            f"(columns: {sorted(profile.types)})"
        )
    best = sorted(candidates, key=lambda c: (not (_words(c) & _TIME_WORDS), list(profile.types).index(c)))[0]
    if profile.role == "telemetry":
        why = "holds timestamps" + (
            f" (also {[c for c in candidates if c != best]})" if len(candidates) > 1 else ""
        )
        result.reasons.append((f"time column {best!r}", why))
    return best


def _infer_entity(
    engine: Any, profiles: Mapping[str, Profile], tel: Profile, time: str, result: TimeSeriesScaffold
) -> str:
    shared = [c for c in tel.types if c != time and all(c in p.types for p in profiles.values())]
    q = engine.dialect.ident
    scored = []
    for column in shared:
        if tel.types[column].upper() in ("DOUBLE", "FLOAT", "REAL"):
            continue
        ((distinct,),) = engine.rows(f"SELECT count(DISTINCT {q(column)}) FROM {tel.relation}")
        if distinct < 2 or distinct > tel.rows / 2:
            continue
        named = looks_like_id_name(column) or bool(_words(column) & _ENTITY_WORDS)
        scored.append((not named, distinct, column))
    if not scored:
        raise DataValidationError(
            f"no column names the asset in every file (shared columns: {shared}); give ENTITY=<column>"
        )
    _, distinct, best = sorted(scored)[0]
    result.reasons.append(
        (
            f"entity column {best!r}",
            f"in every file, {distinct:,} assets each with many readings"
            + (" (named like an id)" if looks_like_id_name(best) or _words(best) & _ENTITY_WORDS else ""),
        )
    )
    return best


def _reading_interval(engine: Any, tel: Profile, entity: str, time: str) -> int:
    q = engine.dialect.ident
    epoch = engine.dialect.epoch_seconds(q(time))
    ((gap,),) = engine.rows(
        f"SELECT median(d) FROM (SELECT {epoch} - lag({epoch}) "
        f"OVER (PARTITION BY {q(entity)} ORDER BY {epoch}) AS d "
        # Every reading of up to 100 assets (a sample of rows would stretch the gaps).
        f"FROM (SELECT * FROM {tel.relation} WHERE {q(entity)} IN "
        f"(SELECT DISTINCT {q(entity)} FROM {tel.relation} ORDER BY 1 LIMIT 100)) s) g WHERE d > 0"
    )
    if gap is None:
        raise DataValidationError(f"TELEMETRY={tel.path}: no asset has two readings at different times")
    return max(60, int(round(gap / 60)) * 60)


def _varies(engine: Any, profile: Profile, column: str) -> bool:
    q = engine.dialect.ident
    ((distinct,),) = engine.rows(
        f"SELECT count(DISTINCT {q(column)}) FROM (SELECT {q(column)} FROM {profile.relation} LIMIT 10000) s"
    )
    return distinct > 1


def _code_column(
    engine: Any,
    profile: Profile,
    entity: str,
    time: str,
    words: Sequence[str],
    exclude: Sequence[str | None] = (),
) -> str | None:
    """The low-cardinality text column of an event log that names codes, preferring ``words``."""
    found = []
    for column, kind in profile.types.items():
        if column in (entity, time, *exclude) or kind.upper() not in ("VARCHAR", "BIGINT", "INTEGER"):
            continue
        values = _distinct(engine, profile, column)
        if 1 <= len(values) <= MAX_CODES:
            found.append((not (_words(column) & set(words)), kind.upper() != "VARCHAR", column))
    return sorted(found)[0][2] if found else None


def _codes(engine: Any, profile: Profile, column: str, result: TimeSeriesScaffold, role: str) -> list[str]:
    values = [str(v) for v in _distinct(engine, profile, column)]
    usable = [v for v in values if re.match(TS_VALUE_PATTERN, v)]
    if len(usable) < len(values):
        result.notes.append(
            f"{role}: {len(values) - len(usable)} value(s) of {column!r} are not plain codes (letters, "
            "digits, "
            "'_.-', at most 64) and are left out"
        )
    return usable


def _assets(engine: Any, profile: Profile, entity: str, result: TimeSeriesScaffold) -> dict[str, Any]:
    part: dict[str, Any] = {"source": _source(profile.path)}
    categorical, numeric, install = [], [], None
    for column, kind in profile.types.items():
        if column == entity:
            continue
        if _is_time(engine, profile, column):
            if install is None and (
                _words(column) & {"install", "installed", "commissioned", "commission", "built", "start"}
                or "date" in _words(column)
            ):
                install = column
            continue
        if _is_number(profile, column):
            numeric.append(column)
        elif kind.upper() == "VARCHAR" and 1 < len(_distinct(engine, profile, column)) <= MAX_CODES:
            categorical.append(column)
    if categorical:
        part["categorical"] = categorical
    if numeric:
        part["numeric"] = numeric
    if install:
        part["install_date"] = install
    result.reasons.append(
        (
            "asset attributes",
            f"categorical {categorical}, numeric {numeric}"
            + (f"; age at each snapshot from {install!r}" if install else "; no install date found"),
        )
    )
    return part


def _cadence_and_windows(interval: int, horizon: str) -> tuple[str, list[str]]:
    h = duration_seconds(horizon)
    fitting = [c for c in CADENCES if duration_seconds(c) * 8 <= h and duration_seconds(c) >= interval]
    cadence = fitting[-1] if fitting else duration_text(max(interval, min(h, 3600)))
    seconds = duration_seconds(cadence)
    windows = sorted({max(seconds, 3 * interval), max(86400, 3 * interval), 7 * 86400})
    return cadence, ["24h" if w == 86400 else duration_text(w) for w in windows]


def _snapshot_estimate(engine: Any, tel: Profile, section: Mapping[str, Any]) -> int:
    q = engine.dialect.ident
    epoch = engine.dialect.epoch_seconds(q(section["time"]))
    ((assets, span),) = engine.rows(
        f"SELECT count(DISTINCT {q(section['entity'])}), max({epoch}) - min({epoch}) FROM {tel.relation}"
    )
    return int(assets or 0) * max(1, int((span or 0) // duration_seconds(section["cadence"])))


def _source(path: Path) -> dict[str, Any]:
    from cmms_pm import spec_writer

    written, _ = spec_writer.source_path(path)
    return {"kind": "file", "path": written}


# --- output --------------------------------------------------------------------------------------


def render(result: TimeSeriesScaffold) -> str:
    """The commented YAML of the spec (values through ``yaml.safe_dump``, comments one line each)."""
    from cmms_pm import spec_writer

    values = result.values
    section = values["timeseries"]
    blocks = [
        spec_writer.comments(
            f"Model spec {result.name!r}, generated by `make new-model` from raw telemetry and event logs.",
            "Review every inferred choice below, then commit the file: the next DAG parse shows",
            f"{result.name}_training and {result.name}_scoring.",
        ),
        spec_writer.dump({k: values[k] for k in ("name", "description", "registered_model", "experiment")}),
        "",
        spec_writer.comments(
            "What was inferred, and why:",
            *_wrapped([f"{what}: {why}" for what, why in result.reasons]),
            *_wrapped([f"note: {note}" for note in result.notes]),
            "Paths are relative to the data root ($CMMS_DATA_ROOT) when the files are under it.",
            f"Snapshots every {section['cadence']} per asset; a feature at snapshot t reads only rows",
            f"stamped <= t, the label is a failure in (t, t + {section['label']['horizon']}]. The split",
            f"is by time (train, validation, holdout) with gaps of {section['label']['horizon']}",
            "between them.",
        ),
        spec_writer.dump({"timeseries": section}),
        "",
        spec_writer.comments("Its hyperparameter defaults apply; set estimator.params to change them."),
        spec_writer.dump({"estimator": values["estimator"]}),
        "",
        spec_writer.comments(
            "Not set, so the schema's defaults apply (cmms_pm.spec.SPEC_SCHEMA). A time split measures a",
            "model on a later period, which is harder than a random split's near copies: the first run may",
            "score below the promotion threshold; lower it once you have seen a run.",
        ),
        spec_writer.comments(
            *spec_writer.dump(
                {key: spec_writer.schema_default(key) for key in spec_writer.SHOWN_DEFAULTS}
            ).splitlines()
        ),
    ]
    return "\n".join(block.rstrip("\n") for block in blocks) + "\n"


def _wrapped(items: Sequence[str]) -> list[str]:
    import textwrap

    return [
        line
        for item in items
        for line in textwrap.wrap(item, 96, initial_indent="  ", subsequent_indent="    ")
    ]


def describe(result: TimeSeriesScaffold) -> str:
    """What was inferred, why, and what to do next."""
    from cmms_pm.spec_writer import LINE_BREAKS

    section = result.values["timeseries"]
    lines = [
        f"Wrote {result.spec_path}: a time-series spec ({section['entity']!r} x {section['time']!r}).",
        "",
    ]
    lines += ["Inferred:"] + [f"  {what}: {why}" for what, why in result.reasons]
    if result.notes:
        lines += ["", "Notes:"] + [f"  {note}" for note in result.notes]
    lines += [
        "",
        "Next steps:",
        f"  1. Review {result.spec_path}: signals, components, codes, cadence, windows, horizon.",
        "  2. make check-specs, then commit it.",
        f"  3. The next DAG parse shows {result.name}_training and {result.name}_scoring.",
    ]
    return "\n".join(LINE_BREAKS.sub("?", line) for line in lines)
