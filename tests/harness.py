"""One process harness for the tests and the benchmarks: start a server in a session of its own with
a log file, wait until it is ready (a port, an HTTP answer, any predicate) with an error that shows
its log, and stop it: SIGTERM its process group, wait, SIGKILL the group, then kill whatever it left
behind (a scheduler's LocalExecutor workers, a forked child that moved to a group of its own).

On ``sys.path`` for the tests (pytest's ``pythonpath``) and for the benches (bench/lib.py adds
tests/). Standard library only, plus psutil when it is installed (it is pinned: requirements.txt);
without it the leftovers are found in /proc.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: How much of a log an error message shows.
TAIL_CHARS = 3000


class NotReadyError(RuntimeError):
    """A started server did not become ready: it exited, or its check kept failing until the timeout."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log: Path | None, chars: int = TAIL_CHARS) -> str:
    """The last ``chars`` characters of ``log`` ('' if there is none)."""
    if log is None:
        return ""
    try:
        return Path(log).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def start_process(
    command: Sequence[str], *, env: dict[str, str], log: Path, cwd: Path | None = None, append: bool = False
) -> subprocess.Popen:
    """Start ``command`` in a session (and process group) of its own, stdout and stderr to ``log``.

    Its own session lets :func:`stop_processes` signal it with everything it starts, and keeps a
    Ctrl-C in the terminal from reaching it before the harness stops it in order. The log's path is
    kept on the process (``log_path``) for :func:`wait_until_ready`'s errors; ``append`` keeps what an
    earlier start of the same server wrote there.
    """
    with open(log, "a" if append else "w") as out:
        proc = subprocess.Popen(
            list(command), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    proc.log_path = Path(log)  # type: ignore[attr-defined]
    return proc


def _log_of(proc: subprocess.Popen) -> Path | None:
    return getattr(proc, "log_path", None)


def port_open(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """Readiness check: something accepts TCP connections on ``host:port``."""

    def check() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((host, port)) == 0

    return check


def http_answers(url: str, *, statuses: Iterable[int] | None = None) -> Callable[[], bool]:
    """Readiness check: ``url`` answers HTTP (any status, or one of ``statuses``)."""
    wanted = set(statuses) if statuses is not None else None

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = resp.status
        except urllib.error.HTTPError as err:
            status = err.code
        return wanted is None or status in wanted

    return check


def wait_until_ready(
    name: str,
    ready: Callable[[], bool],
    *,
    processes: Sequence[subprocess.Popen] = (),
    logs: Sequence[Path] | None = None,
    timeout: float = 180,
    interval: float = 0.5,
) -> float:
    """Seconds until ``ready()`` is true.

    Fails early (:class:`NotReadyError`) when one of ``processes`` exits, and at ``timeout``. The
    error names ``name`` and shows the tail of the logs: ``logs``, else the processes' own (those
    :func:`start_process` wrote); for an exited process, its own log first. A check that raises
    counts as not ready (a port not yet open); its last error is part of the message.
    """
    if logs is None:
        logs = [log for proc in processes if (log := _log_of(proc)) is not None]
    started = time.monotonic()
    last_error = ""
    while True:
        for proc in processes:
            if proc.poll() is not None:
                own = _log_of(proc)
                shown = [own] if own is not None else list(logs)
                raise NotReadyError(
                    f"{name}: {_describe(proc)} exited with {proc.returncode} before it was ready"
                    + _tails(shown)
                )
        try:
            if ready():
                return time.monotonic() - started
            last_error = ""
        except Exception as exc:  # noqa: BLE001 - any failure of the check means "not yet"
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - started > timeout:
            detail = f" (last check: {last_error})" if last_error else ""
            raise NotReadyError(f"{name}: not ready after {timeout:g} s{detail}" + _tails(logs))
        time.sleep(interval)


def start_server(
    name: str,
    command: Sequence[str],
    ready: Callable[[], bool],
    *,
    env: dict[str, str],
    log: Path,
    cwd: Path | None = None,
    timeout: float = 180,
    interval: float = 0.5,
) -> subprocess.Popen:
    """:func:`start_process`, then :func:`wait_until_ready`; a server that does not get ready is
    stopped (with its children) before the error is raised."""
    proc = start_process(command, env=env, log=log, cwd=cwd)
    try:
        wait_until_ready(name, ready, processes=[proc], timeout=timeout, interval=interval)
    except BaseException:
        stop_processes([proc])
        raise
    return proc


def _describe(proc: subprocess.Popen) -> str:
    args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
    return f"pid {proc.pid} ({args[:200]})"


def _tails(logs: Iterable[Path]) -> str:
    parts = [f"\n--- last lines of {log} ---\n{log_tail(log)}" for log in logs]
    return "".join(parts)


# --- stopping ---------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, session, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time) of a living process: a pid is reused, the pair is not."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return pid, fields[19]


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (children, their children...); psutil when installed,
    else /proc."""
    try:
        import psutil
    except ImportError:
        return _descendants_from_proc(pid)
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _descendants_from_proc(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def group_members(pgid: int) -> set[int]:
    """Living processes whose process group or session is ``pgid`` (a process started by
    :func:`start_process` leads both), zombies excluded."""
    members = set()
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None and fields[0] not in ("Z", "X") and pgid in (int(fields[2]), int(fields[3])):
            members.add(int(entry))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_processes(processes: Sequence[subprocess.Popen], timeout: float = 20) -> None:
    """Stop servers started by :func:`start_process`, and everything they started.

    SIGTERM each process group; wait up to ``timeout`` seconds for the leaders; SIGKILL the groups
    (what ignored SIGTERM, and children that outlive their leader: the LocalExecutor's workers,
    forked from the scheduler, stay idle at ~300 MB each until killed); then SIGKILL every leftover:
    the descendants seen before the first signal (one that called setsid left the group) and any
    process still in the group or session. A leftover is killed only if it is still the process
    that was seen (same pid and start time), never a newcomer that reused its pid.
    """
    leftovers: set[tuple[int, str]] = set()
    for proc in processes:
        leftovers |= {ident for pid in descendants(proc.pid) if (ident := _identity(pid))}
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    for proc in processes:
        _signal_group(proc.pid, signal.SIGKILL)
        leftovers |= {ident for pid in group_members(proc.pid) if (ident := _identity(pid))}
    for pid, started in leftovers:
        if _identity(pid) == (pid, started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for proc in processes:
        proc.wait()
    # Killed leftovers are reparented to init (or a subreaper), which reaps them: wait a moment so a
    # caller that looks right after finds them gone.
    settle = time.monotonic() + 5
    while any(_identity(pid) == (pid, started) for pid, started in leftovers) and time.monotonic() < settle:
        time.sleep(0.05)


# --- PostgreSQL from the local binaries ---------------------------------------------------------


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program (on PATH or Debian's /usr/lib/postgresql/<v>/bin)."""
    for candidate in (shutil.which(name), *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))):
        if candidate and os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(
        f"PostgreSQL binary {name!r} not found: run scripts/install_test_services.sh (make test does)"
    )


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster in ``base`` on 127.0.0.1 (``pg_ctl`` starts and stops it: the
    postmaster detaches from its starter, so it is not a :func:`start_process` server)."""

    base: Path
    port: int = 0
    ctl: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def start(self, *, hba_first: str = "", max_connections: int = 200) -> PostgresCluster:
        """initdb + ``pg_ctl start`` (as the ``postgres`` user when run as root: initdb refuses root).
        ``hba_first``: pg_hba.conf lines placed before the default ones (the first match wins)."""
        as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            as_owner = ["runuser", "-u", "postgres", "--"]
        data, self.port = self.base / "data", free_port()
        initdb = [pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8"]
        made = subprocess.run([*as_owner, *initdb], capture_output=True, text=True)
        if made.returncode != 0:
            raise NotReadyError(f"PostgreSQL: initdb exited with {made.returncode}: {made.stderr[-2000:]}")
        if hba_first:
            hba = data / "pg_hba.conf"
            hba.write_text(hba_first.rstrip("\n") + "\n" + hba.read_text())
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base}"
        options += f" -c max_connections={max_connections}"
        self.ctl = [*as_owner, pg_bin("pg_ctl"), "-D", str(data)]
        started = subprocess.run(
            [*self.ctl, "-o", options, "-l", str(self.log), "-w", "start"], capture_output=True, text=True
        )
        if started.returncode != 0:
            raise NotReadyError(
                f"PostgreSQL: pg_ctl start exited with {started.returncode}: {started.stderr.strip()}"
                + _tails([self.log])
            )
        return self

    def stop(self) -> None:
        """``pg_ctl stop -m fast``, then remove the cluster's folder."""
        if self.ctl:
            subprocess.run([*self.ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
