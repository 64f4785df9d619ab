"""Every answer of the model API is a pydantic model (``cmms_mlflow.www.datamodels``), declared on
its route, so the OpenAPI schema types it; and the models serve what the read models produce,
every key and value, against a real MLflow on SQLite."""

from __future__ import annotations

import json

import pytest
from fastapi.routing import APIRoute

from cmms_mlflow.registry import model_registry

RUN_ID = "manual__2026-03-02T02:00:00+00:00"


@pytest.fixture(scope="module")
def apps():
    """The model API (its routes, and the predict route plugin.py adds to it) and the page's app."""
    from fastapi import FastAPI

    from cmms_mlflow.www import predict_api, routes, ui

    predict = FastAPI()
    predict_api.install(predict)  # a copy of the route, so the shared app stays as other tests see it
    return routes.app, predict, ui.app


def _json_route(route: APIRoute) -> bool:
    """Whether the route answers JSON (its response class is FastAPI's default)."""
    from fastapi.datastructures import DefaultPlaceholder

    return isinstance(route.response_class, DefaultPlaceholder)


def test_every_json_route_declares_the_model_of_its_answer(apps):
    from pydantic import BaseModel

    json_routes = [(app, r) for app in apps for r in app.routes if isinstance(r, APIRoute) and _json_route(r)]
    assert len(json_routes) >= 9, [r.path for _, r in json_routes]  # the model API's routes, predict
    for _, route in json_routes:
        model = route.response_model
        assert isinstance(model, type) and issubclass(model, BaseModel), (
            f"{route.methods} {route.path}: answers {model!r}, not a pydantic model"
        )
    others = [r for app in apps for r in app.routes if isinstance(r, APIRoute) and not _json_route(r)]
    assert others, "the PNG plots and the page's files are routes too"
    for route in others:  # the PNG plots and the page's files: a declared media type, not JSON
        assert route.response_class.media_type != "application/json", route.path


def test_the_openapi_schema_types_every_answer(apps):
    routes_app, predict, _ = apps
    schema = routes_app.openapi()
    schema["paths"].update(predict.openapi()["paths"])
    schema["components"]["schemas"].update(predict.openapi()["components"]["schemas"])
    components = schema["components"]["schemas"]
    typed = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            ok = next(code for code in operation["responses"] if code.startswith("2"))
            content = operation["responses"][ok].get("content", {})
            if "application/json" not in content:
                assert "image/png" in content, f"{method} {path}: no typed answer"
                continue
            ref = content["application/json"]["schema"].get("$ref", "")
            assert ref.startswith("#/components/schemas/"), f"{method} {path}: untyped answer {content}"
            assert components[ref.rsplit("/", 1)[1]]["properties"], ref
            typed += 1
    assert typed >= 9 and "/models/{name}/predict" in schema["paths"]
    # The nested parts are typed too, e.g. a row's champion is a version with typed fields.
    row = components["ModelRow"]["properties"]
    assert "VersionView" in json.dumps(row["champion"]) and "Permissions" in json.dumps(row["permissions"])


def _served(model, answer: dict) -> dict:
    """What FastAPI serves for ``answer`` through ``model`` (validate, then dump without unset keys)."""
    return model.model_validate(answer).model_dump(mode="json", exclude_unset=True)


def test_the_answer_models_serve_every_key_and_value_the_read_models_produce(
    client, register, model_name, mlflow_conn, tmp_path
):
    """A model with a champion, a challenger, a pending approval, drift, an override and a history:
    each route's answer, built by the same functions the routes call, comes out unchanged."""
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.registry import history
    from cmms_mlflow.registry.promotion import change_stage
    from cmms_mlflow.www import datamodels
    from cmms_mlflow.www.model_overview import model_summary, version_detail

    hook = MlflowHook()
    v1, v2, v3 = register(model_name), register(model_name), register(model_name)
    outcome = change_stage(
        client, name=model_name, version=v1, stage="Production", lock_dir=tmp_path, actor="alice",
        reason="first", at="2026-03-01T02:00:00+00:00",
        airflow={"dag_id": "pm_training", "run_id": RUN_ID, "task_id": "promote_model"},
    )  # fmt: skip
    model_registry.set_tags(client, model_name, v1, {
        "validation_f1": "0.9", "decision_threshold": "0.4", "drift_status": "warn", "drift_max_psi": "0.3",
        "drift_threshold": "0.2", "drift_features": "a,b", "approval_override": "rejected",
        "approval_override_by": "carol", "approval_override_reason": "known seasonal shift",
        "airflow.dag_id": "pm_training", "airflow.run_id": RUN_ID,
    })  # fmt: skip
    model_registry.set_tags(client, model_name, v2, {
        "approval_status": "pending", "approval_requested_at": "2026-03-02T02:10:00+00:00",
        "approval_timeout_hours": "24", "approval_requested_by": f"airflow:pm_training/{RUN_ID}",
    })  # fmt: skip
    change_stage(client, name=model_name, version=v3, stage="Staging", lock_dir=tmp_path, actor="bob",
                 reason="staged", at="2026-03-03T02:00:00+00:00")  # fmt: skip

    permissions = {"promote": True, "rollback": True, "override": False, "train": False, "approve": False}
    summary = model_summary(client, hook, model_name, approvers=["carol"], training_dag_id="pm_training")
    for approval in summary["pendingApprovals"]:  # what routes._with_airflow_state adds
        approval["airflow"], approval["canAnswer"] = None, False
    row = {"name": model_name, **summary, "spec": None, "permissions": permissions, "promotionDagUrl": None}
    assert summary["champion"]["drift"] and summary["pendingApprovals"] and summary["decisions"]
    detail = {**version_detail(client, hook, model_name, v1), "permissions": permissions}
    events, token = history.read_page(client, model_name, limit=2)
    answers = [
        (datamodels.ModelRow, row),
        (datamodels.ModelList, {"models": [row], "mlflowUiUrl": hook.ui_url}),
        (datamodels.VersionDetail, detail),
        (datamodels.ModelHistory, {"name": model_name, "events": events, "nextPageToken": token}),
        (datamodels.StageChange, outcome),
    ]
    for model, answer in answers:
        assert _served(model, answer) == json.loads(json.dumps(answer)), model.__name__
    # Typed, not passed through: a wrong type in a read model is a failed answer, not a silent one.
    with pytest.raises(ValueError, match="champion"):
        datamodels.ModelRow.model_validate({**row, "champion": {"version": 1}})
    # A key a read model adds before the model declares it is served, never dropped.
    assert _served(datamodels.ModelRow, {**row, "newKey": [1]})["newKey"] == [1]
