"""File sources: every way out of the allowed roots is refused, and reading never echoes file values.

Each refusal is tried as an attacker who can trigger a DAG would write it; the files under the
allowed root carry a sentinel value that no message may contain.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cmms_pm.exceptions import (
    DataSourceError,
    DataValidationError,
    SourceNotAllowedError,
)
from cmms_pm.frame_checks import check_frame
from cmms_pm.sources import (
    ALLOWED_SUFFIXES,
    FileLocation,
    read_table,
    resolve_file_source,
    source_roots,
)
from cmms_pm.spec import FeatureSpec

SENTINEL = "SENTINEL-4f1c9a"
S3_ROOT = "s3://cmms-bucket/incoming"


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with ``incoming/readings.csv`` (holding the sentinel) and the env pointing at it."""
    root = tmp_path / "data"
    (root / "incoming").mkdir(parents=True)
    pd.DataFrame({"torque": [1.5, 2.5], "note": [SENTINEL, "x"], "failed": [0, 1]}).to_csv(
        root / "incoming" / "readings.csv", index=False
    )
    monkeypatch.setenv("CMMS_DATA_ROOT", str(root))
    monkeypatch.delenv("CMMS_SOURCE_ROOTS", raising=False)
    return root


@pytest.fixture
def roots(data_root: Path) -> list[str]:
    return [str(data_root), S3_ROOT]


# --- what is allowed -----------------------------------------------------------------------------


def test_relative_path_resolves_under_the_data_root(data_root):
    location = resolve_file_source("incoming/readings.csv")
    assert location == FileLocation(
        scheme="local",
        path=str(data_root / "incoming" / "readings.csv"),
        uri=str(data_root / "incoming" / "readings.csv"),
        suffix=".csv",
    )


def test_absolute_path_and_file_uri_inside_a_root_resolve_to_the_same_file(data_root, roots):
    path = data_root / "incoming" / "readings.csv"
    assert resolve_file_source(str(path), roots=roots).path == str(path)
    assert resolve_file_source(path.as_uri(), roots=roots).path == str(path)


def test_s3_uri_under_an_s3_root_resolves_to_bucket_and_key(roots):
    location = resolve_file_source(f"{S3_ROOT}/2026/readings.parquet", roots=roots)
    assert location == FileLocation(
        scheme="s3",
        path="cmms-bucket/incoming/2026/readings.parquet",
        uri="s3://cmms-bucket/incoming/2026/readings.parquet",
        suffix=".parquet",
    )


def test_a_symlink_that_stays_inside_the_root_is_followed(data_root, roots):
    link = data_root / "incoming" / "latest.csv"
    link.symlink_to(data_root / "incoming" / "readings.csv")
    assert resolve_file_source(str(link), roots=roots).path == str(data_root / "incoming" / "readings.csv")


def test_relative_path_under_an_s3_data_root_is_an_s3_key(monkeypatch):
    monkeypatch.setenv("CMMS_DATA_ROOT", "s3://cmms-bucket")  # its incoming/ is S3_ROOT
    monkeypatch.delenv("CMMS_SOURCE_ROOTS", raising=False)
    assert resolve_file_source("incoming/2026/readings.csv").uri == f"{S3_ROOT}/2026/readings.csv"
    with pytest.raises(SourceNotAllowedError, match="outside the allowed roots"):
        resolve_file_source("pm_training/run-1/train.parquet")  # a batch, not a source
    with pytest.raises(SourceNotAllowedError, match="a '..' path component"):
        resolve_file_source("../private/readings.csv")


def test_source_roots_default_to_the_incoming_folder_of_the_data_root(data_root):
    assert source_roots() == [f"{data_root}/incoming"]


def test_another_dags_batch_folder_under_the_data_root_is_not_a_source_by_default(data_root, monkeypatch):
    """A user who may trigger spec A must not train on spec B's splits (same data root)."""
    batch = data_root / "b_training" / "manual__1-0123456789abcdef"
    batch.mkdir(parents=True)
    pd.DataFrame({"x": [1]}).to_parquet(batch / "train.parquet")
    for raw in ("b_training/manual__1-0123456789abcdef/train.parquet", str(batch / "train.parquet")):
        with pytest.raises(SourceNotAllowedError, match="outside the allowed roots"):
            resolve_file_source(raw)
    # The files meant for training are still read; an admin can widen the list on purpose.
    assert resolve_file_source("incoming/readings.csv").path == str(data_root / "incoming" / "readings.csv")
    monkeypatch.setenv("CMMS_SOURCE_ROOTS", str(data_root))
    assert resolve_file_source(str(batch / "train.parquet")).path == str(batch / "train.parquet")


def test_the_specs_own_declared_file_is_allowed_where_it_is_but_nothing_beside_it(data_root):
    (data_root / "legacy.csv").write_text("a\n1\n")
    (data_root / "other.csv").write_text("a\n1\n")
    assert resolve_file_source("legacy.csv", declared="legacy.csv").path == str(data_root / "legacy.csv")
    for raw in ("other.csv", str(data_root / "other.csv")):
        with pytest.raises(SourceNotAllowedError, match="outside the allowed roots"):
            resolve_file_source(raw, declared="legacy.csv")


def test_source_roots_come_from_the_environment(data_root, monkeypatch):
    monkeypatch.setenv("CMMS_SOURCE_ROOTS", f" {data_root}/incoming , {S3_ROOT} ")
    assert source_roots() == [f"{data_root}/incoming", S3_ROOT]
    with pytest.raises(SourceNotAllowedError, match="outside the allowed roots"):
        resolve_file_source(f"{S3_ROOT.replace('incoming', 'private')}/x.csv")


# --- what is refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param("../../etc/passwd.csv", "a '..' path component", id="dotdot-relative"),
        pytest.param("incoming/../../outside.csv", "a '..' path component", id="dotdot-inside"),
        pytest.param("/etc/passwd.csv", "resolves outside the allowed roots", id="absolute-outside"),
        pytest.param("file:///etc/passwd.csv", "resolves outside the allowed roots", id="file-uri-outside"),
        pytest.param("file:///etc/passwd", r"suffix '\(none\)' is not one of", id="file-uri-no-suffix"),
        pytest.param("file://evil.example/x.csv", "names no host", id="file-uri-with-host"),
        pytest.param("~/x.csv", "'~'", id="home"),
        pytest.param("incoming/~root.csv", "'~'", id="tilde-inside"),
        pytest.param(
            f"{S3_ROOT}/x.csv?endpoint_override=evil.example:80", r"a query string \('\?'\)", id="s3-endpoint"
        ),
        pytest.param(f"{S3_ROOT}/x.csv?scheme=http", r"a query string \('\?'\)", id="s3-scheme-param"),
        pytest.param(f"{S3_ROOT}/x.csv#frag", r"a fragment \('#'\)", id="s3-fragment"),
        pytest.param("s3://user:pw@cmms-bucket/incoming/x.csv", "user-info", id="s3-userinfo"),
        pytest.param("s3://cmms-bucket:9000/incoming/x.csv", "a port is not allowed", id="s3-port"),
        pytest.param("s3://cmms-bucket/incoming/../private/x.csv", "a '..' path component", id="s3-dotdot"),
        pytest.param("s3://cmms-bucket/incoming//x.csv", "an empty path component", id="s3-double-slash"),
        pytest.param("s3://cmms-bucket/incoming/./x.csv", "a '.' path component", id="s3-dot"),
        pytest.param("s3://cmms-bucket/incomingX/x.csv", "outside the allowed roots", id="s3-prefix-trick"),
        pytest.param("s3://other-bucket/incoming/x.csv", "outside the allowed roots", id="s3-other-bucket"),
        pytest.param("s3:/cmms-bucket/incoming/x.csv", "an S3 URI is s3://bucket/key", id="s3-one-slash"),
        pytest.param("http://evil.example/x.csv", "scheme 'http://' is not allowed", id="http"),
        pytest.param("https://evil.example/x.csv", "scheme 'https://' is not allowed", id="https"),
        pytest.param("hdfs://namenode/x.csv", "scheme 'hdfs://' is not allowed", id="hdfs"),
        pytest.param("incoming/readings.xlsx", "suffix '.xlsx' is not one of", id="xlsx"),
        pytest.param("incoming/readings.csv.gz", "suffix '.gz' is not one of", id="gz"),
        pytest.param("incoming/readings.csv\n", "control characters", id="trailing-newline"),
        pytest.param("incoming/read\x00ings.csv", "control characters", id="nul-byte"),
        pytest.param("incoming/readings.csv ", "leading or trailing whitespace", id="trailing-space"),
        pytest.param("incoming\\..\\..\\x.csv", "a backslash", id="backslash"),
        pytest.param("", "the path is empty", id="empty"),
        pytest.param("x" * 1001 + ".csv", "longer than 1000 characters", id="too-long"),
    ],
)
def test_unsafe_source_is_refused_naming_the_part_and_the_roots(data_root, roots, raw, reason):
    with pytest.raises(SourceNotAllowedError, match=reason) as caught:
        resolve_file_source(raw, roots=roots)
    message = str(caught.value)
    assert f"allowed roots: {[str(data_root), S3_ROOT]}" in message
    assert isinstance(caught.value, DataSourceError)


def test_refusal_of_user_info_does_not_repeat_the_password(roots):
    with pytest.raises(SourceNotAllowedError) as caught:
        resolve_file_source("s3://user:hunter2secret@cmms-bucket/incoming/x.csv", roots=roots)
    assert "hunter2secret" not in str(caught.value)
    assert "s3://***@cmms-bucket/incoming/x.csv" in str(caught.value)


def test_symlink_inside_the_root_pointing_outside_is_refused(tmp_path, data_root, roots):
    outside = tmp_path / "secret.csv"
    outside.write_text(f"password\n{SENTINEL}\n")
    (data_root / "incoming" / "innocent.csv").symlink_to(outside)
    with pytest.raises(SourceNotAllowedError, match="resolves outside the allowed roots") as caught:
        resolve_file_source("incoming/innocent.csv", roots=roots)
    assert str(outside) not in str(caught.value)


def test_symlinked_folder_pointing_outside_is_refused(tmp_path, data_root, roots):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.csv").write_text("a\n1\n")
    (data_root / "incoming" / "linked").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SourceNotAllowedError, match="resolves outside the allowed roots"):
        resolve_file_source("incoming/linked/x.csv", roots=roots)


def test_sibling_folder_sharing_the_root_prefix_is_outside(tmp_path, data_root, roots):
    sibling = tmp_path / "data-other"
    sibling.mkdir()
    (sibling / "x.csv").write_text("a\n1\n")
    with pytest.raises(SourceNotAllowedError, match="resolves outside the allowed roots"):
        resolve_file_source(str(sibling / "x.csv"), roots=roots)


def test_missing_file_inside_a_root_does_not_exist(data_root, roots):
    with pytest.raises(DataSourceError, match=r"incoming/nope.csv' does not exist") as caught:
        resolve_file_source("incoming/nope.csv", roots=roots)
    assert not isinstance(caught.value, SourceNotAllowedError)


def test_missing_file_outside_the_roots_is_refused_without_saying_whether_it_exists(roots):
    for path in ("/etc/hostname.csv", "/nonexistent/x.csv"):
        with pytest.raises(SourceNotAllowedError, match="outside the allowed roots"):
            resolve_file_source(path, roots=roots)


def test_a_folder_is_not_a_file(data_root, roots):
    (data_root / "incoming" / "folder.csv").mkdir()
    with pytest.raises(DataSourceError, match="is not a file"):
        resolve_file_source("incoming/folder.csv", roots=roots)


@pytest.mark.parametrize(
    "root",
    [
        "s3://cmms-bucket/x?endpoint_override=evil.example",
        "http://evil.example/data",
        "s3://u:p@cmms-bucket/x",
    ],
)
def test_unsafe_root_entry_is_refused(root, monkeypatch):
    monkeypatch.setenv("CMMS_SOURCE_ROOTS", root)
    with pytest.raises(DataSourceError, match="CMMS_SOURCE_ROOTS"):
        resolve_file_source("s3://cmms-bucket/x/y.csv")


# --- reading -------------------------------------------------------------------------------------


def _local(path: Path) -> FileLocation:
    path = Path(os.path.realpath(path))  # what resolve_file_source hands to read_table
    return FileLocation(scheme="local", path=str(path), uri=str(path), suffix=path.suffix)


def test_csv_and_parquet_are_read_with_their_values(tmp_path):
    frame = pd.DataFrame({"Torque [Nm]": [1.5, 2.5], "type": ["L", "H"], "failed": [0, 1]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.pq", index=False)
    for name in ("a.csv", "a.pq"):
        pd.testing.assert_frame_equal(read_table(_local(tmp_path / name)), frame, check_dtype=False)


def test_header_only_csv_says_0_rows(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("torque,type,failed\n")
    with pytest.raises(DataValidationError, match=r"header.csv' has 0 rows \(3 columns"):
        read_table(_local(path))


def test_empty_csv_says_0_rows(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("\n")
    with pytest.raises(DataValidationError, match="has 0 rows"):
        read_table(_local(path))


def test_parquet_without_rows_says_0_rows(tmp_path):
    path = tmp_path / "empty.parquet"
    pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(path)
    with pytest.raises(DataValidationError, match="has 0 rows"):
        read_table(_local(path))


def test_duplicate_csv_columns_are_named_not_renamed(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text(f"x,y,x,x,y\n{SENTINEL},1,2,3,4\n")
    with pytest.raises(
        DataValidationError, match=r"duplicate column names: 'x' \(3 times\), 'y' \(2 times\)"
    ) as c:
        read_table(_local(path))
    assert SENTINEL not in str(c.value)


def test_duplicate_parquet_columns_are_named(tmp_path):
    path = tmp_path / "dup.parquet"
    table = pa.table([pa.array([SENTINEL]), pa.array([1]), pa.array([2])], names=["x", "y", "x"])
    pq.write_table(table, path)
    with pytest.raises(DataValidationError, match=r"duplicate column names: 'x' \(2 times\)") as caught:
        read_table(_local(path))
    assert SENTINEL not in str(caught.value)


def test_unparsable_csv_names_the_line_not_its_content(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text(f"a,b\n1,2\n3,4,{SENTINEL}\n")
    with pytest.raises(DataSourceError, match="Expected 2 fields in line 3, saw 3") as caught:
        read_table(_local(path))
    assert SENTINEL not in str(caught.value)
    assert caught.value.__cause__ is None


def test_undecodable_csv_fails_without_quoting_bytes(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match="as CSV: UnicodeDecodeError"):
        read_table(_local(path))


def test_a_csv_named_parquet_is_unparsable(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text(f"a,b\n{SENTINEL},1\n")
    with pytest.raises(DataSourceError, match="as Parquet: ArrowInvalid") as caught:
        read_table(_local(path))
    assert SENTINEL not in str(caught.value)


def test_a_file_gone_after_resolution_does_not_exist(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        read_table(_local(tmp_path / "gone.csv"))


# --- time of check, time of use: the file read is the file checked ------------------------------


def _secret_elsewhere(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "readings.csv").write_text(f"torque,note,failed\n1.0,{SENTINEL},1\n")
    return outside


def test_a_folder_swapped_for_a_symlink_between_check_and_read_is_refused(tmp_path, data_root):
    location = resolve_file_source("incoming/readings.csv")
    outside = _secret_elsewhere(tmp_path)
    # The attacker (who can write incoming/) replaces the checked folder by a link to elsewhere.
    (data_root / "incoming").rename(data_root / "incoming.old")
    (data_root / "incoming").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SourceNotAllowedError, match="changed between its check and its read") as caught:
        read_table(location)
    assert SENTINEL not in str(caught.value)


def test_a_file_swapped_for_a_symlink_between_check_and_read_is_refused(tmp_path, data_root):
    location = resolve_file_source("incoming/readings.csv")
    outside = _secret_elsewhere(tmp_path)
    (data_root / "incoming" / "readings.csv").unlink()
    (data_root / "incoming" / "readings.csv").symlink_to(outside / "readings.csv")
    with pytest.raises(SourceNotAllowedError, match="changed between its check and its read"):
        read_table(location)


def test_a_file_swapped_for_a_fifo_between_check_and_read_fails_at_once(data_root):
    """A named pipe would block the worker forever on open; it is not a file."""
    location = resolve_file_source("incoming/readings.csv")
    (data_root / "incoming" / "readings.csv").unlink()
    os.mkfifo(data_root / "incoming" / "readings.csv")
    with pytest.raises(DataSourceError, match="is not a file"):
        read_table(location)


def test_the_checked_file_replaced_in_place_inside_the_root_is_read(data_root):
    """Not a trick: a new file at the same checked path is still the file the allow-list approved."""
    location = resolve_file_source("incoming/readings.csv")
    pd.DataFrame({"torque": [9.0], "note": ["new"], "failed": [0]}).to_csv(
        data_root / "incoming" / "readings.csv", index=False
    )
    assert read_table(location)["torque"].tolist() == [9.0]


def test_s3_location_without_a_connection_filesystem_is_not_read():
    location = FileLocation(scheme="s3", path="b/k.csv", uri="s3://b/k.csv", suffix=".csv")
    with pytest.raises(DataSourceError, match="through a filesystem built from an Airflow connection"):
        read_table(location)


_BIG = 2**64 + 7  # beyond int64 and uint64
_FEATURES = FeatureSpec(integer=("count",))


@pytest.mark.parametrize(
    "values",
    [
        # pandas reads this column as text ('' for the gap): sources turn it back into numbers.
        pytest.param([2**63, None, -(2**63) - 5, 5], id="uint64-range-with-gap"),
        # pandas keeps Python ints here (object dtype).
        pytest.param([_BIG, None, -_BIG, 5], id="beyond-uint64-with-gap"),
    ],
)
def test_integers_beyond_int64_in_a_csv_with_gaps_survive_for_the_checks(tmp_path, values):
    path = tmp_path / "big.csv"
    rows = "".join(f"{'' if value is None else value},{i % 2}\n" for i, value in enumerate(values))
    path.write_text("count,label\n" + rows)
    frame = read_table(_local(path))
    read = frame["count"].tolist()
    assert [read[0], read[2], read[3]] == [values[0], values[2], values[3]]
    assert np.isnan(read[1])
    with pytest.raises(DataValidationError, match=r"^column 'count' has 2 values that overflow int64$") as c:
        check_frame(frame, features=_FEATURES, target="label", min_rows=1, max_missing_rate=1.0)
    assert str(values[0]) not in str(c.value)


def test_integers_beyond_int64_without_gaps_survive_for_the_checks(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text(f"count,label\n{2**63},0\n{_BIG},1\n3,0\n")
    frame = read_table(_local(path))
    assert frame["count"].tolist() == [2**63, _BIG, 3]
    with pytest.raises(DataValidationError, match="column 'count' has 2 values that overflow int64"):
        check_frame(frame, features=_FEATURES, target="label", min_rows=1, max_missing_rate=0.0)


def test_uint64_parquet_column_survives_for_the_checks(tmp_path):
    path = tmp_path / "big.parquet"
    table = pa.table({"count": pa.array([2**63 + 1, 1], pa.uint64()), "label": pa.array([0, 1])})
    pq.write_table(table, path)
    frame = read_table(_local(path))
    assert frame["count"].dtype == np.uint64
    with pytest.raises(DataValidationError, match="column 'count' has 1 values that overflow int64"):
        check_frame(frame, features=_FEATURES, target="label", min_rows=1, max_missing_rate=0.0)


def test_suffix_check_ignores_case(data_root, roots):
    (data_root / "incoming" / "READINGS.CSV").write_text("a\n1\n")
    assert resolve_file_source("incoming/READINGS.CSV", roots=roots).suffix == ".csv"
    assert ".pq" in ALLOWED_SUFFIXES
