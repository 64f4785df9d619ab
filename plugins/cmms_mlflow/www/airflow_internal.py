"""Every call the api-server side makes into Airflow's internals, in one place.

Airflow's public interface for plugins is the Task SDK (``airflow.sdk``); what an api-server route
needs beyond it — the security dependencies of Airflow's own REST API, the auth manager, the
metadata database (DAG runs, human-in-the-loop details, assets), the trigger endpoint's code and
the asset manager — lives in modules Airflow may move between releases. The www room reaches them
only through this module (``tests/test_layout.py`` keeps it so), so an Airflow upgrade touches this
file. Each function does one call and returns plain values.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag, requires_authenticated
from fastapi import HTTPException, Request, status

from cmms_mlflow.integrations.links import dag_url
from cmms_pm.approval import APPROVAL_TASK_ID

__all__ = [
    "DagAccessEntity",
    "GetUserDep",
    "dag_access_allowed",
    "hitl_requests",
    "hitl_task_authorized",
    "hitl_waiting_states",
    "last_runs",
    "register_asset_change",
    "require_dag_access",
    "requires_access_dag",
    "requires_authenticated",
    "trigger_dag_run",
]


def require_dag_access(
    request: Request, user: Any, method: str, access_entity: DagAccessEntity | None, dag_id: str
) -> None:
    """Airflow's own DAG authorization of ``user`` for ``method`` on ``dag_id``: 403 if refused."""
    requires_access_dag(method, access_entity, param_dag_id=dag_id)(request, user)


def dag_access_allowed(
    request: Request, user: Any, method: str, access_entity: DagAccessEntity | None, dag_id: str
) -> bool:
    """Whether Airflow's own DAG authorization lets ``user`` do ``method`` on ``dag_id``."""
    try:
        require_dag_access(request, user, method, access_entity, dag_id)
    except HTTPException as err:
        if err.status_code == status.HTTP_403_FORBIDDEN:
            return False
        raise
    return True


def hitl_task_authorized(user: Any, assigned: set[str]) -> bool:
    """The auth manager's ``is_authorized_hitl_task``: may ``user`` answer a task assigned to
    ``assigned`` (its user id among them; SimpleAuthManager's all-admins mode: anyone)."""
    from airflow.api_fastapi.core_api.security import get_auth_manager

    return get_auth_manager().is_authorized_hitl_task(assigned_users=assigned, user=user)


def hitl_waiting_states() -> set[str]:
    """The task states in which Airflow's answer resumes a human-in-the-loop task
    (``update_hitl_detail``)."""
    from airflow.utils.state import TaskInstanceState

    return {TaskInstanceState.AWAITING_INPUT.value, TaskInstanceState.DEFERRED.value}


def trigger_dag_run(dag_id: str, conf: dict[str, Any], user: Any, request: Request, *, note: str) -> str:
    """Create a manual DAG run through Airflow's own trigger endpoint code (same checks, same audit);
    return its run id."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run as trigger
    from airflow.utils.session import create_session

    body = TriggerDAGRunPostBody(logical_date=None, conf=conf, note=note)
    with create_session() as session:
        dag_run = trigger(dag_id, body, _dag_bag(), user, session, request)
        return dag_run.run_id


@cache
def _dag_bag() -> Any:
    from airflow.api_fastapi.common.dagbag import create_dag_bag

    return create_dag_bag()


def register_asset_change(asset_name: str, extra: dict[str, Any]) -> bool:
    """An event of the Asset named ``asset_name`` with ``extra``, as the API's own asset events are
    made; False (nothing emitted) when no DAG declares the Asset, so nothing consumes it."""
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.name == asset_name).limit(1))
        if asset is None:
            return False
        asset_manager.register_asset_change(asset=asset, extra=extra, source_is_api=True, session=session)
        return True


def last_runs(dag_id: str, limit: int = 5) -> list[dict[str, Any]]:
    """The latest runs of ``dag_id`` (state, when, link), newest first."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(limit)
    with create_session() as session:
        return [
            {
                "runId": run.run_id,
                "state": str(getattr(run.state, "value", run.state)),
                "runAfter": run.run_after.isoformat() if run.run_after else None,
                "runType": str(getattr(run.run_type, "value", run.run_type)),
                "url": dag_url(dag_id, run.run_id),
            }
            for run in session.scalars(query)
        ]


def hitl_requests(dag_id: str, run_ids: Iterable[str]) -> dict[str, Any]:
    """``{run id: Airflow's record of the request}`` (task state, assigned users, the answer if any)
    of the approval task in those runs of ``dag_id``, in one query."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(TaskInstance.run_id, TaskInstance.state, HITLDetail)
        .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
        .where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.task_id == APPROVAL_TASK_ID,
            TaskInstance.map_index == -1,
            TaskInstance.run_id.in_(list(run_ids)),
        )
    )
    with create_session() as session:
        found = {}
        for run_id, state, detail in session.execute(query):
            found[run_id] = {
                "taskState": str(getattr(state, "value", state)) if state else None,
                "assigned": [u["id"] for u in detail.assigned_users],
                "answered": detail.response_received,
                "respondedBy": (detail.responded_by_user or {}).get("name"),
                "respondedAt": detail.responded_at.isoformat(timespec="seconds")
                if detail.responded_at
                else None,
                "chosen": list(detail.chosen_options or []),
            }
        return found
