"""Operator extra links from Airflow task instances to the MLflow UI.

The operator knows what it touched (run, model version) only while it runs, so it pushes the
page URL to XCom under the link's key; the link reads it back for the task instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink, BaseXCom

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

RUN_URL_KEY = "mlflow_run_url"
MODEL_VERSION_URL_KEY = "mlflow_model_version_url"


class _XComUrlLink(BaseOperatorLink):
    url_key: str = ""

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        value = BaseXCom.get_value(ti_key=ti_key, key=self.url_key)
        return value if isinstance(value, str) else ""


class MlflowRunLink(_XComUrlLink):
    """The MLflow run a task created or resumed."""

    name = "MLflow run"
    url_key = RUN_URL_KEY


class MlflowModelVersionLink(_XComUrlLink):
    """The registered model version a task registered, staged, validated or promoted."""

    name = "MLflow model version"
    url_key = MODEL_VERSION_URL_KEY
