"""The DAG factory: what a spec's sections become on the DAGs it builds."""

from __future__ import annotations

from datetime import timedelta

from cmms_mlflow.factory import build_scoring_dag, build_training_dag
from cmms_pm.spec import ModelSpec


def test_every_task_retries_as_the_specs_retries_section_says(shipped_spec):
    default = build_training_dag(shipped_spec)
    assert {(t.retries, t.retry_delay, t.retry_exponential_backoff) for t in default.tasks} == {
        (2, timedelta(seconds=30), True)
    }
    raw = {
        **shipped_spec.to_dict(),
        "retries": {"attempts": 4, "delay_seconds": 2, "exponential_backoff": False},
    }
    spec = ModelSpec.from_dict(raw)
    for dag in (build_training_dag(spec), build_scoring_dag(spec)):
        assert dag.tasks
        for task in dag.tasks:
            assert (task.retries, task.retry_delay, task.retry_exponential_backoff) == (
                4, timedelta(seconds=2), False,
            ), task.task_id  # fmt: skip
            assert task.max_retry_delay == timedelta(seconds=600)
