"""File locks between the processes and threads of one machine, in a private folder, with a timeout.

A lock folder is private: created 0700, and refused if it is a symlink, belongs to another
user, or is group/world-writable (anyone who can write it could plant a symlink or another
file where our lock goes). Lock files are opened without following symlinks and without
truncation, and waiting for a lock ends after ``timeout`` seconds with :class:`LockTimeoutError`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cmms_mlflow.exceptions import LockTimeoutError, lock_dir_refused, lock_file_refused

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
