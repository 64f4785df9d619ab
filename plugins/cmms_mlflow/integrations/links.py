"""Links between the two UIs: operator extra links from Airflow task instances to the MLflow UI,
and the addresses of Airflow's own pages (a DAG, a run, a task's required actions) that the model
API and the Models page link to.

The operator knows what it touched (run, model version) only while it runs, so it pushes the
page URL to XCom under the link's key; the link reads it back for the task instance.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink, BaseXCom

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

RUN_URL_KEY = "mlflow_run_url"
MODEL_VERSION_URL_KEY = "mlflow_model_version_url"
#: What a DAG id and a run id may look like when they come from data (a model version's tags):
#: Airflow's own DAG id rule and its default ``[scheduler] allowed_run_id_pattern``, 250 at most.
DAG_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,250}")
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_.~:+-]{1,250}")


class _XComUrlLink(BaseOperatorLink):
    url_key: str = ""

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        # Airflow's TIKeyProtocol declares settable members, which the NamedTuple TaskInstanceKey it is
        # given (by Airflow's own links too) cannot match: the stub is stricter than its callers.
        value = BaseXCom.get_value(ti_key=ti_key, key=self.url_key)  # type: ignore[arg-type]
        return value if isinstance(value, str) else ""


class MlflowRunLink(_XComUrlLink):
    """The MLflow run a task created or resumed."""

    name = "MLflow run"
    url_key = RUN_URL_KEY


class MlflowModelVersionLink(_XComUrlLink):
    """The registered model version a task registered, staged, validated or promoted."""

    name = "MLflow model version"
    url_key = MODEL_VERSION_URL_KEY


def airflow_ui_url(path: str) -> str:
    """A page of this Airflow's UI: ``[api] base_url`` + ``path`` (just ``path`` without a base URL)."""
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="").rstrip("/") + path


def dag_url(dag_id: str, run_id: str | None = None) -> str:
    """Airflow's page of a DAG, or of one of its runs."""
    path = f"/dags/{quote(dag_id, safe='')}"
    return airflow_ui_url(path + (f"/runs/{quote(run_id, safe='')}" if run_id else ""))


def airflow_run_url(dag_id: Any, run_id: Any) -> str | None:
    """Airflow's page of one run, for ids read from data (tags anyone with MLflow write access can
    edit): None unless both look like Airflow's own ids. The address is always this Airflow's
    (``[api] base_url``, or a path on its origin): a tag never chooses where a link goes."""
    if not isinstance(dag_id, str) or not isinstance(run_id, str):
        return None
    if not DAG_ID_PATTERN.fullmatch(dag_id) or not RUN_ID_PATTERN.fullmatch(run_id):
        return None
    return dag_url(dag_id, run_id)


def required_actions_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """Airflow's *required actions* page of a human-in-the-loop task, where a person answers it (the
    page ``HITLOperator.generate_link_to_ui`` links to)."""
    task = f"/tasks/{quote(task_id, safe='')}/required_actions?{urlencode({'map_index': map_index})}"
    return dag_url(dag_id, run_id) + task
