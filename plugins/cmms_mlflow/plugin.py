"""Registers the plugin with Airflow: operator extra links and the dCMMS model API (FastAPI).

Operators are plain imports in Airflow 3; the plugin only carries what Airflow must discover.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from cmms_mlflow.links import MlflowModelVersionLink, MlflowRunLink


class _ModelApi:
    """``fastapi_apps``, imported on first read. Only the api-server (and ``airflow plugins``)
    reads it, so task and DAG-processor processes, which load plugins too, never import FastAPI
    and Airflow's API security for it."""

    def __get__(self, instance: Any, owner: type) -> list[dict[str, Any]]:
        from cmms_mlflow.api import URL_PREFIX, app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "CMMS model API"}]


class CmmsMlflowPlugin(AirflowPlugin):
    name = "cmms_mlflow"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink()]
    fastapi_apps = _ModelApi()
