"""Who may do what through the model API, decided by Airflow's own authorization of DAGs.

A model belongs to the spec whose ``registered_model`` it is (a model has one owner), so a request
about a model is authorized against that spec's DAGs: reading it against its training DAG, training
it against the trigger permission of that DAG, scoring rows against its scoring DAG; a name no spec
claims belongs to ``model_promotion``, the DAG that acts on any model. Approvals follow the spec's
``approvers`` as Airflow's human-in-the-loop endpoint does. The calls into Airflow are
:mod:`cmms_mlflow.www.airflow_internal`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request, status
from pydantic import ValidationError

from cmms_mlflow.www.airflow_internal import (
    DagAccessEntity,
    GetUserDep,
    dag_access_allowed,
    hitl_task_authorized,
    require_dag_access,
)
from cmms_mlflow.www.datamodels import TrainRequest

if TYPE_CHECKING:
    from cmms_pm.registry_plan import Authority
    from cmms_pm.spec import ModelSpec

PROMOTION_DAG_ID = "model_promotion"


@cache
def specs() -> tuple[ModelSpec, ...]:
    """The model specs this api-server serves (read once per process)."""
    from cmms_pm.spec import load_specs

    return tuple(load_specs()[0])


def owner_spec(name: str | None) -> ModelSpec | None:
    """The spec whose registered model is ``name`` (a model has one owner), or None."""
    return next((s for s in specs() if s.registered_model == name), None)


def owner_dag(name: str | None) -> str:
    """The training DAG of ``name``'s spec, else ``model_promotion`` (it acts on any model)."""
    spec = owner_spec(name)
    return spec.training_dag_id if spec is not None else PROMOTION_DAG_ID


def training_spec(body: TrainRequest) -> ModelSpec | None:
    """The spec a training request runs: ``pipeline``, else the spec of ``modelName``, else the only
    one; None when there is none (the caller answers 403, as for a pipeline it may not trigger)."""
    found = specs()
    if body.pipeline:
        return next((s for s in found if s.name == body.pipeline), None)
    if body.modelName:
        return next((s for s in found if s.registered_model == body.modelName), None)
    return found[0] if len(found) == 1 else None


def requires_access_model_dag(method: str, access_entity: DagAccessEntity | None = None) -> Any:
    """Airflow's DAG authorization, for the DAG that owns the model the request is about: the
    model named in the path (``name``), or, for a training request, the pipeline its body names.

    A training request is authorized before anything that depends on which pipelines exist: a
    pipeline that does not exist and one the caller may not trigger get the same 403 (only the
    shape of the body, which reveals nothing, is checked first: 422)."""

    async def inner(request: Request, user: GetUserDep) -> None:
        if "name" in request.path_params:
            require_dag_access(request, user, method, access_entity, owner_dag(request.path_params["name"]))
            return
        try:
            body = TrainRequest.model_validate(await request.json())
        except ValidationError as err:
            problems = err.errors(include_url=False, include_input=False, include_context=False)
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems) from err
        except ValueError as err:  # not JSON at all
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "body is not valid JSON") from err
        spec = training_spec(body)
        if spec is None or not dag_access_allowed(request, user, method, access_entity, spec.training_dag_id):
            yours = sorted(
                s.name
                for s in specs()
                if dag_access_allowed(request, user, method, access_entity, s.training_dag_id)
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"Forbidden: no pipeline you may trigger for pipeline={body.pipeline!r} / "
                f"modelName={body.modelName!r} (it does not exist, or you may not trigger it); "
                f"the pipelines you may trigger: {yours!r}",
            )

    return inner


def requires_access_some_model_dag(method: str, access_entity: DagAccessEntity | None = None) -> Any:
    """For the routes about every model (the list, the page itself): the user may ``method`` at least
    one model's training DAG; the list then holds only those models (:func:`readable_specs`)."""

    async def inner(request: Request, user: GetUserDep) -> None:
        if not any(
            dag_access_allowed(request, user, method, access_entity, s.training_dag_id) for s in specs()
        ):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: you may read no model's DAG")

    return inner


def serving_spec(name: str) -> ModelSpec:
    """The spec that serves predictions of ``name``: only a model a spec owns is served (404)."""
    spec = owner_spec(name)
    if spec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model spec serves {name!r}")
    return spec


def requires_access_scoring_dag() -> Any:
    """Airflow's permission to trigger the scoring DAG of the model in the path."""

    async def inner(request: Request, user: GetUserDep) -> None:
        spec = serving_spec(request.path_params["name"])
        require_dag_access(request, user, "POST", DagAccessEntity.RUN, spec.scoring_dag_id)

    return inner


def readable_specs(request: Request, user: Any) -> list[ModelSpec]:
    """The specs whose training DAG ``user`` may read."""
    return [s for s in specs() if dag_access_allowed(request, user, "GET", None, s.training_dag_id)]


def may_answer(request: Request, user: Any, dag_id: str, assigned: Iterable[str]) -> bool:
    """Whether Airflow would take ``user``'s answer to a human-in-the-loop task of ``dag_id``: the
    same two checks as its ``PATCH .../taskInstances/{task}/{map_index}/hitlDetails``
    (``airflow.api_fastapi.core_api.routes.public.hitl.update_hitl_detail``): the DAG permission
    ``PUT`` on its HITL details, then, only when the task has assigned users, the auth manager's
    ``is_authorized_hitl_task`` (its user id among them; SimpleAuthManager's all-admins mode: anyone)."""
    if not dag_access_allowed(request, user, "PUT", DagAccessEntity.HITL_DETAIL, dag_id):
        return False
    assigned = {str(a) for a in assigned}
    return not assigned or hitl_task_authorized(user, assigned)


def may_read_approvals(request: Request, user: Any, dag_id: str) -> bool:
    """Whether ``user`` may see Airflow's side of ``dag_id``'s approval requests."""
    return dag_access_allowed(request, user, "GET", DagAccessEntity.HITL_DETAIL, dag_id)


def is_approver(request: Request, user: Any, spec: ModelSpec | None) -> bool:
    """Whether ``user`` is one of ``spec``'s approvers: whom Airflow lets answer its approval step
    (the spec's ``approvers``; none listed: whoever may answer the DAG's human-in-the-loop tasks)."""
    if spec is None:
        return False
    return may_answer(request, user, spec.training_dag_id, spec.approval["approvers"])


def authority(request: Request, user: Any, spec: ModelSpec | None, *, override: str = "") -> Authority:
    """Who asks for a Production change outside the approval step, for the planner's approval rules."""
    from cmms_pm.registry_plan import Authority

    return Authority.of(spec, is_approver=is_approver(request, user, spec), override=override)


def permissions(request: Request, user: Any, spec: ModelSpec | None) -> dict[str, bool]:
    """What the page may offer this user: each action's button shows only if its route would allow it
    (approve: Airflow's human-in-the-loop endpoint, for the approvers the spec names; promote and
    roll back: only approvers when the spec requires approval; override a refused approval: approvers)."""
    may_promote = dag_access_allowed(request, user, "POST", DagAccessEntity.RUN, PROMOTION_DAG_ID)
    train = spec is not None and dag_access_allowed(
        request, user, "POST", DagAccessEntity.RUN, spec.training_dag_id
    )
    approve = is_approver(request, user, spec)
    promote = may_promote and (approve or not (spec is not None and spec.approval["required"]))
    return {
        "promote": promote,
        "rollback": promote,
        "override": may_promote and approve,
        "train": train,
        "approve": approve,
    }
