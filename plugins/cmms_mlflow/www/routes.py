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
that acts on any model. The routes only validate, authorize (:mod:`cmms_mlflow.www.authorization`)
and translate; every call into Airflow's internals is :mod:`cmms_mlflow.www.airflow_internal`'s, the
bodies and path parameters are :mod:`cmms_mlflow.www.datamodels`'. The MLflow work is
``cmms_mlflow.registry.promotion``/``registry`` (the same code as the DAGs) and the conf schema is the
spec's trigger form (``cmms_pm.params.training_params``). mlflow is imported inside the
handlers, never at load time.
"""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status

from cmms_mlflow.integrations.links import airflow_run_url, dag_url
from cmms_mlflow.www import airflow_internal
from cmms_mlflow.www.airflow_internal import (
    DagAccessEntity,
    GetUserDep,
    requires_access_dag,
    requires_authenticated,
)
from cmms_mlflow.www.authorization import (
    PROMOTION_DAG_ID,
    authority,
    may_answer,
    may_read_approvals,
    owner_spec,
    permissions,
    readable_specs,
    requires_access_model_dag,
    requires_access_some_model_dag,
    training_spec,
)
from cmms_mlflow.www.datamodels import (
    ModelHistory,
    ModelList,
    ModelName,
    ModelPerformance,
    ModelRow,
    PlotId,
    ProductionModel,
    PromoteRequest,
    StageChange,
    TrainRequest,
    TrainResponse,
    Version,
    VersionDetail,
)
from cmms_pm.params import OTHER_HYPERPARAMETERS

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cmms_mlflow.hooks.mlflow_hook import MlflowHook

log = logging.getLogger(__name__)

URL_PREFIX = "/api/v1/ml"

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


@app.get(
    "/models/{name}/production",
    dependencies=[Depends(requires_access_model_dag("GET"))],
    response_model=ProductionModel,
    response_model_exclude_unset=True,
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
    response_model=ModelHistory,
    response_model_exclude_unset=True,
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
    response_model=ModelPerformance,
    response_model_exclude_unset=True,
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
    response_model=TrainResponse,
    response_model_exclude_unset=True,
)
def train_model(body: TrainRequest, user: GetUserDep, request: Request) -> dict[str, Any]:
    """Trigger the model's training DAG with a conf validated against its trigger form."""
    from cmms_pm.estimators import estimator
    from cmms_pm.exceptions import InvalidParamsError
    from cmms_pm.params import training_params, validate_conf

    spec = training_spec(body)  # authorized by requires_access_model_dag, so it exists
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
    run_id = airflow_internal.trigger_dag_run(dag_id, conf, user, request, note=f"{URL_PREFIX}/models/train")
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
    response_model=StageChange,
    response_model_exclude_unset=True,
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
    who = authority(request, user, owner_spec(name), override=body.reason if body.overrideApproval else "")
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
            authority=who,
        )
        tags = client.get_model_version(name, outcome["version"]).tags if body.stage == "Production" else {}
    if body.stage == "Production" and not outcome["unchanged"]:
        _announce_champion(name, outcome["version"], tags)
    return dict(outcome)  # served through the StageChange answer model


def _announce_champion(name: str, version: str, tags: dict[str, str]) -> None:
    """Emit the champion Asset event of the model's spec (as the promotion tasks do), so its batch
    scoring runs."""
    from cmms_mlflow.integrations.assets import champion_asset, spec_name_of

    spec_name = spec_name_of(name, tags)
    if spec_name is None:
        log.warning("No model spec owns %r: no champion event emitted", name)
        return
    wanted = champion_asset(spec_name)
    extra = {"model_name": name, "champion_version": str(version), "source": URL_PREFIX}
    if not airflow_internal.register_asset_change(wanted.name, extra):
        # no DAG declares the asset: nothing consumes it
        log.warning("Asset %r unknown to Airflow; no event emitted", wanted.name)


# --- read routes of the Models page ----------------------------------------------------------


def _with_airflow_state(approvals: list[dict[str, Any]], request: Request, user: Any) -> None:
    """Add Airflow's side of each pending approval: the task's state, whether someone already answered
    (the version's tag changes only when the run records the answer, seconds later), who may answer
    (the task's assigned users), and ``canAnswer`` for this user."""
    waiting_states = airflow_internal.hitl_waiting_states()
    by_dag: dict[str, list[dict[str, Any]]] = {}
    for approval in approvals:
        approval["airflow"], approval["canAnswer"] = None, False
        if approval["dagId"] and approval["runId"]:
            by_dag.setdefault(approval["dagId"], []).append(approval)
    for dag_id, waiting in by_dag.items():
        if not may_read_approvals(request, user, dag_id):
            continue
        requests = airflow_internal.hitl_requests(dag_id, {a["runId"] for a in waiting})
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
                and may_answer(request, user, dag_id, state["assigned"])
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
        row["trainingRuns"] = airflow_internal.last_runs(spec.training_dag_id)
    row["permissions"] = permissions(request, user, spec)
    row["promotionDagUrl"] = dag_url(PROMOTION_DAG_ID)
    return row


@app.get(
    "/models",
    dependencies=[Depends(requires_access_some_model_dag("GET"))],
    response_model=ModelList,
    response_model_exclude_unset=True,
)
def list_models(request: Request, user: GetUserDep) -> dict[str, Any]:
    """One row per model spec whose training DAG you may read: champion, challenger, decisions,
    drift, pending approvals, links, and which actions you may take."""
    specs = readable_specs(request, user)
    with _mlflow("*") as client:
        rows = [_model_row(client, spec.registered_model, spec, request, user) for spec in specs]
    return {"models": rows, "mlflowUiUrl": _hook().ui_url}


@app.get(
    "/models/{name}",
    dependencies=[Depends(requires_access_model_dag("GET"))],
    response_model=ModelRow,
    response_model_exclude_unset=True,
)
def get_model(name: ModelName, request: Request, user: GetUserDep) -> dict[str, Any]:
    """The Models page's row of one registered model (404 if the registry does not know it)."""
    from cmms_mlflow.exceptions import model_not_found
    from cmms_mlflow.registry import model_registry

    spec = owner_spec(name)
    with _mlflow(name) as client:
        if not model_registry.model_exists(client, name):
            raise model_not_found(name)
        return _model_row(client, name, spec, request, user)


@app.get(
    "/models/{name}/versions/{version}",
    dependencies=[Depends(requires_access_model_dag("GET"))],
    response_model=VersionDetail,
    response_model_exclude_unset=True,
)
def get_model_version(name: ModelName, version: Version, request: Request, user: GetUserDep) -> dict:
    """One version: stage, aliases, metrics, its decision record, its plots' ids, links."""
    from cmms_mlflow.registry.promotion import existing_version
    from cmms_mlflow.www.model_overview import version_detail

    spec = owner_spec(name)
    with _mlflow(name) as client:
        existing_version(client, name, str(version))
        detail = version_detail(client, _hook(), name, str(version))
    detail["permissions"] = permissions(request, user, spec)
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
