"""The process harness (tests/harness.py): what it starts, it stops, children and strays included;
a server that never gets ready is named, with its log, in the error."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from harness import (
    NotReadyError,
    free_port,
    group_members,
    http_answers,
    port_open,
    start_process,
    start_server,
    stop_processes,
    wait_until_ready,
)

#: A server stand-in: a child in its group, a grandchild that left it (setsid), each writing its pid
#: to a file; then it sleeps. ``ignore_term`` makes every one of them ignore SIGTERM.
SPAWNER = """
import os, signal, subprocess, sys, time
folder, ignore_term = sys.argv[1], sys.argv[2] == "1"
if ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
sleeper = "import signal, time; {} time.sleep(300)".format(
    "signal.signal(signal.SIGTERM, signal.SIG_IGN);" if ignore_term else "")
child = subprocess.Popen([sys.executable, "-c", sleeper])
stray = subprocess.Popen([sys.executable, "-c", sleeper], start_new_session=True)
for name, pid in (("child", child.pid), ("stray", stray.pid)):
    with open(os.path.join(folder, name + ".pid"), "w") as out:
        out.write(str(pid))
print("spawned", child.pid, stray.pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _start_spawner(tmp_path: Path, *, ignore_term: bool = False):
    log = tmp_path / "spawner.log"
    command = [sys.executable, "-c", SPAWNER, str(tmp_path), "1" if ignore_term else "0"]
    proc = start_process(command, env=dict(os.environ), log=log)
    pid_files = [tmp_path / "child.pid", tmp_path / "stray.pid"]
    wait_until_ready(
        "spawner", lambda: all(p.exists() and p.read_text() for p in pid_files), processes=[proc], logs=[log],
        timeout=30, interval=0.05,
    )  # fmt: skip
    return proc, [int(p.read_text()) for p in pid_files]


@pytest.mark.parametrize("ignore_term", [False, True], ids=["terminates", "ignores-sigterm"])
def test_stopping_a_server_leaves_no_process_of_its_group_and_no_stray_child(tmp_path, ignore_term):
    proc, (child, stray) = _start_spawner(tmp_path, ignore_term=ignore_term)
    assert os.getpgid(proc.pid) == proc.pid and os.getsid(proc.pid) == proc.pid  # a session of its own
    assert os.getpgid(child) == proc.pid  # the child shares its group...
    assert os.getpgid(stray) == stray != proc.pid  # ...the stray left it
    members = group_members(proc.pid)
    assert {proc.pid, child} <= members and stray not in members

    started = time.monotonic()
    stop_processes([proc], timeout=1 if ignore_term else 20)

    assert proc.returncode is not None
    assert group_members(proc.pid) == set()
    assert not _alive(child) and not _alive(stray)
    assert time.monotonic() - started < 10


def test_stopping_a_server_that_already_exited_is_quiet(tmp_path):
    proc = start_process([sys.executable, "-c", "pass"], env=dict(os.environ), log=tmp_path / "quick.log")
    proc.wait(timeout=30)
    stop_processes([proc])
    assert proc.returncode == 0


def test_a_server_that_never_gets_ready_is_named_with_its_log_tail(tmp_path):
    log = tmp_path / "never.log"
    script = "import time; print('listening soon, honest', flush=True); time.sleep(300)"
    proc = start_process([sys.executable, "-c", script], env=dict(os.environ), log=log)
    try:
        with pytest.raises(NotReadyError) as caught:
            wait_until_ready(
                "never-ready server", port_open(free_port()), processes=[proc], logs=[log], timeout=1
            )
    finally:
        stop_processes([proc])
    message = str(caught.value)
    assert message.startswith("never-ready server: not ready after 1 s")
    assert "listening soon, honest" in message and str(log) in message


def test_a_server_that_dies_while_starting_fails_at_once_with_its_exit_code_and_log(tmp_path):
    log = tmp_path / "dies.log"
    script = "import sys; print('bad config: no such database', file=sys.stderr); sys.exit(3)"
    proc = start_process([sys.executable, "-c", script], env=dict(os.environ), log=log)
    started = time.monotonic()
    with pytest.raises(NotReadyError) as caught:
        wait_until_ready("dying server", lambda: False, processes=[proc], logs=[log], timeout=60)
    assert time.monotonic() - started < 30  # did not wait for the timeout
    message = str(caught.value)
    assert "dying server" in message and "exited with 3" in message
    assert "bad config: no such database" in message


def test_a_check_that_raises_counts_as_not_ready_and_its_last_error_is_reported(tmp_path):
    def refuse() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(NotReadyError, match=r"last check: ConnectionRefusedError: nobody home"):
        wait_until_ready("refusing", refuse, timeout=0.2, interval=0.05)


def test_an_http_server_is_ready_once_it_answers_and_its_port_is_open(tmp_path):
    port = free_port()
    log = tmp_path / "http.log"
    server = ["http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    command = [sys.executable, "-m", *server]
    proc = start_process(command, env=dict(os.environ), log=log)
    try:
        seconds = wait_until_ready(
            "http.server", http_answers(f"http://127.0.0.1:{port}/", statuses={200}), processes=[proc],
            logs=[log], timeout=60, interval=0.05,
        )  # fmt: skip
        assert 0 <= seconds < 60
        assert port_open(port)()
        assert not http_answers(f"http://127.0.0.1:{port}/missing", statuses={200})()
    finally:
        stop_processes([proc])
    assert not port_open(port)()


def test_a_server_that_does_not_get_ready_is_stopped_with_its_children(tmp_path):
    def never() -> bool:  # its children start meanwhile (5 s: ample for two python -c on a loaded machine)
        return False

    log = tmp_path / "spawner.log"
    command = [sys.executable, "-c", SPAWNER, str(tmp_path), "0"]
    with pytest.raises(NotReadyError, match="^spawner never ready: not ready after 5 s"):
        start_server("spawner never ready", command, never, env=dict(os.environ), log=log, timeout=5)
    child, stray = (int((tmp_path / f"{name}.pid").read_text()) for name in ("child", "stray"))
    assert not _alive(child) and not _alive(stray)


def test_without_psutil_proc_finds_the_same_descendants(tmp_path):
    import harness

    proc, (child, stray) = _start_spawner(tmp_path)
    try:
        from_proc = harness._descendants_from_proc(proc.pid)
        assert {child, stray} <= from_proc
        assert from_proc == harness.descendants(proc.pid)  # psutil's answer, when it is installed
    finally:
        stop_processes([proc])
