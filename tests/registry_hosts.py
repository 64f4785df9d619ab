"""Run registry writers in separate processes, each with its own lock folder (as on separate hosts),
in lock-step rounds: see ``registry_worker.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

WORKER = Path(__file__).with_name("registry_worker.py")


def _wait(paths: list[Path], processes: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if any(p.poll() is not None and p.returncode != 0 for p in processes):
            return  # a worker died: the caller looks at return codes
        if time.monotonic() > deadline:
            tails = "\n".join(log.read_text()[-3000:] for log in logs)
            raise TimeoutError(f"workers did not reach {[p.name for p in paths if not p.exists()]}:\n{tails}")
        time.sleep(0.02)


def run_hosts(
    folder: Path,
    *,
    tracking_uri: str,
    name: str,
    jobs: list[dict],
    after_round: Callable[[int, list[dict | None]], None] | None = None,
    timeout: float = 240,
) -> tuple[list[list[dict | None]], list[int]]:
    """Start one worker per job (``rounds`` + options), open each round once the previous one is
    checked, release it when all are ready (``registry_worker.py``), call
    ``after_round(index, results)`` once all finished it; return the results per round and the exit
    codes. A worker that dies (SIGKILL) reports ``None`` for its rounds."""
    folder.mkdir(parents=True, exist_ok=True)
    processes, logs = [], []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for worker, job in enumerate(jobs):
        lock_dir = folder / f"host-{worker}" / "locks"
        lock_dir.parent.mkdir()
        job_file = folder / f"job-{worker}.json"
        job_file.write_text(
            json.dumps({"folder": str(folder), "worker": worker, "tracking_uri": tracking_uri, "name": name,
                        "lock_dir": str(lock_dir), **job})
        )  # fmt: skip
        log = folder / f"worker-{worker}.log"
        logs.append(log)
        with open(log, "w") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), str(job_file)], env=env, stdout=out, stderr=out
                )
            )
    rounds = max(len(job["rounds"]) for job in jobs)
    results: list[list[dict | None]] = []
    try:
        for index in range(rounds):
            alive = [w for w, p in enumerate(processes) if p.poll() is None]
            (folder / f"open.{index}").touch()
            _wait([folder / f"ready.{index}.{w}" for w in alive], processes, logs, timeout)
            (folder / f"go.{index}").touch()
            _wait([folder / f"done.{index}.{w}" for w in alive], processes, logs, timeout)
            done = [folder / f"done.{index}.{w}" for w in range(len(jobs))]
            results.append([json.loads(d.read_text()) if d.exists() else None for d in done])
            if after_round is not None:
                after_round(index, results[-1])
        codes = [p.wait(timeout=timeout) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for result in (r for round_ in results for r in round_ if r and "traceback" in r):
        raise AssertionError(result["traceback"])
    return results, codes


def worker_logs(folder: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(folder.glob("worker-*.log")))
