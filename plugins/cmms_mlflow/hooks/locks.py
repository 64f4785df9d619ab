"""File locks between the processes and threads of one machine, in a private folder, with a timeout.

The registry lock of a model (:func:`cmms_mlflow.registry.model_registry.model_lock`) is this file lock plus,
when the Airflow connection ``cmms_registry_lock`` exists, a PostgreSQL advisory lock that every
host sees (:func:`advisory_lock`).

A lock folder is private: created 0700, and refused if it is a symlink, belongs to another
user, or is group/world-writable (anyone who can write it could plant a symlink or another
file where our lock goes). Lock files are opened without following symlinks and without
truncation, and waiting for a lock ends after ``timeout`` seconds with :class:`LockTimeoutError`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import socket
import stat
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmms_mlflow.exceptions import (
    LockTimeoutError,
    lock_connection_invalid,
    lock_connection_missing,
    lock_dir_refused,
    lock_file_refused,
    lock_lost,
    lock_mode_invalid,
    lock_timed_out,
    lock_unreachable,
)

DEFAULT_LOCK_TIMEOUT = 120.0
_POLL_MIN, _POLL_MAX = 0.02, 0.5


def lock_file_name(name: str, suffix: str) -> str:
    """A file name for the lock of ``name`` (any string: a model name, a DB file name)."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.{suffix}.lock"


@contextmanager
def file_lock(lock_dir: Path, file_name: str, *, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_dir/file_name``; wait at most ``timeout`` s (default 120)."""
    timeout = DEFAULT_LOCK_TIMEOUT if timeout is None else timeout
    fd = _open_lock_file(lock_dir, file_name)
    try:
        _acquire(fd, lock_dir / file_name, timeout)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock_file(lock_dir: Path, file_name: str) -> int:
    dir_fd = open_private_dir(lock_dir)
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(file_name, flags, 0o600, dir_fd=dir_fd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise lock_file_refused(lock_dir / file_name, "it is a symlink") from err
            raise
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
        os.close(fd)
        raise lock_file_refused(lock_dir / file_name, "it is not a regular file of ours with a single link")
    return fd


def open_private_dir(lock_dir: Path) -> int:
    """A file descriptor of ``lock_dir``, created 0700 if missing, after checking it is private."""
    try:
        os.mkdir(lock_dir, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        lock_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(lock_dir, 0o700)
        except FileExistsError:
            pass
    try:
        dir_fd = os.open(lock_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = "a symlink" if os.path.islink(lock_dir) else "not a folder"
            raise lock_dir_refused(lock_dir, f"it is {kind}") from err
        raise
    info = os.fstat(dir_fd)
    problem = None
    if info.st_uid != os.geteuid():
        problem = f"it belongs to uid {info.st_uid}, not to this process's uid {os.geteuid()}"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"it is group- or world-writable (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        os.close(dir_fd)
        raise lock_dir_refused(lock_dir, problem)
    return dir_fd


def _acquire(fd: int, path: Path, timeout: float) -> None:
    started = time.monotonic()
    pause = _POLL_MIN
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            waited = time.monotonic() - started
            if waited >= timeout:
                raise LockTimeoutError(
                    f"lock {path.name!r} in {str(path.parent)!r} is still held by another process or "
                    f"thread after waiting {waited:.1f} s (timeout {timeout:g} s)"
                ) from None
            time.sleep(min(pause, max(timeout - waited, 0.0)))
            pause = min(pause * 2, _POLL_MAX)


# --- a lock that spans hosts: a PostgreSQL advisory lock ------------------------------------------

#: Airflow connection (PostgreSQL) whose database holds the registry locks of every host.
REGISTRY_LOCK_CONN_ID = "cmms_registry_lock"
#: ``auto`` (default): the advisory lock when the connection exists, else the file lock only;
#: ``postgres``: the connection is required; ``file``: the file lock only (one host).
REGISTRY_LOCK_MODE_ENV = "CMMS_REGISTRY_LOCK"
_PG_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "target_session_attrs")


@dataclass(frozen=True)
class PostgresLockTarget:
    """Where the advisory locks live: psycopg2 keyword arguments (the password is never shown)."""

    params: Mapping[str, Any] = field(repr=False)
    description: str = ""


def registry_lock_target() -> PostgresLockTarget | None:
    """The PostgreSQL database of the cross-host registry lock, or None for the file lock only.

    Read from the Airflow connection :data:`REGISTRY_LOCK_CONN_ID` on every call (tasks get it
    through the execution API, the api-server from its secrets backends). Point it at the Airflow
    metadata database (or any PostgreSQL every worker and the api-server reach): advisory locks
    need no table and no privilege beyond CONNECT.
    """
    mode = os.environ.get(REGISTRY_LOCK_MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "postgres", "file"):
        raise lock_mode_invalid(mode)
    if mode == "file":
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(REGISTRY_LOCK_CONN_ID)
    except AirflowNotFoundException:
        conn = None
    if conn is None:
        if mode == "postgres":
            raise lock_connection_missing(REGISTRY_LOCK_CONN_ID)
        return None
    if (conn.conn_type or "").lower() not in ("postgres", "postgresql"):
        raise lock_connection_invalid(
            REGISTRY_LOCK_CONN_ID, f"conn_type {conn.conn_type!r} is not 'postgres'"
        )
    extra = conn.extra_dejson
    params: dict[str, Any] = {
        "host": conn.host or "localhost",
        "port": conn.port or 5432,
        "user": conn.login or None,
        "password": conn.password or None,
        "dbname": conn.schema or "postgres",
        **{k: str(extra[k]) for k in _PG_OPTIONS if extra.get(k)},
    }
    description = f"postgres://{params['host']}:{params['port']}/{params['dbname']}"
    return PostgresLockTarget(
        params={k: v for k, v in params.items() if v is not None}, description=description
    )


def advisory_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` (the registered model), stable everywhere."""
    digest = hashlib.sha256(f"cmms_mlflow.registry.model_registry:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class HeldLock:
    """A held lock; :meth:`verify` raises if a cross-host lock was lost (its connection died)."""

    def __init__(self, description: str, connection: Any = None) -> None:
        self.description = description
        self.connection = connection

    def verify(self) -> None:
        if self.connection is None:
            return
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as err:
            raise lock_lost(self.description, err) from err


@contextmanager
def advisory_lock(
    target: PostgresLockTarget, name: str, *, timeout: float | None = None
) -> Iterator[HeldLock]:
    """Hold ``pg_advisory_lock(advisory_key(name))`` in ``target``; wait at most ``timeout`` s.

    A session lock on a connection of its own: released on exit, and by PostgreSQL when the
    holder dies (its connection closes; TCP keepalives of 30 s detect a vanished host).
    """
    import psycopg2

    timeout = DEFAULT_LOCK_TIMEOUT if timeout is None else timeout
    key = advisory_key(name)
    label = f"registry lock of {name!r} in {target.description}"
    try:
        connection = psycopg2.connect(
            **target.params,
            connect_timeout=max(1, min(10, int(timeout) or 1)),
            application_name=f"cmms registry lock {socket.gethostname()}:{os.getpid()}"[:63],
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
            options="-c statement_timeout=10000 -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
            "-c tcp_keepalives_count=3",
        )
    except psycopg2.Error as err:
        raise lock_unreachable(label, err) from err
    try:
        connection.autocommit = True
        started = time.monotonic()
        pause = _POLL_MIN
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cursor.fetchone()[0]:
                    break
            waited = time.monotonic() - started
            if waited >= timeout:
                raise lock_timed_out(label, _holder(connection, key), waited, timeout)
            time.sleep(min(pause, max(timeout - waited, 0.0)))
            pause = min(pause * 2, _POLL_MAX)
        try:
            yield HeldLock(label, connection)
        finally:
            with suppress(psycopg2.Error), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
    except psycopg2.Error as err:
        raise lock_unreachable(label, err) from err
    finally:
        connection.close()


def _holder(connection: Any, key: int) -> str:
    """Who holds the advisory lock ``key`` (its application name), for the timeout message."""
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
                "AND l.objsubid = 1 LIMIT 1",
                (high, low),
            )
            row = cursor.fetchone()
    except Exception:
        return "unknown"
    return row[0] if row and row[0] else "unknown"
