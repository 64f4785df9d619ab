"""Registers the plugin with Airflow: operator extra links, the dCMMS model API and the Models page.

Operators are plain imports in Airflow 3; the plugin only carries what Airflow must discover.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from cmms_mlflow.integrations.links import MlflowModelVersionLink, MlflowRunLink

#: The Models page: an entry of Airflow's navigation, shown in an iframe (``cmms_mlflow.www.ui``).
MODELS_VIEW = {
    "name": "Models",
    "href": "/cmms-ui/models/",
    "destination": "nav",
    "url_route": "models",
    "category": "browse",
}


def external_views() -> list[dict[str, Any]]:
    """The Models page, and a link to the MLflow UI when ``CMMS_MLFLOW_UI_URL`` names it."""
    views: list[dict[str, Any]] = [MODELS_VIEW]
    mlflow_ui = (os.environ.get("CMMS_MLFLOW_UI_URL") or "").strip()
    if mlflow_ui.startswith(("http://", "https://")):
        views.append({"name": "MLflow", "href": mlflow_ui, "destination": "nav", "category": "browse"})
    return views


class _FastApiApps:
    """``fastapi_apps``, imported on first read. Only the api-server (and ``airflow plugins``)
    reads it, so task and DAG-processor processes, which load plugins too, never import FastAPI
    and Airflow's API security for it."""

    def __get__(self, instance: Any, owner: type) -> list[dict[str, Any]]:
        from cmms_mlflow.www import predict_api, routes, ui

        predict_api.install(routes.app)  # POST /models/{name}/predict, with the app's authentication
        return [
            {"app": routes.app, "url_prefix": routes.URL_PREFIX, "name": "CMMS model API"},
            {"app": ui.app, "url_prefix": ui.URL_PREFIX, "name": "CMMS Models page"},
        ]


class CmmsMlflowPlugin(AirflowPlugin):
    name = "cmms_mlflow"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink()]
    fastapi_apps = _FastApiApps()
    external_views = external_views()
