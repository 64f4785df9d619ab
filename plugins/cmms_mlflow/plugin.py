"""Registers the plugin's operator extra links with Airflow (operators are plain imports in 3.x)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from cmms_mlflow.links import MlflowModelVersionLink, MlflowRunLink


class CmmsMlflowPlugin(AirflowPlugin):
    name = "cmms_mlflow"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink()]
