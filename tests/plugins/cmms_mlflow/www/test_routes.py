"""Every route of the model API and of the Models page carries Airflow authentication and a
DAG-level authorization.

Airflow mounts plugin FastAPI apps without authentication: a route that forgets its
dependency answers anonymous callers. This walks the app's routes instead of trusting a list.
The HTTP behaviour (401/403/404/409/422 with real JWTs) is tested against a real api-server in
tests/dags/test_model_api.py.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

#: Airflow's DAG authorization, ours that picks the DAG owning the model of the request, and ours
#: for the routes about every model (the user may read at least one model's DAG).
DAG_CHECKS = ("requires_access_dag.", "requires_access_model_dag.", "requires_access_some_model_dag.")


def _calls(dependant) -> list:
    """Every dependency callable under ``dependant``, depth first."""
    found = []
    for sub in dependant.dependencies:
        found.append(sub.call)
        found.extend(_calls(sub))
    return found


@pytest.fixture(scope="module")
def app():
    from cmms_mlflow.www.routes import app

    return app


@pytest.fixture(scope="module", params=["cmms_mlflow.www.routes", "cmms_mlflow.www.ui"])
def any_app(request):
    import importlib

    return importlib.import_module(request.param).app


def test_every_route_requires_an_authenticated_user_and_a_dag_permission(any_app):
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.routing import APIRoute

    assert any_app.routes, "the app has no routes"
    for route in any_app.routes:
        assert isinstance(route, APIRoute), f"{route.path}: not an APIRoute, so no dependencies ({route!r})"
        calls = _calls(route.dependant)
        assert get_user in calls, f"{route.path} {route.methods}: no Airflow authentication"
        dag_checks = [c for c in calls if getattr(c, "__qualname__", "").startswith(DAG_CHECKS)]
        assert dag_checks, f"{route.path} {route.methods}: no DAG-level authorization"


def test_write_routes_need_the_run_permission_of_the_dag_they_act_for(app):
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    model_dag, promotion, some = "the model's DAG", "model_promotion", "some model's DAG"
    expected = {
        ("GET", "/models/{name}/production"): ("GET", None, model_dag),
        ("GET", "/models/{name}/history"): ("GET", None, model_dag),
        ("GET", "/models/{name}/performance"): ("GET", None, model_dag),
        ("POST", "/models/train"): ("POST", DagAccessEntity.RUN, model_dag),
        ("POST", "/models/{name}/versions/{version}/promote"): ("POST", DagAccessEntity.RUN, promotion),
        ("GET", "/models"): ("GET", None, some),
        ("GET", "/models/{name}"): ("GET", None, model_dag),
        ("GET", "/models/{name}/versions/{version}"): ("GET", None, model_dag),
        ("GET", "/models/{name}/versions/{version}/plots/{plot}"): ("GET", None, model_dag),
    }
    seen = {}
    for route in app.routes:
        for call in _calls(route.dependant):
            if getattr(call, "__qualname__", "").startswith(DAG_CHECKS):
                closure = inspect.getclosurevars(call).nonlocals
                owner = some if call.__qualname__.startswith("requires_access_some") else model_dag
                seen[(next(iter(route.methods)), route.path)] = (
                    closure["method"], closure["access_entity"], closure.get("param_dag_id", owner),
                )  # fmt: skip
    assert seen == expected


def test_a_model_belongs_to_its_specs_training_dag_and_an_unknown_one_to_model_promotion():
    from cmms_mlflow.www.authorization import owner_dag, training_spec
    from cmms_mlflow.www.datamodels import TrainRequest

    assert owner_dag("predictive_maintenance_rf") == "predictive_maintenance_training"
    assert owner_dag("somebody_elses_model") == "model_promotion"
    assert training_spec(TrainRequest()).training_dag_id == "predictive_maintenance_training"
    assert training_spec(TrainRequest(pipeline="predictive_maintenance")).name == "predictive_maintenance"


def test_a_busy_or_unreachable_model_lock_is_a_503_that_says_nothing_changed():
    from fastapi import HTTPException

    from cmms_mlflow.exceptions import LockTimeoutError, RegistryLockUnavailable
    from cmms_mlflow.www.routes import _http_errors

    for error in (LockTimeoutError("lock 'm' is still held"), RegistryLockUnavailable("db down")):
        with pytest.raises(HTTPException) as caught, _http_errors("m"):
            raise error
        assert caught.value.status_code == 503 and "nothing was changed" in caught.value.detail
        assert caught.value.headers == {"Retry-After": "5"}


def test_the_models_page_needs_read_access_to_some_models_dag_on_every_route():
    from cmms_mlflow.www.ui import app

    assert app.routes
    for route in app.routes:
        names = [getattr(c, "__qualname__", "") for c in _calls(route.dependant)]
        assert any(n.startswith("requires_access_some_model_dag.") for n in names), route.path


def test_the_apps_serve_no_unauthenticated_docs(any_app):
    assert (any_app.docs_url, any_app.redoc_url, any_app.openapi_url) == (None, None, None)


def test_plot_ids_cannot_name_a_path():
    from pydantic import TypeAdapter, ValidationError

    from cmms_mlflow.www.datamodels import PlotId

    route_param = TypeAdapter(PlotId)  # the route's own validation of the path parameter
    assert route_param.validate_python("evaluation.roc_curve") and route_param.validate_python("drift")
    for bad in ("../mlflow.db", "evaluation/roc_curve.png", "a.b.c", "x" * 65, "drift\n", "%2e%2e", ""):
        with pytest.raises(ValidationError):
            route_param.validate_python(bad)


def test_importing_the_api_and_the_page_imports_no_mlflow_sklearn_or_pandas():
    code = (
        "import sys, cmms_mlflow.www.routes, cmms_mlflow.www.ui; "
        "heavy = ('mlflow', 'sklearn', 'pandas', 'pyarrow'); "
        "print('heavy:' + ','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "heavy:\n" in out.stdout + "\n", out.stdout


def test_a_trailing_newline_is_refused_in_names_the_api_validates():
    import re

    from pydantic import ValidationError

    from cmms_mlflow.www.datamodels import TrainRequest
    from cmms_pm.spec import MODEL_NAME_PATTERN, MODEL_NAME_REGEX

    with pytest.raises(ValidationError, match="pipeline"):
        TrainRequest(pipeline="predictive_maintenance\n")
    # The JSON-schema form (Python re) and the pydantic form (no lookahead) agree.
    for name, valid in (("pm_rf", True), ("pm_rf\n", False), ("123", False), ("0x1F", False)):
        assert bool(re.search(MODEL_NAME_PATTERN, name)) is valid, name
        assert bool(re.fullmatch(MODEL_NAME_REGEX.strip("^$"), name)) is valid, name
