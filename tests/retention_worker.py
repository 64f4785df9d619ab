"""A pruning run in its own process, SIGKILLed between two of its steps: ``python retention_worker.py JOB``.

The job (JSON) names the MLflow store, the model, its spec, the lock folder, the local artifact root,
and ``kill_at``: ``after_intent`` (at the first artifact deletion, before it), ``between_deletes``
(right after the first deletion) or ``before_pruned_tags`` (at the first ``pruned`` tag, every
deletion done). The test then checks what is left and that the next run finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main(raw: str) -> None:
    job = json.loads(raw)
    from mlflow import MlflowClient

    from cmms_mlflow.registry import model_registry, pruning
    from cmms_pm import registry_plan
    from cmms_pm.spec import ModelSpec

    kill_at = job["kill_at"]
    real_delete, real_tags = model_registry.delete_artifacts, model_registry._set_tags

    def delete(uri: str) -> None:
        if kill_at == "after_intent":
            os.kill(os.getpid(), signal.SIGKILL)
        real_delete(uri)
        if kill_at == "between_deletes":
            os.kill(os.getpid(), signal.SIGKILL)

    def tags(client, name, version, values):
        if (
            kill_at == "before_pruned_tags"
            and values.get(registry_plan.RETENTION_TAG) == registry_plan.PRUNED
        ):
            os.kill(os.getpid(), signal.SIGKILL)
        real_tags(client, name, version, values)

    model_registry.delete_artifacts, model_registry._set_tags = delete, tags
    client = MlflowClient(tracking_uri=job["tracking_uri"], registry_uri=job["tracking_uri"])
    pruning.prune_versions(
        client,
        job["name"],
        spec=ModelSpec.from_dict(job["spec"]),
        keep=1,
        lock_dir=Path(job["lock_dir"]),
        local_root=job["local_root"],
        actor="airflow:pm_training/killed",
        at="2026-01-01T02:00:00+00:00",
        key="killed",
    )
    print("not killed: the kill point was never reached", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1])
