"""The dCMMS backend's model API, served by Airflow's api-server under ``/api/v1/ml``.

Airflow mounts plugin FastAPI apps without authentication, so every route here carries it:
the app-wide dependency (any authenticated Airflow user: Bearer JWT from ``/auth/token`` or the
UI session) and a per-route check against Airflow's own authorization of a DAG:

* ``GET  /models/{name}/production``            read the model's training DAG
* ``GET  /models/{name}/history``               read the model's training DAG
* ``GET  /models/{name}/performance``           read the model's training DAG
* ``POST /models/train``                         trigger the model's training DAG
* ``POST /models/{name}/versions/{v}/promote``   trigger ``model_promotion``

and the read routes of the Models page (``cmms_mlflow.www.ui``), which reads only through them:

* ``GET  /models``                               every model whose training DAG you may read
* ``GET  /models/{name}``                        read the model's training DAG
* ``GET  /models/{name}/versions/{v}``           read the model's training DAG
* ``GET  /models/{name}/versions/{v}/plots/{p}`` read the model's training DAG

A model's training DAG is the one its spec builds (``<spec>_training``, the spec whose
``registered_model`` is the name); a name no spec claims belongs to ``model_promotion``, the DAG
that acts on any model. The routes only validate, authorize and translate: the MLflow work is
``cmms_mlflow.registry.promotion``/``registry`` (the same code as the DAGs) and the conf schema is the
spec's trigger form (``cmms_pm.params.training_params``). mlflow is imported inside the
handlers, never at load time.
"""

import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag, requires_authenticated
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cmms_mlflow.integrations.links import airflow_run_url, dag_url
from cmms_mlflow.www.model_overview import PLOT_ID_PATTERN
from cmms_pm.params import OTHER_HYPERPARAMETERS
from cmms_pm.spec import MODEL_NAME_REGEX, SPEC_NAME_REGEX

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_mlflow.hooks.mlflow_hook import MlflowHook

log = logging.getLogger(__name__)

URL_PREFIX = "/api/v1/ml"
PROMOTION_DAG_ID = "model_promotion"

ModelName = Annotated[str, Path(pattern=MODEL_NAME_REGEX, description="Registered model name")]
Version = Annotated[int, Path(gt=0, le=2_147_483_647, description="Model version (a positive integer)")]
PlotId = Annotated[str, Path(pattern=f"^{PLOT_ID_PATTERN}$", description="A plot of the run, e.g. 'drift'")]

app = FastAPI(
    title="CMMS model API",
    description="Production-model info, training and promotion for the dCMMS backend.",
    # Every route needs an authenticated Airflow user; routes add finer DAG-level checks.
    dependencies=[Depends(requires_authenticated())],
    # Airflow does not authenticate plugin apps: no unauthenticated docs/openapi routes either.
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


class TrainRequest(BaseModel):
    """The seed's training request. Every value is checked against the model's trigger form."""

    model_config = ConfigDict(extra="forbid")

    modelName: str | None = Field(
        default=None, max_length=100, description="Registered model; default: the pipeline's own."
    )
    pipeline: str | None = Field(
        default=None,
        pattern=SPEC_NAME_REGEX,
        description="Model spec whose training DAG runs; default: the spec of modelName.",
    )
    datasetVersion: str | None = Field(
        default=None,
        max_length=1000,
        description="The data to train on: the spec's source or a .csv/.parquet path (data_source).",
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters of the spec's (or the chosen) estimator."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Other training parameters of the trigger form (thresholds, ...)."
    )


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["Staging", "Production", "Archived"]
    reason: str = Field(min_length=3, max_length=500)
    expectedChampion: int | None = Field(
        default=None,
        gt=0,
        description="Optional compare-and-set: 409 unless this version is the champion (null: none).",
    )
    overrideApproval: bool = Field(
        default=False,
        description="An approver promotes a version whose approval was rejected or timed out; "
        "the reason is recorded as the override's (409 without it, 403 for anyone else).",
    )


#: How long a promote request waits for the model lock before answering 503.
PROMOTE_LOCK_TIMEOUT = 30.0


@contextmanager
def _http_errors(name: str) -> Iterator[None]:
    """Typed plugin errors to HTTP: not the spec's approver 403, unknown model/version 404, conflict
    409 (a rejected or timed-out approval without an override too), bad value 422, the model lock
    busy (another promotion) or its database down 503."""
    from mlflow.exceptions import MlflowException

    from cmms_mlflow.exceptions import (
        ApprovalAuthorityError,
        LockTimeoutError,
        MlflowRegistryError,
        ModelNotFoundError,
        PromotionConflictError,
        RegistryLockUnavailable,
    )

    try:
        yield
    except ApprovalAuthorityError as err:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(err)) from err
    except (LockTimeoutError, RegistryLockUnavailable) as err:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"{err}; nothing was changed, try again",
            {"Retry-After": "5"},
        ) from err
    except ModelNotFoundError as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from err
    except PromotionConflictError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from err
    except MlflowRegistryError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    except MlflowException as err:
        log.exception("MLflow call failed for model %r", name)
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"MLflow call failed: {err.error_code}") from err


@cache
def _hook() -> "MlflowHook":
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook

    return MlflowHook()


@contextmanager
def _mlflow(name: str) -> Iterator["MlflowClient"]:
    # The api-server serves sync routes from a thread pool; each session's MLflow settings are
    # its own thread's (MlflowHook.session), so concurrent requests need no lock.
    with _http_errors(name), _hook().session() as client:
        yield client


def requires_access_model_dag(method: str, access_entity: DagAccessEntity | None = None) -> Any:
    """Airflow's DAG authorization, for the DAG that owns the model the request is about: the
    model named in the path (``name``), or, for a training request, the pipeline its body names.

    A training request is authorized before anything that depends on which pipelines exist: a
    pipeline that does not exist and one the caller may not trigger get the same 403 (only the
    shape of the body, which reveals nothing, is checked first: 422)."""

    async def inner(request: Request, user: GetUserDep) -> None:
        if "name" in request.path_params:
            dag_id = _owner_dag(request.path_params["name"])
            requires_access_dag(method, access_entity, param_dag_id=dag_id)(request, user)
            return
        try:
            body = TrainRequest.model_validate(await request.json())
        except ValidationError as err:
            problems = err.errors(include_url=False, include_input=False, include_context=False)
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems) from err
        except ValueError as err:  # not JSON at all
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "body is not valid JSON") from err
        spec = _training_spec(body)
        if spec is None or not _allowed(request, user, method, access_entity, spec.training_dag_id):
            yours = sorted(
                s.name for s in _specs() if _allowed(request, user, method, access_entity, s.training_dag_id)
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"Forbidden: no pipeline you may trigger for pipeline={body.pipeline!r} / "
                f"modelName={body.modelName!r} (it does not exist, or you may not trigger it); "
                f"the pipelines you may trigger: {yours!r}",
            )

    return inner


@cache
def _specs() -> tuple[Any, ...]:
    from cmms_pm.spec import load_specs

    return tuple(load_specs()[0])


def _owner_spec(name: str | None) -> Any | None:
    """The spec whose registered model is ``name`` (a model has one owner), or None."""
    return next((s for s in _specs() if s.registered_model == name), None)


def _owner_dag(name: str | None) -> str:
    """The training DAG of ``name``'s spec, else ``model_promotion`` (it acts on any model)."""
    spec = _owner_spec(name)
    return spec.training_dag_id if spec is not None else PROMOTION_DAG_ID


def _is_approver(request: Request, user: Any, spec: Any | None) -> bool:
    """Whether ``user`` is one of ``spec``'s approvers: whom Airflow lets answer its approval step
    (the spec's ``approvers``; none listed: whoever may answer the DAG's human-in-the-loop tasks)."""
    if spec is None:
        return False
    return _may_answer(request, user, spec.training_dag_id, spec.approval["approvers"])


def _authority(request: Request, user: Any, spec: Any | None, *, override: str = "") -> Any:
    """Who asks for a Production change outside the approval step, for the planner's approval rules."""
    from cmms_pm.registry_plan import Authority

    return Authority.of(spec, is_approver=_is_approver(request, user, spec), override=override)


def _training_spec(body: TrainRequest) -> Any | None:
    """The spec a training request runs: ``pipeline``, else the spec of ``modelName``, else the only
    one; None when there is none (the caller answers 403, as for a pipeline it may not trigger)."""
    specs = _specs()
    if body.pipeline:
        return next((s for s in specs if s.name == body.pipeline), None)
    if body.modelName:
        return next((s for s in specs if s.registered_model == body.modelName), None)
    return specs[0] if len(specs) == 1 else None


@app.get(
    "/models/{name}/production",
    dependencies=[Depends(requires_access_model_dag("GET"))],
)
def get_production_model(name: ModelName) -> dict[str, Any]:
    """The champion: version, run, metrics, validation tags, stage, aliases, data version, links.

    The champion is the Production version, never an archived version an alias still names (an
    interrupted promotion): ``warnings`` then says what is inconsistent, and the next registry
    write repairs it. Concurrent requests share one read of the registry, and an answer is kept
    while the registry's marks say nothing moved (:mod:`cmms_mlflow.www.serving_cache`): a write that
    finished before the request arrived, in any process, is always in its answer.
    """
    with _mlflow(name) as client:
        answer = _production_answers().get(
            name, lambda: _registry_mark(client, name), lambda model: _production_answer(client, name, model)
        )
    if answer["warnings"]:
        log.warning(
            "Model %r is inconsistent (reported v%s, the Production version): %s",
            name,
            answer["version"],
            answer["warnings"],
        )
    return {**answer, "warnings": list(answer["warnings"])}


@cache
def _production_answers() -> Any:
    from cmms_mlflow.www.serving_cache import ReadThroughCache

    return ReadThroughCache()


def _registry_mark(client: "MlflowClient", name: str) -> tuple[Any, Any]:
    """One read of the registered model: what changes with every write (stage changes set its
    last update; aliases; the generation every write of ``cmms_mlflow.registry.model_registry`` renews), and
    the model itself for the answer's snapshot."""
    from cmms_mlflow.registry import model_registry

    model = model_registry.get_model(client, name)
    aliases = tuple(sorted((alias, str(v)) for alias, v in (model.aliases or {}).items()))
    return (
        model.last_updated_timestamp,
        aliases,
        (model.tags or {}).get(model_registry.GENERATION_TAG),
    ), model


def _production_answer(client: "MlflowClient", name: str, model: Any) -> dict[str, Any]:
    """The answer from one snapshot (``model`` as just read, then its versions) and the champion's run."""
    from cmms_mlflow.exceptions import no_production_version
    from cmms_mlflow.registry import model_registry

    champion, problems, snapshot_aliases = model_registry.serving_of(client, name, model)
    if champion is None:
        raise no_production_version(name)
    version = str(champion.version)
    aliases = sorted(a for a, v in snapshot_aliases.items() if v == version)
    metrics = dict(client.get_run(champion.run_id).data.metrics) if champion.run_id else {}
    tags = dict(champion.tags)
    validation_keys = ("decision_reason", "champion_f1", "champion_version")
    return {
        "name": name,
        "version": version,
        "runId": champion.run_id,
        "stage": champion.current_stage,
        "aliases": aliases,
        "modelUri": f"models:/{name}@{model_registry.CHAMPION}"
        if model_registry.CHAMPION in aliases
        else f"models:/{name}/{version}",
        "metrics": metrics,
        "validation": {k: v for k, v in tags.items() if k.startswith("validation_") or k in validation_keys},
        "dataVersion": tags.get("data_version"),
        "promotedAt": tags.get("promoted_at"),
        "promotedBy": tags.get("promoted_by"),
        "promotionReason": tags.get("promotion_reason"),
        "replacedVersion": tags.get("replaced_version") or None,
        # Built from the run's ids on this Airflow's address (a URL tag could point anywhere).
        "airflowRunUrl": airflow_run_url(tags.get("airflow.dag_id"), tags.get("airflow.run_id")),
        "mlflowUrl": _hook().model_version_url(name, version),
        "warnings": tuple(problems),
    }


@app.get(
    "/models/{name}/history",
    dependencies=[Depends(requires_access_model_dag("GET"))],
)
def get_model_history(
    name: ModelName,
    limit: Annotated[int, Query(ge=1, le=500, description="Events per page, newest first")] = 50,
    pageToken: Annotated[  # noqa: N803 (the API's camelCase)
        str | None, Query(max_length=2000, description="The nextPageToken of the previous page")
    ] = None,
) -> dict[str, Any]:
    """The model's append-only history (promotions, rejections, rollbacks, stage changes, approvals,
    repairs), newest first, with the token of the next page (null on the last)."""
    from mlflow.exceptions import MlflowException

    from cmms_mlflow.exceptions import model_not_found
    from cmms_mlflow.registry import history, model_registry

    with _mlflow(name) as client:
        if not model_registry.model_exists(client, name):
            raise model_not_found(name)
        try:
            events, token = history.read_page(client, name, limit=limit, page_token=pageToken)
        except MlflowException as err:
            if err.error_code != "INVALID_PARAMETER_VALUE":
                raise
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid pageToken") from err
    return {"name": name, "events": events, "nextPageToken": token}


@app.get(
    "/models/{name}/performance",
    dependencies=[Depends(requires_access_model_dag("GET"))],
)
def get_model_performance(
    name: ModelName,
    limit: Annotated[int, Query(ge=1, le=100, description="Versions, newest first")] = 10,
) -> dict[str, Any]:
    """Realized outcomes per version (``cmms_mlflow.tracking.realized_outcomes``): each version's
    threshold, its figures over the spec's window, and its daily series (precision, recall, F1, alerts,
    failures caught and missed, lead time), as the model's outcomes DAG last stored them. A model without
    measured outcomes answers an empty list; an unknown model 404."""
    from cmms_mlflow.exceptions import model_not_found
    from cmms_mlflow.registry import model_registry
    from cmms_mlflow.tracking import realized_outcomes

    with _mlflow(name) as client:
        if not model_registry.model_exists(client, name):
            raise model_not_found(name)
        versions = realized_outcomes.read_performance(client, name, limit=limit)
    return {"name": name, "versions": versions}


@app.post(
    "/models/train",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(requires_access_model_dag("POST", DagAccessEntity.RUN))],
)
def train_model(body: TrainRequest, user: GetUserDep, request: Request) -> dict[str, Any]:
    """Trigger the model's training DAG with a conf validated against its trigger form."""
    from cmms_pm.estimators import estimator
    from cmms_pm.exceptions import InvalidParamsError
    from cmms_pm.params import training_params, validate_conf

    spec = _training_spec(body)  # authorized by requires_access_model_dag, so it exists
    if spec is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
    if body.modelName is not None and body.modelName != spec.registered_model:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"modelName {body.modelName!r} is not pipeline {spec.name!r}'s registered model "
            f"{spec.registered_model!r}: a pipeline trains and promotes only its own model",
        )
    form = training_params(spec)
    own = set(estimator(spec.estimator).hyperparameters)
    other = {k: v for k, v in body.hyperparameters.items() if k not in own}
    hyper = {k: v for k, v in body.hyperparameters.items() if k in own}
    if body.parameters.get("estimator", spec.estimator) != spec.estimator:
        hyper, other = {}, dict(body.hyperparameters)
    not_parameters = sorted(set(body.parameters) & {"model_name", "data_source", OTHER_HYPERPARAMETERS})
    if not_parameters:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{not_parameters!r} are given by modelName, datasetVersion and hyperparameters; "
            f"parameters: {sorted(set(form) - {'model_name', 'data_source', OTHER_HYPERPARAMETERS})!r}",
        )
    conf: dict[str, Any] = {"model_name": body.modelName or spec.registered_model, **hyper, **body.parameters}
    if other:
        conf[OTHER_HYPERPARAMETERS] = other
    if body.datasetVersion is not None:
        conf["data_source"] = body.datasetVersion
    try:
        conf = validate_conf(form, conf)
        from cmms_pm.params import run_config

        run_config(spec, conf)  # the hyperparameters must fit the chosen estimator
    except InvalidParamsError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, err.problems) from err
    dag_id = spec.training_dag_id
    run_id = _trigger(dag_id, conf, user, request)
    return {
        "dagId": dag_id,
        "dagRunId": run_id,
        "modelName": conf["model_name"],
        "conf": conf,
        "statusUrl": f"/api/v2/dags/{dag_id}/dagRuns/{run_id}",
    }


@app.post(
    "/models/{name}/versions/{version}/promote",
    dependencies=[Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=PROMOTION_DAG_ID))],
)
def promote_model_version(
    name: ModelName, version: Version, body: PromoteRequest, user: GetUserDep, request: Request
) -> dict:
    """Move a version to a stage through the guarded promotion: the model lock every host shares
    (503 when another promotion holds it past ``PROMOTE_LOCK_TIMEOUT``), repairs first, a
    compare-and-set, the approval rules of the model's spec (403 not one of its approvers when it
    requires approval; 409 a rejected or timed-out approval without an approver's override), one
    history event (a former champion's return is a ``rollback``)."""
    from cmms_mlflow.registry import promotion

    expected: str | None = promotion.ANY_CHAMPION
    if "expectedChampion" in body.model_fields_set:
        expected = str(body.expectedChampion) if body.expectedChampion is not None else None
    authority = _authority(
        request, user, _owner_spec(name), override=body.reason if body.overrideApproval else ""
    )
    with _mlflow(name) as client:
        outcome = promotion.change_stage(
            client,
            name=name,
            version=str(version),
            stage=body.stage,
            lock_dir=_hook().lock_dir,
            actor=f"{user.get_name()} via {URL_PREFIX}",
            reason=body.reason,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            expected_champion=expected,
            key=uuid.uuid4().hex,  # every request is its own event
            lock_timeout=PROMOTE_LOCK_TIMEOUT,
            authority=authority,
        )
        tags = client.get_model_version(name, outcome["version"]).tags if body.stage == "Production" else {}
    if body.stage == "Production" and not outcome["unchanged"]:
        _announce_champion(name, outcome["version"], tags)
    return dict(outcome)  # FastAPI reads the annotation (dict) as the response model


def _trigger(dag_id: str, conf: dict[str, Any], user: Any, request: Request) -> str:
    """Create a manual DAG run through Airflow's own trigger endpoint code (same checks, same audit)."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run
    from airflow.utils.session import create_session

    body = TriggerDAGRunPostBody(logical_date=None, conf=conf, note=f"{URL_PREFIX}/models/train")
    with create_session() as session:
        dag_run = trigger_dag_run(dag_id, body, _dag_bag(), user, session, request)
        return dag_run.run_id


@cache
def _dag_bag() -> Any:
    from airflow.api_fastapi.common.dagbag import create_dag_bag

    return create_dag_bag()


def _announce_champion(name: str, version: str, tags: dict[str, str]) -> None:
    """Emit the champion Asset event of the model's spec (as the promotion tasks do), so its batch
    scoring runs."""
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from cmms_mlflow.integrations.assets import champion_asset, spec_name_of

    spec_name = spec_name_of(name, tags)
    if spec_name is None:
        log.warning("No model spec owns %r: no champion event emitted", name)
        return
    wanted = champion_asset(spec_name)
    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.name == wanted.name).limit(1))
        if asset is None:  # no DAG declares the asset: nothing consumes it
            log.warning("Asset %r unknown to Airflow; no event emitted", wanted.name)
            return
        asset_manager.register_asset_change(
            asset=asset,
            extra={"model_name": name, "champion_version": str(version), "source": URL_PREFIX},
            source_is_api=True,
            session=session,
        )


# --- read routes of the Models page ----------------------------------------------------------


def _allowed(
    request: Request, user: Any, method: str, access_entity: DagAccessEntity | None, dag_id: str
) -> bool:
    """Whether Airflow's own DAG authorization lets ``user`` do ``method`` on ``dag_id``."""
    try:
        requires_access_dag(method, access_entity, param_dag_id=dag_id)(request, user)
    except HTTPException as err:
        if err.status_code == status.HTTP_403_FORBIDDEN:
            return False
        raise
    return True


def requires_access_some_model_dag(method: str, access_entity: DagAccessEntity | None = None) -> Any:
    """For the routes about every model (the list, the page itself): the user may ``method`` at least
    one model's training DAG; the list then holds only those models (:func:`_readable_specs`)."""

    async def inner(request: Request, user: GetUserDep) -> None:
        if not any(_allowed(request, user, method, access_entity, s.training_dag_id) for s in _specs()):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: you may read no model's DAG")

    return inner


def _readable_specs(request: Request, user: Any) -> list[Any]:
    return [s for s in _specs() if _allowed(request, user, "GET", None, s.training_dag_id)]


def _last_runs(dag_id: str, limit: int = 5) -> list[dict[str, Any]]:
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


def _may_answer(request: Request, user: Any, dag_id: str, assigned: Iterable[str]) -> bool:
    """Whether Airflow would take ``user``'s answer to a human-in-the-loop task of ``dag_id``: the
    same two checks as its ``PATCH .../taskInstances/{task}/{map_index}/hitlDetails``
    (``airflow.api_fastapi.core_api.routes.public.hitl.update_hitl_detail``): the DAG permission
    ``PUT`` on its HITL details, then, only when the task has assigned users, the auth manager's
    ``is_authorized_hitl_task`` (its user id among them; SimpleAuthManager's all-admins mode: anyone)."""
    from airflow.api_fastapi.core_api.security import get_auth_manager

    if not _allowed(request, user, "PUT", DagAccessEntity.HITL_DETAIL, dag_id):
        return False
    assigned = {str(a) for a in assigned}
    return not assigned or get_auth_manager().is_authorized_hitl_task(assigned_users=assigned, user=user)


def _permissions(request: Request, user: Any, spec: Any | None) -> dict[str, bool]:
    """What the page may offer this user: each action's button shows only if its route would allow it
    (approve: Airflow's human-in-the-loop endpoint, for the approvers the spec names; promote and
    roll back: only approvers when the spec requires approval; override a refused approval: approvers)."""
    may_promote = _allowed(request, user, "POST", DagAccessEntity.RUN, PROMOTION_DAG_ID)
    train = spec is not None and _allowed(request, user, "POST", DagAccessEntity.RUN, spec.training_dag_id)
    approve = _is_approver(request, user, spec)
    promote = may_promote and (approve or not (spec is not None and spec.approval["required"]))
    return {
        "promote": promote,
        "rollback": promote,
        "override": may_promote and approve,
        "train": train,
        "approve": approve,
    }


def _hitl_requests(dag_id: str, run_ids: Iterable[str]) -> dict[str, Any]:
    """``{run id: Airflow's record of the request}`` (task state, assigned users, the answer if any)
    of the approval task in those runs of ``dag_id``, in one query."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from cmms_pm.approval import APPROVAL_TASK_ID

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


def _with_airflow_state(approvals: list[dict[str, Any]], request: Request, user: Any) -> None:
    """Add Airflow's side of each pending approval: the task's state, whether someone already answered
    (the version's tag changes only when the run records the answer, seconds later), who may answer
    (the task's assigned users), and ``canAnswer`` for this user."""
    from airflow.utils.state import TaskInstanceState

    # The states in which Airflow's answer resumes the task (update_hitl_detail).
    waiting_states = {TaskInstanceState.AWAITING_INPUT.value, TaskInstanceState.DEFERRED.value}
    by_dag: dict[str, list[dict[str, Any]]] = {}
    for approval in approvals:
        approval["airflow"], approval["canAnswer"] = None, False
        if approval["dagId"] and approval["runId"]:
            by_dag.setdefault(approval["dagId"], []).append(approval)
    for dag_id, waiting in by_dag.items():
        if not _allowed(request, user, "GET", DagAccessEntity.HITL_DETAIL, dag_id):
            continue
        requests = _hitl_requests(dag_id, {a["runId"] for a in waiting})
        for approval in waiting:
            state = requests.get(approval["runId"])
            approval["airflow"] = state
            if state is None:
                continue
            if state["assigned"]:  # what Airflow checks: the users assigned when the run asked
                approval["approvers"] = state["assigned"]
            approval["canAnswer"] = (
                state["taskState"] in waiting_states
                and not state["answered"]
                and _may_answer(request, user, dag_id, state["assigned"])
            )


def _model_row(client: Any, name: str, spec: Any | None, request: Request, user: Any) -> dict[str, Any]:
    from cmms_mlflow.www.model_overview import model_summary

    approvers = spec.approval["approvers"] if spec is not None else ()
    summary = model_summary(
        client, _hook(), name, approvers=approvers, training_dag_id=spec.training_dag_id if spec else None
    )
    row: dict[str, Any] = {"name": name, **summary}
    _with_airflow_state(row["pendingApprovals"], request, user)
    row["spec"] = None
    if spec is not None:
        row["spec"] = {
            "name": spec.name,
            "description": spec.description,
            "trainingDagId": spec.training_dag_id,
            "scoringDagId": spec.scoring_dag_id,
            "trainingDagUrl": dag_url(spec.training_dag_id),
            "scoringDagUrl": dag_url(spec.scoring_dag_id),
            "promotionMetric": spec.promotion["metric"],
            "threshold": spec.promotion["threshold"],
            "approvers": list(approvers),
        }
        row["trainingRuns"] = _last_runs(spec.training_dag_id)
    row["permissions"] = _permissions(request, user, spec)
    row["promotionDagUrl"] = dag_url(PROMOTION_DAG_ID)
    return row


@app.get("/models", dependencies=[Depends(requires_access_some_model_dag("GET"))])
def list_models(request: Request, user: GetUserDep) -> dict[str, Any]:
    """One row per model spec whose training DAG you may read: champion, challenger, decisions,
    drift, pending approvals, links, and which actions you may take."""
    specs = _readable_specs(request, user)
    with _mlflow("*") as client:
        rows = [_model_row(client, spec.registered_model, spec, request, user) for spec in specs]
    return {"models": rows, "mlflowUiUrl": _hook().ui_url}


@app.get("/models/{name}", dependencies=[Depends(requires_access_model_dag("GET"))])
def get_model(name: ModelName, request: Request, user: GetUserDep) -> dict[str, Any]:
    """The Models page's row of one registered model (404 if the registry does not know it)."""
    from cmms_mlflow.exceptions import model_not_found
    from cmms_mlflow.registry import model_registry

    spec = next((s for s in _specs() if s.registered_model == name), None)
    with _mlflow(name) as client:
        if not model_registry.model_exists(client, name):
            raise model_not_found(name)
        return _model_row(client, name, spec, request, user)


@app.get("/models/{name}/versions/{version}", dependencies=[Depends(requires_access_model_dag("GET"))])
def get_model_version(name: ModelName, version: Version, request: Request, user: GetUserDep) -> dict:
    """One version: stage, aliases, metrics, its decision record, its plots' ids, links."""
    from cmms_mlflow.registry.promotion import existing_version
    from cmms_mlflow.www.model_overview import version_detail

    spec = next((s for s in _specs() if s.registered_model == name), None)
    with _mlflow(name) as client:
        existing_version(client, name, str(version))
        detail = version_detail(client, _hook(), name, str(version))
    detail["permissions"] = _permissions(request, user, spec)
    return detail


@app.get(
    "/models/{name}/versions/{version}/plots/{plot}",
    dependencies=[Depends(requires_access_model_dag("GET"))],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_model_version_plot(name: ModelName, version: Version, plot: PlotId) -> Response:
    """A PNG plot of the version's training run, by id (``evaluation.roc_curve``, ``drift``, ...):
    the id is looked up in the run's own artifact listing; no path from the request is used."""
    from cmms_mlflow.exceptions import ModelNotFoundError
    from cmms_mlflow.registry.promotion import existing_version
    from cmms_mlflow.www.model_overview import plot_paths, read_artifact

    with _mlflow(name) as client:
        mv = existing_version(client, name, str(version))
        paths = plot_paths(client, mv.run_id) if mv.run_id else {}
        if plot not in paths:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no plot {plot!r} for {name!r} version {version}")
        try:
            content = read_artifact(client, mv.run_id, paths[plot])
        except OSError as err:
            raise ModelNotFoundError(f"plot {plot!r} of {name!r} version {version} is unreadable") from err
    return Response(
        content,
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
