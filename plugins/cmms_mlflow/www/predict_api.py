"""``POST /api/v1/ml/models/{name}/predict``: the champion scores the rows of a request.

Added to the model API's app (:mod:`cmms_mlflow.www.routes`) by :func:`install`, so it carries the app's
authentication (anonymous: 401). Authorization: the caller must be allowed to **trigger the model's
scoring DAG** (``<spec>_scoring``, Airflow's DAG-run permission) — scoring rows with the champion on
demand is what that DAG does; reading the model's metadata (the other routes) is not enough, as a
prediction spends the server's CPU and lets the caller probe the model. Only a model a spec owns
(its ``registered_model``) is served: the spec gives the limits, the id columns and the reasons.

In order: unknown model 404, not allowed 403, a body over ``serving.max_body_bytes`` 413 (from its
Content-Length before reading, or while reading), not JSON 415/422, not the request's shape 422
(NaN and Infinity are no JSON numbers), more than ``serving.max_rows`` rows 413, no servable
champion 404/503, rows that do not fit the champion's schema 422 (every problem named); then 200
with one prediction per row. The work runs in the api-server's thread pool, never on its event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, status
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from cmms_mlflow.www.authorization import requires_access_scoring_dag, serving_spec
from cmms_mlflow.www.datamodels import ModelName

if TYPE_CHECKING:
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.www.serving import Champion, RiskCoalescer, WarmChampions
    from cmms_pm.spec import ModelSpec

log = logging.getLogger(__name__)

JSON = "application/json"
#: A cell of a row: a JSON scalar. Floats are finite (NaN and Infinity are no JSON numbers).
Value = StrictStr | StrictInt | StrictFloat | StrictBool | None
ColumnName = Annotated[str, Field(min_length=1, max_length=200)]


class PredictRequest(BaseModel):
    """The rows to score: one object per row, ``{feature or id column: value}``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rows: list[dict[ColumnName, Value]] = Field(min_length=1)


class Reason(BaseModel):
    feature: str
    contribution: float


class Issue(BaseModel):
    kind: Literal["unseen_category", "missing_value", "out_of_range"]
    feature: str


class Prediction(BaseModel):
    ids: dict[str, Value] = Field(description="The row's id columns (the spec's id_columns), as sent")
    risk: float = Field(description="Failure probability from the champion")
    alert: bool = Field(description="risk >= the champion's decision threshold")
    reasons: list[Reason] = Field(description="Features that pushed the risk up most, highest first")
    issues: list[Issue] = Field(description="How the row breaks the champion's data contract ([]: it fits)")


class PredictResponse(BaseModel):
    model: str
    modelVersion: str  # noqa: N815 (the API's camelCase)
    threshold: float
    predictions: list[Prediction]


router = APIRouter()


def install(app: FastAPI) -> None:
    """Add the route to ``app`` (once), after its own routes: it inherits the app's dependencies."""
    if not getattr(app.state, "cmms_predict_installed", False):
        app.include_router(router)
        app.state.cmms_predict_installed = True


@cache
def _hook() -> MlflowHook:
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook

    return MlflowHook()


@cache
def champions() -> WarmChampions:
    """The api-server process's warm champions (one per model)."""
    from cmms_mlflow.www.serving import WarmChampions

    return WarmChampions(lambda: _hook().session())


@cache
def _coalescer() -> RiskCoalescer:
    from cmms_mlflow.www.serving import RiskCoalescer
    from cmms_pm.training import positive_proba

    return RiskCoalescer(positive_proba)


def _too_large(spec: ModelSpec, what: str) -> HTTPException:
    limits = spec.serving
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"{what}; {spec.registered_model!r} takes at most {limits['max_rows']} rows and "
        f"{limits['max_body_bytes']} bytes per request (spec serving section): split the rows",
    )


async def _read_body(request: Request, spec: ModelSpec) -> bytes:
    """The body, never more than ``serving.max_body_bytes`` of it (413 past that)."""
    limit = int(spec.serving["max_body_bytes"])
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(spec, f"the body is {int(declared)} bytes")
    media = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if media != JSON:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send the rows as application/json")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(spec, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, spec: ModelSpec) -> PredictRequest:
    try:
        parsed = PredictRequest.model_validate_json(body)
    except ValidationError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _body_problems(err)) from err
    if len(parsed.rows) > int(spec.serving["max_rows"]):
        raise _too_large(spec, f"the body has {len(parsed.rows)} rows")
    return parsed


def _body_problems(err: ValidationError) -> list[dict[str, Any]]:
    """One problem per place (a union reports each of its branches): where, and what was wrong."""
    problems: dict[tuple[Any, ...], dict[str, Any]] = {}
    for error in err.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(error["loc"])
        if error["type"] == "json_invalid":
            problems[loc] = {"loc": ["body"], "msg": f"the body is not valid JSON: {error['msg']}"}
            continue
        cell = loc[:3] if loc[:1] == ("rows",) and len(loc) >= 3 else loc
        if cell in problems:
            if error["type"] == "finite_number":
                problems[cell]["msg"] = "NaN and Infinity are not JSON numbers; send null for a missing value"
            continue
        msg = error["msg"]
        if len(loc) > len(cell):  # a union branch: say what a cell may be
            msg = "a value is a string, a number, a boolean or null"
        problems[cell] = {"loc": ["body", *cell], "msg": msg}
    return list(problems.values())[:20]


#: Bodies larger than this are parsed and scored at most LARGE_AT_ONCE at a time: a few megabytes
#: of JSON become hundreds of megabytes of Python objects, and the thread pool has 40 threads.
LARGE_BODY = 1 << 20
LARGE_AT_ONCE = threading.BoundedSemaphore(2)


def _answer(spec: ModelSpec, body: bytes) -> bytes:
    with LARGE_AT_ONCE if len(body) > LARGE_BODY else contextlib.nullcontext():
        return _score(spec, body)


def _score(spec: ModelSpec, body: bytes) -> bytes:
    from cmms_mlflow.exceptions import ModelNotFoundError
    from cmms_mlflow.www.serving import ChampionUnavailable
    from cmms_pm.prediction import RowsRejected, rows_frame

    request = _parse(body, spec)
    try:
        champion = champions().get(spec)
    except ModelNotFoundError as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from err
    except ChampionUnavailable as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(err), {"Retry-After": "30"}) from err
    ids = list(spec.id_columns)
    try:
        frame = rows_frame(request.rows, champion.contract, id_columns=ids)
    except RowsRejected as err:
        detail = [
            {"loc": ["body", "rows"], "column": p["column"], "kind": p["kind"], "rows": p["rows"],
             "count": p["count"], "msg": p["message"]}
            for p in err.problems
        ]  # fmt: skip
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from err
    return _response(champion, spec, frame, ids)


def _response(champion: Champion, spec: ModelSpec, frame: Any, ids: list[str]) -> bytes:
    """The answer, shaped as :class:`PredictResponse`, serialized at once: built only from values
    this module made (floats, bools, the rows' own ids), it needs no second validation, and one
    ``json.dumps`` of plain dicts costs a tenth of building a model per prediction."""
    from cmms_pm.prediction import predict

    explain = spec.explain
    found = predict(
        champion.model, frame, contract=champion.contract, threshold=champion.threshold,
        reasons=int(explain["reasons"]), scope=explain["scope"], max_explained=int(explain["max_rows"]),
        explainer=spec.serving["explainer"], risk=_coalescer().risk(champion, frame),
    )  # fmt: skip
    id_rows = zip(*(frame[column].tolist() for column in ids), strict=True) if ids else [()] * len(frame)
    predictions = [
        {
            "ids": dict(zip(ids, row_ids, strict=True)),
            "risk": risk,
            "alert": alert,
            "reasons": reasons,
            "issues": issues,
        }
        for row_ids, risk, alert, reasons, issues in zip(
            id_rows, found.risk.tolist(), found.alert.tolist(), found.reasons, found.issues, strict=True,
        )
    ]  # fmt: skip
    answer = {
        "model": champion.name,
        "modelVersion": champion.version,
        "threshold": champion.threshold,
        "predictions": predictions,
    }
    return json.dumps(answer, allow_nan=False).encode()


@router.post(
    "/models/{name}/predict",
    dependencies=[Depends(requires_access_scoring_dag())],
    response_model=PredictResponse,
    responses={413: {"description": "Body or rows over the spec's serving limits"}},
)
async def predict_rows(name: ModelName, request: Request) -> Response:
    """Score ``{"rows": [...]}`` with the champion: risk, alert, reasons and contract issues per row."""
    from starlette.concurrency import run_in_threadpool

    spec = serving_spec(name)
    body = await _read_body(request, spec)
    return Response(await run_in_threadpool(_answer, spec, body), media_type=JSON)
