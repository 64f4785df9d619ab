"""A registry writer in its own process, as on another host: ``python registry_worker.py JOB.json``.

The job (JSON) names the MLflow store, the model, this "host"'s own lock folder and a list of
rounds. Each round: the worker waits for the test's ``open.<round>`` (the registry is quiet),
reads the champion a round's ``expected: "current"`` asks for (as a validation would have), signals
``ready.<round>.<worker>`` and waits for ``go.<round>``, so every worker writes at the same
moment; then it writes ``done.<round>.<worker>`` holding its result as JSON. The cross-host lock
is whatever the environment says (``CMMS_REGISTRY_LOCK``, ``AIRFLOW_CONN_CMMS_REGISTRY_LOCK``).

Fault and interleaving hooks (test-only, patched into this process's MLflow client):

* ``kill_after_stage``: SIGKILL this process right after its Production stage change, before the
  alias moves (the crash between a promotion's two writes).
* ``kill_before_history_complete``: SIGKILL this process after every registry write of its promotion,
  before its history event (recorded as an intent) is completed (the api-server dying between the
  registry write and the history).
* ``rendezvous`` {"role": "A"|"B", "wait": s}: both workers meet after reading the snapshot (both
  plan on the same state); B changes the stage only after A did, and A moves the ``champion``
  alias only after B did. Without a lock that spans both, the promotions interleave exactly so;
  with one, the second worker waits at the lock, and each wait of the first ends after ``wait`` s.
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

    from cmms_mlflow.registry import promotion
    from cmms_pm import registry_plan

    client = MlflowClient(tracking_uri=job["tracking_uri"], registry_uri=job["tracking_uri"])
    rendezvous = job.get("rendezvous") or {}
    role, wait = rendezvous.get("role"), rendezvous.get("wait", 0)
    transition = MlflowClient.transition_model_version_stage
    set_alias = MlflowClient.set_registered_model_alias

    def staged(self, name, version, stage, archive_existing_versions=False):
        if role == "B" and stage == "Production":
            _wait_for(folder / "stage.A", wait)  # A's stage change first
        result = transition(self, name, version, stage, archive_existing_versions=archive_existing_versions)
        if stage == "Production" and job.get("kill_after_stage"):
            os.kill(os.getpid(), signal.SIGKILL)
        if role and stage == "Production":
            (folder / f"stage.{role}").touch()
        return result

    def aliased(self, name, alias, version):
        if role == "A" and alias == "champion":
            _wait_for(folder / "alias.B", wait)  # B's champion alias first, A's last
        result = set_alias(self, name, alias, version)
        if role and alias == "champion":
            (folder / f"alias.{role}").touch()
        return result

    MlflowClient.transition_model_version_stage = staged
    MlflowClient.set_registered_model_alias = aliased
    if job.get("kill_before_history_complete"):
        from cmms_mlflow.registry import history

        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        history.complete = killed
    plan = registry_plan.plan

    def planned(snapshot, request):
        if role:
            _meet(folder, "after_snapshot", role, wait)
        return plan(snapshot, request)

    registry_plan.plan = planned

    for index, round_ in enumerate(job["rounds"]):
        if not _wait_for(folder / f"open.{index}", 300):
            raise TimeoutError(f"no open.{index}")
        expected = round_.get("expected", promotion.ANY_CHAMPION)
        if expected == "current":  # the champion seen before the round, as a validation saw it
            from cmms_mlflow.registry import model_registry

            champion = model_registry.get_champion(client, job["name"])
            expected = str(champion.version) if champion is not None else None
        (folder / f"ready.{index}.{worker}").touch()
        if not _wait_for(folder / f"go.{index}", 300):
            raise TimeoutError(f"no go.{index}")
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
