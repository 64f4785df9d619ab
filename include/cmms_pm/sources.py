"""Files a model may learn from: allow-listed roots, paths checked after resolution, tables read safely.

A source path comes from a spec or a trigger form, so anyone allowed to trigger a DAG writes it.
:func:`resolve_file_source` refuses every way out of the allowed roots (``..``, ``~``, symlinks,
other schemes) and every way to redirect a signed S3 request (a query string such as
``?endpoint_override=``, a fragment, user-info): the S3 endpoint and credentials are the Airflow
connection's, never the URI's. The default root is ``<data root>/incoming`` only: the data root
also holds every DAG's batch folders, which a user of one spec must not train on. :func:`read_table`
reads CSV or Parquet and fails with messages that name columns and counts, never values from the
file (its content may be someone else's secret). A local file is opened once, without following a
symlink, and the opened file must be the one that was checked: a folder swapped for a symlink
between the check and the read is refused.

Pure domain code: the S3 filesystem is built by the plugin from an Airflow connection and passed in.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from cmms_pm.exceptions import (
    DataSourceError,
    DataSourceUnavailableError,
    DataValidationError,
    SourceNotAllowedError,
)
from cmms_pm.frame_checks import duplicate_columns_problem

log = logging.getLogger(__name__)

ALLOWED_SUFFIXES = (".csv", ".parquet", ".pq")
SOURCE_ROOTS_ENV = "CMMS_SOURCE_ROOTS"
MAX_SOURCE_LENGTH = 1000

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens (no ':', '@' or '/').
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_USERINFO = re.compile(r"(?<=//)[^/]*@")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A whole number as a CSV parser leaves it when it overflows int64 next to a gap ("" or NaN).
_WHOLE_NUMBER = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_CSV_PARSER_DETAIL = re.compile(r"Expected \d+ fields in line \d+, saw \d+")


@dataclass(frozen=True)
class FileLocation:
    """A source file that passed every check: where it is and how to name it in messages."""

    scheme: str  # "local" | "s3"
    path: str  # resolved absolute local path, or "bucket/key" for s3
    uri: str  # what to show in logs/messages (no credentials, no query)
    suffix: str


@dataclass(frozen=True)
class _Root:
    scheme: str  # "local" | "s3"
    path: str  # resolved local folder, or "bucket" / "bucket/prefix"


#: The folder under the data root that files to train on go to (the default allow-list).
INCOMING = "incoming"


def source_roots() -> list[str]:
    """The allow-list: ``CMMS_SOURCE_ROOTS`` (comma-separated folders and/or ``s3://bucket/prefix``),
    default ``<data root>/incoming`` (``$CMMS_DATA_ROOT`` or ``<project>/.data``) — never the data
    root itself, which holds every DAG's batch folders."""
    from cmms_pm.batch import data_root

    roots = [part.strip() for part in os.environ.get(SOURCE_ROOTS_ENV, "").split(",") if part.strip()]
    return roots or [f"{data_root()}/{INCOMING}"]


def resolve_file_source(
    raw: str, *, roots: Sequence[str] | None = None, declared: str | None = None
) -> FileLocation:
    """Check a source path or URI and resolve it inside an allowed root, or raise.

    Relative paths are relative to the data root. Local paths are resolved (symlinks followed) and
    only then compared with the resolved roots. ``declared``: the spec's own source path (an admin's
    choice); when ``raw`` is exactly it, its folder is allowed too (a spec written before the default
    root became ``incoming/``). :class:`SourceNotAllowedError` names the offending part and the
    allowed roots; a missing local file is a :class:`DataSourceError`.
    """
    return _resolve_source(raw, roots, folder=False, declared=declared)


def resolve_dataset_source(raw: str, *, roots: Sequence[str] | None = None) -> FileLocation:
    """:func:`resolve_file_source` for a file, or the same checks for a **folder** of files (a
    time-series table partitioned by date, say): ``suffix`` is then ``""``. A local folder must exist
    inside an allowed root once resolved; an S3 prefix must lie under an allowed root."""
    name = raw.rsplit("/", 1)[-1] if isinstance(raw, str) else ""
    folder = os.path.splitext(name)[1].lower() not in ALLOWED_SUFFIXES
    return _resolve_source(raw, roots, folder=folder)


def _resolve_source(
    raw: str, roots: Sequence[str] | None, *, folder: bool, declared: str | None = None
) -> FileLocation:
    chosen = list(source_roots() if roots is None else roots)
    if declared is not None and raw == declared:
        chosen.append(_folder_of(declared))
    allowed = [_parse_root(root) for root in chosen]
    shown_roots = [_root_uri(root) for root in allowed]

    def refuse(why: str) -> SourceNotAllowedError:
        return SourceNotAllowedError(
            f"data source {_shown(raw)} refused: {why}; allowed roots: {shown_roots}"
        )

    scheme = _checked_scheme(raw, refuse)
    if scheme == "s3":
        return _resolve_s3(raw, allowed, refuse, folder=folder)
    path = _file_uri_path(raw, refuse) if scheme == "file" else raw
    _check_components(path.split("/"), refuse, s3=False)
    if not folder:
        _check_suffix(path, refuse)
    if not os.path.isabs(path):
        from cmms_pm.batch import data_root

        root = data_root()
        if root.startswith("s3://"):
            return _resolve_s3(f"{root}/{path}", allowed, refuse, folder=folder)
        path = os.path.join(root, path)
    return _resolve_local(path, allowed, refuse, folder=folder)


def dataset_files(
    location: FileLocation, *, filesystem: Any | None = None, roots: Sequence[str] | None = None
) -> list[FileLocation]:
    """The data files of a resolved source: itself, or every ``.csv``/``.parquet`` file under a folder
    (sorted by path). A file reached through a symlink must still resolve inside the allowed roots."""
    if location.suffix:
        return [location]
    if location.scheme == "local":
        found = []
        for folder, dirs, names in os.walk(location.path, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                if os.path.splitext(name)[1].lower() in ALLOWED_SUFFIXES and not name.startswith("."):
                    found.append(resolve_file_source(os.path.join(folder, name), roots=roots))
        return found
    if filesystem is None:
        raise DataSourceError(
            f"data source {location.uri!r} is on S3: a filesystem from a connection is needed"
        )
    from pyarrow import fs

    try:
        infos = filesystem.get_file_info(fs.FileSelector(location.path, recursive=True))
    except FileNotFoundError as err:
        raise DataSourceError(f"data source {location.uri!r} does not exist") from err
    except OSError as err:
        if _access_denied(err):
            raise DataSourceError(f"data source {location.uri!r} cannot be listed: access denied") from err
        raise DataSourceUnavailableError(f"cannot list data source {location.uri!r}: {err}") from err
    files = []
    for info in sorted(infos, key=lambda i: i.path):
        suffix = os.path.splitext(info.base_name)[1].lower()
        hidden = info.base_name.startswith(".")
        if info.type == fs.FileType.File and suffix in ALLOWED_SUFFIXES and not hidden:
            files.append(FileLocation(scheme="s3", path=info.path, uri=f"s3://{info.path}", suffix=suffix))
    return files


def _folder_of(path: str) -> str:
    """The folder of a spec's declared source (relative paths are relative to the data root)."""
    from cmms_pm.batch import data_root

    if not path.startswith(("/", "s3://", "S3://", "file:")):
        path = f"{data_root()}/{path}"
    return path.rsplit("/", 1)[0] or "/"


def read_table(location: FileLocation, *, filesystem: Any | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet source; values untouched, so the checks see them as the file has them.

    ``filesystem`` is a ``pyarrow.fs.FileSystem`` for S3 (built from an Airflow connection); local
    files need none. Raises :class:`DataValidationError` for an empty file (``has 0 rows``) or
    duplicate column names, :class:`DataSourceError` for a missing or unparsable file and
    :class:`DataSourceUnavailableError` when storage fails (a retry may help). Integers beyond int64
    stay Python ints (object column) so the checks can count them.
    """
    payload = _read_bytes(location, filesystem)
    if location.suffix == ".csv":
        frame = _parse_csv(payload, location.uri)
    else:
        frame = _parse_parquet(payload, location.uri)
    if len(frame) == 0:
        raise DataValidationError(
            f"data source {location.uri!r} has 0 rows ({len(frame.columns)} columns, no data)"
        )
    log.info("read %d rows, %d columns from %s", len(frame), len(frame.columns), location.uri)
    return frame


# --- checks on the text of a path ----------------------------------------------------------------


def _shown(raw: Any) -> str:
    """``raw`` as it may appear in a message: repr'd (control characters escaped), user-info hidden."""
    text = raw if isinstance(raw, str) else str(raw)
    text = _USERINFO.sub("***@", text)
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _unsafe_text(raw: Any) -> str | None:
    if not isinstance(raw, str):
        return f"a source path is text, got {type(raw).__name__}"
    if not raw.strip():
        return "the path is empty"
    if len(raw) > MAX_SOURCE_LENGTH:
        return f"the path is longer than {MAX_SOURCE_LENGTH} characters"
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in raw):
        return "it contains control characters (a newline, tab or similar)"
    if raw != raw.strip():
        return "it has leading or trailing whitespace"
    if "?" in raw:
        return "a query string ('?') is not allowed: endpoint and options come from the connection"
    if "#" in raw:
        return "a fragment ('#') is not allowed"
    if "~" in raw:
        return "'~' (home-directory expansion) is not allowed"
    if "\\" in raw:
        return "a backslash is not allowed"
    return None


def _checked_scheme(text: str, refuse: Any) -> str:
    """Refuse unsafe text; return its lower-cased scheme: ``"s3"``, ``"file"`` or ``""`` (a path)."""
    problem = _unsafe_text(text)
    if problem:
        raise refuse(problem)
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme not in ("", "file", "s3"):
        raise refuse(f"scheme {scheme + '://'!r} is not allowed (only file:// and s3://)")
    return scheme


def _check_components(parts: list[str], refuse: Any, *, s3: bool) -> None:
    if ".." in parts:
        raise refuse("a '..' path component is not allowed")
    if s3 and "." in parts:
        raise refuse("a '.' path component is not allowed in an S3 key")
    if s3 and "" in parts:
        raise refuse("an empty path component ('//' or a trailing '/') is not allowed in an S3 key")


def _check_suffix(path: str, refuse: Any) -> str:
    suffix = os.path.splitext(path.rsplit("/", 1)[-1])[1].lower()
    if suffix not in ALLOWED_SUFFIXES:
        raise refuse(f"suffix {suffix or '(none)'!r} is not one of {list(ALLOWED_SUFFIXES)}")
    return suffix


def _file_uri_path(raw: str, refuse: Any) -> str:
    if not raw[len("file:") :].startswith("//"):
        raise refuse("a file URI is file:///absolute/path")
    rest = raw[len("file://") :]
    authority, slash, path = rest.partition("/")
    if authority not in ("", "localhost"):
        raise refuse("a file URI names no host (file:///absolute/path)")
    return slash + path


# --- resolution --------------------------------------------------------------------------------


def _resolve_local(path: str, allowed: list[_Root], refuse: Any, *, folder: bool = False) -> FileLocation:
    """A local file (or, with ``folder``, a folder) that resolves inside an allowed root."""
    resolved = os.path.realpath(path)
    inside = any(
        root.scheme == "local" and os.path.commonpath([resolved, root.path]) == root.path for root in allowed
    )
    if not inside:
        raise refuse("it resolves outside the allowed roots (symlinks are followed)")
    if folder:
        if not os.path.isdir(resolved):
            raise DataSourceError(f"data source {resolved!r} is neither a .csv/.parquet file nor a folder")
        return FileLocation(scheme="local", path=resolved, uri=resolved, suffix="")
    suffix = _check_suffix(resolved, refuse)
    if not os.path.exists(resolved):
        raise DataSourceError(f"data source {resolved!r} does not exist")
    if not os.path.isfile(resolved):
        raise DataSourceError(f"data source {resolved!r} is not a file")
    return FileLocation(scheme="local", path=resolved, uri=resolved, suffix=suffix)


def _split_s3(raw: str, refuse: Any) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://`` URI, refusing user-info, ports and odd bucket names."""
    if not raw[len("s3:") :].startswith("//"):
        raise refuse("an S3 URI is s3://bucket/key")
    try:
        parts = urlsplit("s3" + raw[2:])
    except ValueError:
        raise refuse("it is not a valid URI") from None
    if "@" in parts.netloc:
        raise refuse("user-info ('user:password@') is not allowed: credentials come from the connection")
    if ":" in parts.netloc:
        raise refuse("a port is not allowed in an S3 URI: the endpoint comes from the connection")
    if not _BUCKET.fullmatch(parts.netloc):
        raise refuse("the bucket name is not a valid S3 bucket name")
    return parts.netloc, parts.path[1:]


def _resolve_s3(raw: str, allowed: list[_Root], refuse: Any, *, folder: bool = False) -> FileLocation:
    """An S3 object (or, with ``folder``, a prefix of objects) under an allowed root."""
    bucket, key = _split_s3(raw, refuse)
    if not key:
        what = "a prefix" if folder else "an object key"
        raise refuse(f"an S3 {'folder' if folder else 'URI'} needs {what} after the bucket")
    _check_components(key.split("/"), refuse, s3=True)
    suffix = "" if folder else _check_suffix(key, refuse)
    path = f"{bucket}/{key}"
    inside = any(root.scheme == "s3" and path.startswith(root.path + "/") for root in allowed)
    if not inside:
        raise refuse("it lies outside the allowed roots")
    return FileLocation(scheme="s3", path=path, uri=f"s3://{path}", suffix=suffix)


def _parse_root(root: str) -> _Root:
    """One allow-list entry, checked like a source (an admin's typo must not widen the list)."""

    def bad(why: str) -> DataSourceError:
        return DataSourceError(f"source root {_shown(root)} ({SOURCE_ROOTS_ENV}) is unusable: {why}")

    scheme = _checked_scheme(root, bad)
    if scheme == "s3":
        bucket, prefix = _split_s3(root, bad)
        prefix = prefix.strip("/")
        if prefix:
            _check_components(prefix.split("/"), bad, s3=True)
        return _Root("s3", f"{bucket}/{prefix}" if prefix else bucket)
    if scheme == "file":
        root = _file_uri_path(root, bad)
    if ".." in root.split("/"):
        raise bad("a '..' path component is not allowed")
    return _Root("local", os.path.realpath(root))


def _root_uri(root: _Root) -> str:
    return f"s3://{root.path}" if root.scheme == "s3" else root.path


# --- reading -----------------------------------------------------------------------------------


def _read_bytes(location: FileLocation, filesystem: Any | None) -> bytes:
    if location.scheme == "s3" and filesystem is None:
        raise DataSourceError(
            f"data source {location.uri!r} is on S3: read it through a filesystem built from an "
            "Airflow connection (none was given)"
        )
    if filesystem is None:
        return _read_local(location)
    try:
        with filesystem.open_input_file(location.path) as handle:
            return handle.read()
    except FileNotFoundError as err:
        raise DataSourceError(f"data source {location.uri!r} does not exist") from err
    except IsADirectoryError as err:
        raise DataSourceError(f"data source {location.uri!r} is not a file") from err
    except PermissionError as err:
        raise DataSourceError(f"data source {location.uri!r} cannot be read: permission denied") from err
    except OSError as err:
        if _access_denied(err):
            raise DataSourceError(f"data source {location.uri!r} cannot be read: access denied") from err
        raise DataSourceUnavailableError(f"cannot read data source {location.uri!r}: {err}") from err


def _read_local(location: FileLocation) -> bytes:
    """Open the checked file once and read that very file: never through a symlink (``O_NOFOLLOW``),
    never a FIFO or device (``O_NONBLOCK`` open, then a regular-file check), and the opened file's real
    path must be the resolved path that passed the allow-list (a folder swapped for a symlink between
    the check and the read points the open elsewhere: refused)."""
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NONBLOCK", 0)
    )
    changed = SourceNotAllowedError(
        f"data source {location.uri!r} refused: it changed between its check and its read (a symlink or "
        "a moved folder now points elsewhere); nothing was read"
    )
    try:
        fd = os.open(location.path, flags)
    except FileNotFoundError as err:
        raise DataSourceError(f"data source {location.uri!r} does not exist") from err
    except PermissionError as err:
        raise DataSourceError(f"data source {location.uri!r} cannot be read: permission denied") from err
    except OSError as err:
        if err.errno == errno.ELOOP:  # the last component became a symlink
            raise changed from None
        raise DataSourceUnavailableError(f"cannot read data source {location.uri!r}: {err}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataSourceError(f"data source {location.uri!r} is not a file")
        opened = _opened_path(fd)
        if opened is not None and opened != location.path:
            raise changed
        if opened is None and not _same_file(info, location.path):
            raise changed
        chunks = []
        while chunk := os.read(fd, 8 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise DataSourceUnavailableError(f"cannot read data source {location.uri!r}: {err}") from err
    finally:
        os.close(fd)


def _opened_path(fd: int) -> str | None:
    """The real path of an open file (Linux ``/proc/self/fd``), or None where that is not available."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _same_file(info: os.stat_result, path: str) -> bool:
    """Without ``/proc``: the opened file is the one now at the checked (resolved, symlink-free) path."""
    try:
        return os.path.samestat(info, os.stat(path, follow_symlinks=False)) and os.path.realpath(path) == path
    except OSError:
        return False


def _access_denied(err: OSError) -> bool:
    """pyarrow reports S3 403s as a plain OSError; a retry cannot fix credentials."""
    text = str(err)
    return any(
        marker in text
        for marker in ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
    )


def _parse_csv(payload: bytes, uri: str) -> pd.DataFrame:
    if not payload.strip():
        raise DataValidationError(f"data source {uri!r} has 0 rows (the file is empty, not even a header)")
    try:
        # The header as written: pandas renames a repeated 'x' to 'x.1' when it reads the whole file.
        header = pd.read_csv(io.BytesIO(payload), header=None, nrows=1, dtype=str, keep_default_na=False)
        duplicates = duplicate_columns_problem(name for name in header.iloc[0].tolist() if name != "")
        if duplicates:
            raise DataValidationError(f"data source {uri!r} has {duplicates}")
        frame = pd.read_csv(io.BytesIO(payload))
    except DataValidationError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        # Parser messages may quote the offending line; keep only the shape of the problem.
        detail = _CSV_PARSER_DETAIL.search(str(err))
        reason = detail.group(0) if detail else type(err).__name__
        raise DataSourceError(f"cannot parse data source {uri!r} as CSV: {reason}") from None
    return _restore_big_integers(frame)


def _parse_parquet(payload: bytes, uri: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(pa.BufferReader(payload))
    except (pa.ArrowException, OSError) as err:
        raise DataSourceError(f"cannot parse data source {uri!r} as Parquet: {type(err).__name__}") from None
    duplicates = duplicate_columns_problem(schema.names)
    if duplicates:
        raise DataValidationError(f"data source {uri!r} has {duplicates}")
    try:
        return pq.read_table(pa.BufferReader(payload)).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise DataSourceError(f"cannot parse data source {uri!r} as Parquet: {type(err).__name__}") from None


def _restore_big_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns that hold whole numbers beyond int64 become Python ints (object dtype).

    pandas reads such a column as uint64 or object ints when it is complete, but as text when a
    value is missing; the checks can only count overflowing values that are numbers.
    """
    for column in frame.columns:
        values = frame[column]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        converted = _whole_numbers(values)
        if converted is not None:
            frame[column] = converted
    return frame


def _whole_numbers(values: pd.Series) -> pd.Series | None:
    present = values[values.notna()]
    texts = [value for value in present.unique() if isinstance(value, str) and value.strip() != ""]
    if not texts or not all(_WHOLE_NUMBER.fullmatch(text.strip()) for text in texts):
        return None
    if any(not isinstance(value, (str, int)) or isinstance(value, bool) for value in present.unique()):
        return None
    numbers = {text: int(text) for text in texts}
    if all(_INT64_MIN <= number <= _INT64_MAX for number in numbers.values()):
        return None

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return numbers.get(value, float("nan"))
        return value

    return pd.Series([convert(value) for value in values.tolist()], index=values.index, dtype=object)
