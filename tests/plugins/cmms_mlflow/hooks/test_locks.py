"""Locks as an attacker on the same machine would probe them: planted symlinks, borrowed folders, a
lock that is never released."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from cmms_mlflow.exceptions import LockRefusedError, LockTimeoutError
from cmms_mlflow.hooks import locks
from cmms_mlflow.registry import model_registry

MODEL = "pm_model"
LOCK_FILE = locks.lock_file_name(MODEL, "registry")


@pytest.fixture
def lock_dir(tmp_path) -> Path:
    return tmp_path / "locks"


def test_a_new_lock_folder_is_private_and_its_lock_files_are_0600(lock_dir):
    with model_registry.model_lock(lock_dir, MODEL):
        pass
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((lock_dir / LOCK_FILE).stat().st_mode) == 0o600


def test_a_symlink_planted_at_the_lock_path_is_refused_and_its_target_untouched(lock_dir, tmp_path):
    victim = tmp_path / "victim.conf"
    victim.write_text("important=1\n")
    lock_dir.mkdir(mode=0o700)
    (lock_dir / LOCK_FILE).symlink_to(victim)
    with pytest.raises(LockRefusedError, match="symlink"), model_registry.model_lock(lock_dir, MODEL):
        pytest.fail("the lock was taken through a symlink")
    assert victim.read_text() == "important=1\n"


def test_an_existing_lock_file_is_neither_truncated_nor_rewritten(lock_dir):
    lock_dir.mkdir(mode=0o700)
    (lock_dir / LOCK_FILE).write_text("left by an earlier version\n")
    with model_registry.model_lock(lock_dir, MODEL):
        pass
    assert (lock_dir / LOCK_FILE).read_text() == "left by an earlier version\n"


def test_a_fifo_planted_at_the_lock_path_is_refused_without_blocking(lock_dir):
    lock_dir.mkdir(mode=0o700)
    os.mkfifo(lock_dir / LOCK_FILE)
    with (
        pytest.raises(LockRefusedError, match="not a regular file"),
        model_registry.model_lock(lock_dir, MODEL),
    ):
        pass


def test_a_symlinked_lock_folder_is_refused(lock_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    lock_dir.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(LockRefusedError, match="symlink"), model_registry.model_lock(lock_dir, MODEL):
        pass
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
def test_a_lock_folder_others_can_write_is_refused(lock_dir, mode):
    lock_dir.mkdir()
    lock_dir.chmod(mode)
    with (
        pytest.raises(LockRefusedError, match="group- or world-writable"),
        model_registry.model_lock(lock_dir, MODEL),
    ):
        pass
    assert list(lock_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another user")
def test_a_lock_folder_of_another_user_is_refused(lock_dir):
    lock_dir.mkdir(mode=0o700)
    os.chown(lock_dir, 65534, 65534)  # nobody
    with (
        pytest.raises(LockRefusedError, match="belongs to uid 65534"),
        model_registry.model_lock(lock_dir, MODEL),
    ):
        pass


def test_a_held_lock_makes_the_next_waiter_time_out_with_the_lock_named(lock_dir):
    held, release = threading.Event(), threading.Event()

    def holder():
        with model_registry.model_lock(lock_dir, MODEL):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        with (
            pytest.raises(LockTimeoutError) as raised,
            model_registry.model_lock(lock_dir, MODEL, timeout=0.5),
        ):
            pytest.fail("two holders at once")
        waited = time.monotonic() - started
    finally:
        release.set()
        thread.join(10)
    message = str(raised.value)
    assert LOCK_FILE in message and str(lock_dir) in message and "timeout 0.5 s" in message
    assert 0.5 <= waited < 3
    with model_registry.model_lock(lock_dir, MODEL, timeout=5):  # released: the next waiter gets it
        pass


def test_a_waiter_gets_the_lock_as_soon_as_it_is_released(lock_dir):
    got = []

    def waiter():
        with model_registry.model_lock(lock_dir, MODEL, timeout=10):
            got.append(time.monotonic())

    with model_registry.model_lock(lock_dir, MODEL):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)
        assert got == []  # still waiting while the lock is held
        released = time.monotonic()
    thread.join(10)
    assert got and got[0] - released < 1.0


def test_the_hook_takes_its_sqlite_schema_lock_in_the_private_lock_folder(monkeypatch, tmp_path):
    import json

    from cmms_mlflow.hooks.mlflow_hook import MlflowHook

    db = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": f"sqlite:///{db}"})
    )
    hook = MlflowHook()
    with hook.session() as client:
        client.search_experiments(max_results=1)
    assert hook.lock_dir == db.parent / "locks"
    assert stat.S_IMODE(hook.lock_dir.stat().st_mode) == 0o700
    assert [p.name for p in hook.lock_dir.iterdir()] == [locks.lock_file_name("mlflow.db", "schema")]
