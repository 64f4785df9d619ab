"""Data sources through Airflow connections, against real servers.

SQL runs against the suite's PostgreSQL and a SQLite file. S3 runs against moto's server mode on
127.0.0.1 with IAM enforcement on, so a wrong key is really refused: AWS S3 itself cannot be
reached from this machine, and moto is the only S3 implementation installable here. A listener
standing in for an attacker's host proves that a URI's ``endpoint_override`` sends it nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException
from harness import http_answers, wait_until_ready
from support import free_port, start_process, stop_processes

from cmms_mlflow.exceptions import BadDataError, SourceConfigurationError, SourceUnavailableError
from cmms_mlflow.integrations.source_access import read_file_source, read_sql_source, s3_filesystem

START, END = "2026-03-31T02:00:00+00:00", "2026-04-01T02:00:00+00:00"
SENTINEL = "SENTINEL-c0ffee"
# id -> timestamp (UTC): only ids 2, 3 and 4 lie in [START, END).
ROWS = {
    1: "2026-03-31 01:59:59",
    2: "2026-03-31 02:00:00",
    3: "2026-03-31 14:30:00",
    4: "2026-04-01 01:59:59.999999",
    5: "2026-04-01 02:00:00",
    6: "2026-04-02 02:00:00",
}
INSIDE = [2, 3, 4]


def _ids(frame: pd.DataFrame) -> list[int]:
    return sorted(int(value) for value in frame["id"])


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_database(postgres_server) -> dict:
    """A database with ``readings`` (timestamptz) and ``readings_naive`` (timestamp), six rows each."""
    import psycopg2

    name = f"sources_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    conn = psycopg2.connect(host="127.0.0.1", port=postgres_server.port, user="postgres", dbname=name)
    with conn, conn.cursor() as cursor:
        for table, kind in (("readings", "timestamptz"), ("readings_naive", "timestamp")):
            cursor.execute(f"CREATE TABLE {table} (id integer, ts {kind}, torque float, note text)")
            for row_id, ts in ROWS.items():
                note = SENTINEL if row_id == 3 else "ok"
                stamp = f"{ts}+00" if kind == "timestamptz" else ts
                cursor.execute(
                    f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", (row_id, stamp, row_id * 1.5, note)
                )
    conn.close()
    return {"port": postgres_server.port, "database": name}


@pytest.fixture
def pg_conn(monkeypatch, pg_database) -> str:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PG_SOURCE",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": pg_database["port"],
                "login": "postgres",
                "schema": pg_database["database"],
            }
        ),
    )
    return "pg_source"


@pytest.mark.parametrize("table", ["readings", "readings_naive", "public.readings"])
def test_postgres_table_source_returns_only_the_intervals_rows(pg_conn, table):
    source = {"kind": "sql", "conn_id": pg_conn, "table": table, "timestamp_column": "ts"}
    frame = read_sql_source(source, interval_start=START, interval_end=END)
    assert _ids(frame) == INSIDE
    assert list(frame.columns) == ["id", "ts", "torque", "note"]


def test_postgres_query_source_binds_the_named_interval_parameters(pg_conn):
    query = (
        "SELECT id, torque FROM readings WHERE ts >= %(data_interval_start)s "
        "AND ts < %(data_interval_end)s AND note LIKE 'o%%'"
    )
    frame = read_sql_source({"conn_id": pg_conn, "query": query}, interval_start=START, interval_end=END)
    assert _ids(frame) == [2, 4]  # row 3's note is the sentinel, not 'o...'
    assert frame["torque"].tolist() == [3.0, 6.0]


@pytest.mark.parametrize("conn", ["pg_conn", "sqlite_conn"])
def test_query_without_parameters_reads_every_row_and_keeps_literal_percent(request, conn):
    conn_id = request.getfixturevalue(conn)
    query = "SELECT id FROM readings WHERE note LIKE 'o%%'"
    frame = read_sql_source({"conn_id": conn_id, "query": query}, interval_start=START, interval_end=END)
    assert _ids(frame) == [1, 2, 4, 5, 6]


@pytest.mark.parametrize("table", ["readings", "readings_naive"])
def test_interval_bounds_in_another_offset_mean_the_same_instants(pg_conn, table):
    # A column without time zone holds UTC wall times: the bounds are converted to UTC first.
    source = {"conn_id": pg_conn, "table": table, "timestamp_column": "ts"}
    frame = read_sql_source(
        source, interval_start="2026-03-31T04:00:00+02:00", interval_end="2026-04-01T04:00:00+02:00"
    )
    assert _ids(frame) == INSIDE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("table", "readings; DROP TABLE readings"),
        ("table", 'readings" --'),
        ("table", "readings\n"),
        ("table", "pg_catalog.pg_authid x"),
        ("table", "a.b.c"),
        ("timestamp_column", "ts OR 1=1"),
        ("timestamp_column", "ts\n"),
    ],
)
def test_hostile_identifier_is_refused_before_any_connection(pg_database, postgres_server, field, value):
    # The connection id is not even defined: the refusal comes before any lookup or SQL.
    source = {"conn_id": "never_defined", "table": "readings", "timestamp_column": "ts", field: value}
    with pytest.raises(SourceConfigurationError, match=f"{field} .* is not a plain SQL identifier"):
        read_sql_source(source, interval_start=START, interval_end=END)
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=postgres_server.port, user="postgres", dbname=pg_database["database"]
    )
    with conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM readings")
        assert cursor.fetchone()[0] == len(ROWS)
    conn.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT * FROM readings WHERE note = %(password)s", r"uses %\(password\)s; the parameters are"),
        ("SELECT * FROM readings WHERE note LIKE 'o%'", "lone '%'"),
    ],
)
def test_query_with_unknown_parameter_or_lone_percent_is_refused(pg_conn, query, message):
    with pytest.raises(SourceConfigurationError, match=message):
        read_sql_source({"conn_id": pg_conn, "query": query}, interval_start=START, interval_end=END)


def test_unknown_table_names_connection_and_table(pg_conn):
    source = {"conn_id": pg_conn, "table": "no_such_table", "timestamp_column": "ts"}
    with pytest.raises(
        SourceConfigurationError,
        match=r"SQL source of connection 'pg_source' \(table 'no_such_table'\) was rejected by the database: "
        r"UndefinedTable: relation \"no_such_table\" does not exist",
    ):
        read_sql_source(source, interval_start=START, interval_end=END)


def test_data_error_names_its_class_and_sqlstate_never_the_value(pg_conn):
    query = (
        "SELECT CAST(note AS integer) AS id FROM readings "
        "WHERE ts >= %(data_interval_start)s AND ts < %(data_interval_end)s AND id = 3"
    )
    with pytest.raises(
        BadDataError, match=r"\(query\) failed: InvalidTextRepresentation \(SQLSTATE 22P02\)"
    ) as c:
        read_sql_source({"conn_id": pg_conn, "query": query}, interval_start=START, interval_end=END)
    assert SENTINEL not in str(c.value)
    assert c.value.__cause__ is None


def test_duplicate_result_columns_are_named(pg_conn):
    query = "SELECT id, id FROM readings WHERE ts >= %(data_interval_start)s AND ts < %(data_interval_end)s"
    with pytest.raises(BadDataError, match=r"returned duplicate column names: 'id' \(2 times\)"):
        read_sql_source({"conn_id": pg_conn, "query": query}, interval_start=START, interval_end=END)


def test_database_that_is_down_is_retryable(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PG_DOWN",
        json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "postgres"}),
    )
    source = {"conn_id": "pg_down", "table": "readings", "timestamp_column": "ts"}
    with pytest.raises(
        SourceUnavailableError, match=r"connection 'pg_down' \(table 'readings'\) is unavailable"
    ) as c:
        read_sql_source(source, interval_start=START, interval_end=END)
    assert not isinstance(c.value, AirflowFailException)


def test_missing_sql_connection_is_a_clear_non_retryable_error():
    source = {"conn_id": "not_configured", "query": "SELECT 1"}
    with pytest.raises(SourceConfigurationError, match="connection 'not_configured' is not defined") as c:
        read_sql_source(source, interval_start=START, interval_end=END)
    assert isinstance(c.value, AirflowFailException)


def test_a_connection_without_a_sql_hook_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HTTP_THING", json.dumps({"conn_type": "http", "host": "127.0.0.1"}))
    with pytest.raises(SourceConfigurationError, match="connection 'http_thing' \\(type 'http'\\)"):
        read_sql_source(
            {"conn_id": "http_thing", "query": "SELECT 1"}, interval_start=START, interval_end=END
        )


def test_interval_that_is_not_a_timestamp_is_refused(pg_conn):
    source = {"conn_id": pg_conn, "table": "readings", "timestamp_column": "ts"}
    with pytest.raises(SourceConfigurationError, match="interval_start 'yesterday' is not an ISO-8601"):
        read_sql_source(source, interval_start="yesterday", interval_end=END)


# --- SQLite --------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_conn(tmp_path, monkeypatch) -> str:
    """A SQLite file whose ``readings`` table pandas wrote (timestamps as SQLite text)."""
    path = tmp_path / "source.db"
    frame = pd.DataFrame(
        {
            "id": list(ROWS),
            "ts": pd.to_datetime(list(ROWS.values()), format="ISO8601"),
            "note": ["ok", "ok", SENTINEL, "ok", "ok", "ok"],
        }
    )
    with sqlite3.connect(path) as conn:
        frame.to_sql("readings", conn, index=False)
        # And one written by SQLite itself, in its CURRENT_TIMESTAMP format.
        conn.execute("CREATE TABLE events (id integer, at text)")
        conn.executemany("INSERT INTO events VALUES (?, ?)", [(i, ts[:19]) for i, ts in ROWS.items()])
    conn.close()
    monkeypatch.setenv("AIRFLOW_CONN_SQLITE_SOURCE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return "sqlite_source"


@pytest.mark.parametrize(("table", "column"), [("readings", "ts"), ("events", "at")])
def test_sqlite_table_source_returns_only_the_intervals_rows(sqlite_conn, table, column):
    source = {"conn_id": sqlite_conn, "table": table, "timestamp_column": column}
    assert _ids(read_sql_source(source, interval_start=START, interval_end=END)) == INSIDE


def test_sqlite_query_source_binds_the_named_interval_parameters(sqlite_conn):
    query = (
        "SELECT id FROM readings WHERE ts >= %(data_interval_start)s AND ts < %(data_interval_end)s "
        "AND note LIKE 'o%%'"
    )
    frame = read_sql_source({"conn_id": sqlite_conn, "query": query}, interval_start=START, interval_end=END)
    assert _ids(frame) == [2, 4]


def test_sqlite_unknown_table_names_connection_and_table(sqlite_conn):
    source = {"conn_id": sqlite_conn, "table": "nope", "timestamp_column": "ts"}
    with pytest.raises(SourceConfigurationError, match=r"'sqlite_source' \(table 'nope'\).*no such table"):
        read_sql_source(source, interval_start=START, interval_end=END)


# --- S3 (moto server) ----------------------------------------------------------------------------

BUCKET = "cmms-sources"
S3_ROOTS = [f"s3://{BUCKET}/incoming"]


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory) -> dict:
    """moto's S3 on loopback with IAM enforced once our user exists (wrong keys really fail)."""
    import boto3

    home = tmp_path_factory.mktemp("moto")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
    # The readiness probe and the 3 calls that create our user are the only unauthenticated ones.
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"
    log = home / "moto.log"
    proc = start_process(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        log=log,
        cwd=home,
    )
    try:
        wait_until_ready("moto S3 server", http_answers(endpoint), processes=[proc], timeout=60, interval=0.3)
        boot = {"aws_access_key_id": "boot", "aws_secret_access_key": "boot", "region_name": "us-east-1"}
        iam = boto3.client("iam", endpoint_url=endpoint, **boot)
        iam.create_user(UserName="pipeline")
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="pipeline", PolicyName="s3", PolicyDocument=json.dumps(policy))
        keys = {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=keys["access_key"],
            aws_secret_access_key=keys["secret_key"],
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(
            Bucket=BUCKET, Key="incoming/readings.csv", Body=f"id,note\n1,{SENTINEL}\n2,ok\n".encode()
        )
        s3.put_object(Bucket=BUCKET, Key="incoming/header.csv", Body=b"id,note\n")
        s3.put_object(Bucket=BUCKET, Key="private/secret.csv", Body=f"password\n{SENTINEL}\n".encode())
        yield {"endpoint": endpoint, "log": log, **keys}
    finally:
        stop_processes([proc])


def _aws_conn(monkeypatch, moto_s3: dict, **fields) -> None:
    conn = {
        "conn_type": "aws",
        "login": moto_s3["access_key"],
        "password": moto_s3["secret_key"],
        "extra": {"endpoint_url": moto_s3["endpoint"], "region_name": "us-east-1"},
        **fields,
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))


@pytest.fixture
def no_aws_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)


def test_s3_source_is_read_with_the_connections_credentials(monkeypatch, moto_s3, no_aws_env):
    _aws_conn(monkeypatch, moto_s3)
    frame = read_file_source(f"s3://{BUCKET}/incoming/readings.csv", roots=S3_ROOTS)
    assert frame["id"].tolist() == [1, 2]


def test_wrong_secret_in_the_connection_fails_even_with_good_keys_in_the_environment(monkeypatch, moto_s3):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3["secret_key"])
    _aws_conn(monkeypatch, moto_s3, password="not-the-secret")
    with pytest.raises(BadDataError, match="readings.csv' cannot be read: access denied") as caught:
        read_file_source(f"s3://{BUCKET}/incoming/readings.csv", roots=S3_ROOTS)
    assert SENTINEL not in str(caught.value)


def test_connection_without_keys_does_not_fall_back_to_the_environment(monkeypatch, moto_s3):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3["secret_key"])
    _aws_conn(monkeypatch, moto_s3, login=None, password=None)
    with pytest.raises(SourceConfigurationError, match="connection 'aws_default' has no S3 credentials"):
        read_file_source(f"s3://{BUCKET}/incoming/readings.csv", roots=S3_ROOTS)


def test_keys_in_connection_extras_are_used(monkeypatch, moto_s3, no_aws_env):
    extra = {
        "aws_access_key_id": moto_s3["access_key"],
        "aws_secret_access_key": moto_s3["secret_key"],
        "endpoint_url": moto_s3["endpoint"],
        "region_name": "us-east-1",
    }
    _aws_conn(monkeypatch, moto_s3, login=None, password=None, extra=extra)
    frame = read_file_source(f"s3://{BUCKET}/incoming/readings.csv", roots=S3_ROOTS)
    assert len(frame) == 2


def test_connection_secret_is_masked_in_logs(monkeypatch, moto_s3):
    from airflow.sdk._shared.secrets_masker import redact

    _aws_conn(monkeypatch, moto_s3)
    s3_filesystem("aws_default")
    assert moto_s3["secret_key"] not in redact(f"signing with {moto_s3['secret_key']}")


class _Listener:
    """A TCP listener on loopback standing in for an attacker's host: it counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def attacker():
    listener = _Listener()
    yield listener
    listener.close()


def test_endpoint_override_in_the_uri_is_what_pyarrow_would_obey(attacker, monkeypatch):
    """The attack is real: pyarrow sends the (signed) request wherever the URI says."""
    from pyarrow import fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "worker-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = f"s3://{BUCKET}/incoming/readings.csv?endpoint_override=127.0.0.1:{attacker.port}&scheme=http"
    filesystem, path = fs.FileSystem.from_uri(uri)
    with pytest.raises(OSError):
        filesystem.open_input_file(path)
    assert attacker.connections >= 1


@pytest.mark.parametrize(
    "suffix",
    ["?endpoint_override=127.0.0.1:{port}&scheme=http", "?scheme=http&endpoint_override=127.0.0.1:{port}"],
)
def test_endpoint_override_in_the_uri_is_refused_before_any_request(monkeypatch, moto_s3, attacker, suffix):
    _aws_conn(monkeypatch, moto_s3)
    requests_before = moto_s3["log"].read_text().count("HTTP/1.1")
    uri = f"s3://{BUCKET}/incoming/readings.csv" + suffix.format(port=attacker.port)
    with pytest.raises(BadDataError, match=r"refused: a query string \('\?'\) is not allowed") as caught:
        read_file_source(uri, roots=S3_ROOTS)
    assert isinstance(caught.value, AirflowFailException)
    time.sleep(0.3)
    assert attacker.connections == 0
    assert moto_s3["log"].read_text().count("HTTP/1.1") == requests_before


def test_s3_key_outside_the_s3_root_is_refused_before_any_request(monkeypatch, moto_s3):
    _aws_conn(monkeypatch, moto_s3)
    requests_before = moto_s3["log"].read_text().count("HTTP/1.1")
    for uri in (f"s3://{BUCKET}/private/secret.csv", f"s3://{BUCKET}/incoming/../private/secret.csv"):
        with pytest.raises(BadDataError, match="refused") as caught:
            read_file_source(uri, roots=S3_ROOTS)
        assert SENTINEL not in str(caught.value)
    assert moto_s3["log"].read_text().count("HTTP/1.1") == requests_before


def test_header_only_s3_file_says_0_rows(monkeypatch, moto_s3):
    _aws_conn(monkeypatch, moto_s3)
    with pytest.raises(BadDataError, match=r"header.csv' has 0 rows"):
        read_file_source(f"s3://{BUCKET}/incoming/header.csv", roots=S3_ROOTS)


def test_missing_s3_object_does_not_exist(monkeypatch, moto_s3):
    _aws_conn(monkeypatch, moto_s3)
    with pytest.raises(BadDataError, match="nope.csv' does not exist"):
        read_file_source(f"s3://{BUCKET}/incoming/nope.csv", roots=S3_ROOTS)


def test_missing_aws_connection_is_a_clear_non_retryable_error(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    with pytest.raises(SourceConfigurationError, match="connection 'aws_default' is not defined") as caught:
        read_file_source(f"s3://{BUCKET}/incoming/readings.csv", roots=S3_ROOTS)
    assert isinstance(caught.value, AirflowFailException)


def test_unreachable_s3_endpoint_is_retryable(monkeypatch, moto_s3):
    _aws_conn(
        monkeypatch,
        moto_s3,
        extra={
            "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "region_name": "us-east-1",
            "config_kwargs": {"connect_timeout": 1, "read_timeout": 2},
        },
    )
    with pytest.raises(SourceUnavailableError, match="cannot read data source") as caught:
        read_file_source(f"s3://{BUCKET}/incoming/readings.csv", roots=S3_ROOTS)
    assert not isinstance(caught.value, AirflowFailException)


def test_endpoint_url_with_a_path_or_query_is_refused(monkeypatch, moto_s3):
    _aws_conn(monkeypatch, moto_s3, extra={"endpoint_url": f"{moto_s3['endpoint']}/?x=1"})
    with pytest.raises(SourceConfigurationError, match="endpoint_url must be http"):
        s3_filesystem("aws_default")


# --- local files through the plugin ---------------------------------------------------------------


def test_local_source_outside_the_data_root_fails_the_task_for_good(tmp_path, monkeypatch):
    monkeypatch.setenv("CMMS_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("CMMS_SOURCE_ROOTS", raising=False)
    (tmp_path / "data").mkdir()
    with pytest.raises(BadDataError, match="SourceNotAllowedError: data source '../secret.csv' refused"):
        read_file_source("../secret.csv")


def test_local_source_under_the_data_root_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("CMMS_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("CMMS_SOURCE_ROOTS", raising=False)
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "data" / "incoming" / "a.parquet")
    assert read_file_source("incoming/a.parquet")["a"].tolist() == [1, 2]
