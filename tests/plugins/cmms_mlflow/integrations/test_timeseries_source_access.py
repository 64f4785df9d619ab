"""Time-series tables through Airflow connections: the feature SQL pushed down to the suite's real
PostgreSQL gives the same feature table as the embedded DuckDB over the same data in files.

The same generated fleet is written as Parquet under the data root and loaded into PostgreSQL
tables (``timestamptz`` readings, a ``timestamp`` and a ``date`` column among the events); the only
difference between the two specs is where their tables are.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest
from timeseries_data import fleet_section, spec_of

from cmms_mlflow.exceptions import BadDataError, SourceConfigurationError
from cmms_pm.exceptions import DataSourceError
from cmms_pm.timeseries.build import build_features, epoch
from cmms_pm.timeseries.generator import generate_fleet, write_fleet
from cmms_pm.timeseries.sql import Snapshots

TABLES = ("telemetry", "failures", "maintenance", "alarms", "assets")
AS_OF, START, END = "2026-02-10T00:00:00+00:00", "2026-01-09T00:00:00+00:00", "2026-02-08T00:00:00+00:00"


@pytest.fixture(scope="module")
def fleet():
    return generate_fleet(12, "2026-01-01", "2026-02-10", seed=5)


@pytest.fixture(scope="module")
def fleet_db(postgres_server, fleet) -> str:
    """A database holding the fleet's five tables; returns its name."""
    import sqlalchemy

    name = f"fleet_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(postgres_server.create_database(name))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA cmms")
    for table in TABLES:
        frame = getattr(fleet, table)
        if table == "maintenance":  # a timestamp without time zone (UTC wall time)
            frame = frame.assign(timestamp=frame["timestamp"].dt.tz_localize(None))
        if table == "assets":
            frame = frame.assign(install_date=pd.to_datetime(frame["install_date"]).dt.date)
        frame.to_sql(table, engine, schema="cmms", index=False)
    engine.dispose()
    return name


@pytest.fixture
def fleet_conn(monkeypatch, postgres_server, fleet_db) -> str:
    conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": postgres_server.port, "login": "postgres",
            "schema": fleet_db}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_FLEET_DB", json.dumps(conn))
    return "fleet_db"


@pytest.fixture
def files(tmp_path, monkeypatch, fleet) -> str:
    root = tmp_path / "data"
    monkeypatch.setenv("CMMS_DATA_ROOT", str(root))
    monkeypatch.delenv("CMMS_SOURCE_ROOTS", raising=False)
    write_fleet(fleet, root / "incoming" / "fleet", fmt="parquet")
    return "incoming/fleet"


def _sql_section(conn_id: str) -> dict:
    section = fleet_section("unused")
    for table in TABLES:
        section[table]["source"] = {"kind": "sql", "conn_id": conn_id, "table": f"cmms.{table}"}
    return section


def _features(spec, *, latest: bool = False) -> pd.DataFrame:
    from cmms_mlflow.integrations.source_access import open_timeseries

    config = spec.timeseries
    as_of = epoch(END if latest else AS_OF)
    snapshots = Snapshots(as_of=as_of, start=epoch(END if latest else START), end=epoch(END), latest=latest)
    with open_timeseries(config, as_of=as_of, read_from=epoch(START) - config.lookback) as (
        engine,
        sources,
        local,
    ):
        build_features(config, engine, sources, snapshots, local=local)
        return local.con.sql("SELECT * FROM ts_features ORDER BY 1, 2").df()


def _assert_same(duck: pd.DataFrame, pushed: pd.DataFrame) -> None:
    assert list(duck.columns) == list(pushed.columns)
    assert len(duck) == len(pushed) > 0
    for column in duck.columns:
        left, right = duck[column], pushed[column]
        if pd.api.types.is_float_dtype(left) or pd.api.types.is_float_dtype(right):
            assert np.allclose(
                left.astype(float), right.astype(float), rtol=1e-9, atol=1e-9, equal_nan=True
            ), column
        elif pd.api.types.is_datetime64_any_dtype(left):
            assert (pd.to_datetime(left).to_numpy() == pd.to_datetime(right).to_numpy()).all(), column
        else:
            assert left.astype(str).tolist() == right.astype(str).tolist(), column


def test_postgresql_pushdown_gives_the_same_feature_table_as_duckdb_on_files(files, fleet_conn):
    duck = _features(spec_of(fleet_section(files, fmt="parquet")))
    pushed = _features(spec_of(_sql_section(fleet_conn)))
    assert duck["failure_within_48h"].sum() > 0 and duck["alarms_E1_24h"].sum() > 0
    _assert_same(duck, pushed)
    # The latest snapshot per asset too (what scoring reads).
    _assert_same(_features(spec_of(fleet_section(files, fmt="parquet")), latest=True),
                 _features(spec_of(_sql_section(fleet_conn)), latest=True))  # fmt: skip


def test_the_pushed_down_batch_is_a_complete_time_split_batch(fleet_conn, tmp_path):
    from cmms_mlflow.integrations.source_access import open_timeseries
    from cmms_pm.timeseries.snapshot_batch import prepare_timeseries_batch, read_from

    spec = spec_of(_sql_section(fleet_conn))
    config = spec.timeseries
    with open_timeseries(
        config, as_of=epoch(AS_OF), read_from=read_from(config, as_of=epoch(AS_OF))
    ) as opened:
        engine, sources, local = opened
        manifest = prepare_timeseries_batch(
            spec=spec, engine=engine, sources=sources, local=local, source="timeseries",
            interval_start="2026-02-09T00:00:00+00:00", interval_end=AS_OF, out_uri=str(tmp_path / "pg"),
        )  # fmt: skip
    assert manifest["split"]["strategy"] == "time" and manifest["rows"] > 1000
    assert set(manifest["splits"]) == {"train", "validation", "holdout"}


def test_time_series_tables_must_share_the_telemetrys_database_and_it_must_be_postgresql(
    files, fleet_conn, monkeypatch, tmp_path
):
    from cmms_mlflow.integrations.source_access import open_timeseries

    mixed = _sql_section(fleet_conn)
    mixed["failures"]["source"] = {"kind": "file", "path": f"{files}/failures.parquet"}
    with pytest.raises(DataSourceError, match="must be a table of that connection"):
        with open_timeseries(spec_of(mixed).timeseries, as_of=epoch(AS_OF), read_from=None):
            pass
    monkeypatch.setenv(
        "AIRFLOW_CONN_LITE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "x.db")})
    )
    with pytest.raises(SourceConfigurationError, match="pushed down to"):
        with open_timeseries(spec_of(_sql_section("lite")).timeseries, as_of=epoch(AS_OF), read_from=None):
            pass


def test_a_table_the_database_does_not_have_fails_without_a_retry(fleet_conn):
    from cmms_mlflow.exceptions import source_errors_fail_the_task

    section = _sql_section(fleet_conn)
    section["alarms"]["source"]["table"] = "cmms.no_such_table"
    with pytest.raises((SourceConfigurationError, BadDataError)):
        with source_errors_fail_the_task():
            _features(spec_of(section))
