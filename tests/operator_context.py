"""Executing the training pipeline's operators one ``execute(context)`` at a time, without Airflow.

The context is a small stand-in for Airflow's (task instance, DAG run, params, outlet events): the
operators read only those keys. Shared by the operator tests of tests/plugins/cmms_mlflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cmms_mlflow.operators import (
    ExtractBatchOperator,
    MlflowRegisterModelOperator,
    MlflowTrainModelOperator,
    MlflowTransitionModelOperator,
    MlflowValidateDataOperator,
)
from cmms_pm.params import training_params


@dataclass
class TaskInstance:
    dag_id: str
    run_id: str
    task_id: str = ""
    try_number: int = 1
    log_url: str = ""
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **kwargs: Any) -> Any:
        """Nothing from other tasks: each operator runs alone here (e.g. the report reads no promote_model
        result, so its run was not superseded)."""
        return None

    def get_dr_count(self, dag_id: str, run_ids: Any = None, states: Any = None, **kwargs: Any) -> int:
        """No other DAG run is queued or running here."""
        return 0


class OutletEvents(dict):
    def __missing__(self, key: Any) -> Any:
        self[key] = SimpleNamespace(extra={}, add=lambda asset, extra=None: None)
        return self[key]


def operator_runner(spec, model_name: str, tmp_path: Path, monkeypatch):
    """``run(operator, day=1, **params) -> result``: execute one operator for a DAG run of ``day``
    of ``spec``'s training DAG, data under ``tmp_path/data`` (``incoming/`` for source files)."""
    monkeypatch.setenv("CMMS_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    dag_id = spec.training_dag_id

    def _run(operator, day: int = 1, **params):
        end = datetime(2026, 7, day, 2, tzinfo=UTC)
        start = end.replace(day=day - 1) if day > 1 else datetime(2026, 6, 30, 2, tzinfo=UTC)
        run_id = f"manual__2026-07-{day:02d}"
        defaults = {name: p["default"] for name, p in training_params(spec).items()}
        context = {
            "params": {**defaults, "model_name": model_name, "experiment_name": model_name, **params},
            "ti": TaskInstance(dag_id=dag_id, run_id=run_id, task_id=operator.task_id),
            "dag_run": SimpleNamespace(
                dag_id=dag_id, run_id=run_id, run_after=end, run_type="manual",
                triggering_user_name="tester",
            ),
            "dag": SimpleNamespace(dag_id=dag_id),
            "run_id": run_id,
            "data_interval_start": start,
            "data_interval_end": end,
            "outlet_events": OutletEvents(),
        }  # fmt: skip
        _run.ti = context["ti"]  # type: ignore[attr-defined]  # what the last task pushed (ti.pushed)
        return operator.execute(context)

    return _run


def write_incoming(tmp_path: Path, frame, name: str = "ai4i.csv") -> str:
    frame.to_csv(tmp_path / "data" / "incoming" / name, index=False)
    return f"incoming/{name}"


def train_and_stage(
    run, spec, model_name: str, day: int, source: str, **params: Any
) -> tuple[dict, dict, str]:
    """extract → validate_data → train → register → Staging (``params``: the run's, e.g. a
    hyperparameter); returns (manifest, checks, version)."""
    definition = spec.to_dict()
    manifest = run(
        ExtractBatchOperator(task_id="extract_data", spec=definition), day, data_source=source, **params
    )
    checks = run(
        MlflowValidateDataOperator(task_id="validate_data", spec=definition, manifest=manifest),
        day,
        data_source=source,
        **params,
    )
    trained = run(
        MlflowTrainModelOperator(task_id="train_model", spec=definition, dataset=manifest, checks=checks),
        day,
        **params,
    )
    version = run(
        MlflowRegisterModelOperator(
            task_id="register_model", model_name=model_name, training=trained, spec=definition
        ),
        day,
    )["version"]
    run(
        MlflowTransitionModelOperator(
            task_id="stage_model", model_name=model_name, version=version, stage="Staging", spec=definition
        ),
        day,
    )
    return manifest, checks, version
