"""A registry writer in its own process, as on another host: ``python registry_worker.py JOB.json``.

The job (JSON) names the MLflow store, the model, this "host"'s own lock folder and a list of
rounds. Before each round the worker signals ``ready.<round>.<worker>`` in the job's folder and
waits for the test's ``go.<round>`` file, so every worker writes at the same moment; after it, it
writes ``done.<round>.<worker>`` holding its result as JSON. The cross-host lock is whatever the
environment says (``CMMS_REGISTRY_LOCK``, ``AIRFLOW_CONN_CMMS_REGISTRY_LOCK``).

Fault and interleaving hooks (test-only, patched into this process's MLflow client):

* ``kill_after_stage``: SIGKILL this process right after its Production stage change, before the
  alias moves (the crash between a promotion's two writes).
* ``rendezvous`` {"role": "A"|"B", "wait": s}: meet the other worker after reading the snapshot
  (both plan on the same state) and again after the stage change; B changes the stage after A,
  A moves the alias after B. Without a lock that spans both, the promotions interleave exactly
  so; with one, the second worker waits at the lock and the meetings time out.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path


def _wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _meet(folder: Path, point: str, role: str, wait: float) -> None:
    (folder / f"{point}.{role}").touch()
    other = "B" if role == "A" else "A"
    _wait_for(folder / f"{point}.{other}", wait)


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    folder = Path(job["folder"])
    worker = job["worker"]

    from mlflow import MlflowClient

    from cmms_mlflow import promotion
    from cmms_pm import registry_plan

    client = MlflowClient(tracking_uri=job["tracking_uri"], registry_uri=job["tracking_uri"])
    rendezvous = job.get("rendezvous")
    transition = MlflowClient.transition_model_version_stage

    def staged(self, name, version, stage, archive_existing_versions=False):
        if rendezvous and stage == "Production" and rendezvous["role"] == "B":
            time.sleep(0.3)  # A's stage change first
        result = transition(self, name, version, stage, archive_existing_versions=archive_existing_versions)
        if stage == "Production" and job.get("kill_after_stage"):
            os.kill(os.getpid(), signal.SIGKILL)
        if rendezvous and stage == "Production":
            _meet(folder, "after_stage", rendezvous["role"], rendezvous["wait"])
            if rendezvous["role"] == "A":
                time.sleep(0.3)  # B's alias move first, A's last
        return result

    MlflowClient.transition_model_version_stage = staged
    plan = registry_plan.plan

    def planned(snapshot, request):
        if rendezvous:
            _meet(folder, "after_snapshot", rendezvous["role"], rendezvous["wait"])
        return plan(snapshot, request)

    registry_plan.plan = planned

    for index, round_ in enumerate(job["rounds"]):
        (folder / f"ready.{index}.{worker}").touch()
        if not _wait_for(folder / f"go.{index}", 300):
            raise TimeoutError(f"no go.{index}")
        expected = round_.get("expected", promotion.ANY_CHAMPION)
        if expected == "current":  # the champion seen now, as a validation would have seen it
            from cmms_mlflow import registry

            champion = registry.get_champion(client, job["name"])
            expected = str(champion.version) if champion is not None else None
        started = time.monotonic()
        try:
            outcome = promotion.change_stage(
                client,
                name=job["name"],
                version=round_["version"],
                stage="Production",
                lock_dir=Path(job["lock_dir"]),
                actor=f"worker-{worker}",
                reason=f"round {index}",
                at=f"round-{index}",
                expected_champion=expected,
                key=f"w{worker}r{index}{job.get('key_suffix', '')}",
                lock_timeout=job.get("lock_timeout", 120),
            )
            result = {"ok": True, "version": outcome["version"], "replaced": outcome["replaced"]}
        except Exception as err:  # reported to the test, which asserts on it
            result = {"ok": False, "error": type(err).__name__, "message": str(err)}
            if not type(err).__name__.endswith(("ConflictError", "TimeoutError")):
                result["traceback"] = traceback.format_exc()
        result["seconds"] = round(time.monotonic() - started, 3)
        (folder / f"done.{index}.{worker}").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
