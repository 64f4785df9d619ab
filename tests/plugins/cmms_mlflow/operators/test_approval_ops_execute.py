"""``execute(context)`` of plugins/cmms_mlflow/operators/approval_ops.py's operator on a real MLflow:
the request is kept on the version, written to Airflow (the supervisor channel of a task, recorded
here) and the task parks until a person answers."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskAwaitingInput
from airflow.sdk.execution_time import task_runner
from operator_context import TaskInstance

from cmms_mlflow.exceptions import ModelOwnershipError
from cmms_mlflow.operators.approval_ops import MlflowApprovalOperator
from cmms_pm.approval import APPROVE, PENDING, REJECT


class SupervisorChannel:
    """What a task sends its supervisor (Airflow's API, for a task run by a worker)."""

    def __init__(self) -> None:
        self.sent: list = []

    def send(self, msg):
        self.sent.append(msg)


def _context(operator, fresh_model):
    dag_id = fresh_model.spec.training_dag_id
    ti = TaskInstance(dag_id=dag_id, run_id="manual__2026-07-01", task_id=operator.task_id)
    ti.id = uuid.uuid4()
    ti.map_index = -1
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=ti.run_id, run_type="manual", logical_date=None)
    return {
        "ti": ti,
        "task_instance": ti,
        "task": operator,
        "dag_run": dag_run,
        "params": {"approval_timeout_hours": 2},
    }


def test_the_request_is_kept_on_the_version_sent_to_airflow_and_the_task_waits(
    fresh_model, client, monkeypatch
):
    channel = SupervisorChannel()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", channel, raising=False)
    validation = {
        "challenger_version": fresh_model.version,
        "reason": "F1 0.61 meets 0.40",
        "decision": "promote",
    }
    operator = MlflowApprovalOperator(
        task_id="approve_promotion", model_name=fresh_model.name, validation=validation,
        registered_model=fresh_model.name, approvers=["approver"],
    )  # fmt: skip

    with pytest.raises(TaskAwaitingInput):
        operator.execute(_context(operator, fresh_model))

    tags = client.get_model_version(fresh_model.name, fresh_model.version).tags
    assert tags["approval_status"] == PENDING and tags["approval_timeout_hours"] == "2"
    assert "manual__2026-07-01" in tags["approval_requested_by"]
    [request] = channel.sent
    assert request.options == [APPROVE, REJECT] and request.defaults == [REJECT]  # silence never approves
    assert request.subject == f"Promote {fresh_model.name} version {fresh_model.version} to Production?"
    assert [user.id for user in request.assigned_users] == ["approver"]
    assert "F1 0.61 meets 0.40" in request.body


def test_a_request_for_another_specs_model_writes_nothing(fresh_model, client, monkeypatch):
    channel = SupervisorChannel()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", channel, raising=False)
    validation = {"challenger_version": fresh_model.version, "reason": "x", "decision": "promote"}
    operator = MlflowApprovalOperator(
        task_id="approve_promotion", model_name=fresh_model.name, validation=validation,
        registered_model="someone_elses_model",
    )  # fmt: skip
    with pytest.raises(ModelOwnershipError):
        operator.execute(_context(operator, fresh_model))
    assert "approval_status" not in client.get_model_version(fresh_model.name, fresh_model.version).tags
    assert channel.sent == []
