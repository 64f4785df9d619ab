"""Bench-only Airflow plugin folder: the project's plugin plus a listener that records, in each
task process, its peak RSS and CPU time when the task ends (P3).

bench/pipeline.py points ``[core] plugins_folder`` of its throwaway deployment here and sets
``CMMS_BENCH_TASK_STATS`` to a JSON-lines file; nothing else uses it.
"""

from __future__ import annotations

import json
import os
import resource
import time

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from cmms_mlflow.plugin import CmmsMlflowPlugin  # noqa: F401 - registered from this folder too


def _record(task_instance, state: str) -> None:
    path = os.environ.get("CMMS_BENCH_TASK_STATS")
    if not path:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    line = {
        "dag_id": task_instance.dag_id,
        "run_id": task_instance.run_id,
        "task_id": task_instance.task_id,
        "state": state,
        "pid": os.getpid(),
        "maxrss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "at": time.time(),
    }
    with open(path, "a") as sink:
        sink.write(json.dumps(line) + "\n")


class TaskStatsListener:
    @hookimpl
    def on_task_instance_success(self, previous_state, task_instance):
        _record(task_instance, "success")

    @hookimpl
    def on_task_instance_failed(self, previous_state, task_instance, error):
        _record(task_instance, "failed")


class BenchTaskStatsPlugin(AirflowPlugin):
    name = "cmms_bench_task_stats"
    listeners = [TaskStatsListener()]
