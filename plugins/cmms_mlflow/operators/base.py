"""The base of every MLflow operator: the connection, the cached hook and MLflow error translation.

Constructors only assign (no hook, network or validation at parse time); the concrete
operators add their own fields and delegate the MLflow work to the plugin's MLflow modules
(``training_run``, ``registry``, ``model_evaluation``, ``promotion``, ``champion_scoring``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import AssetAlias, BaseOperator

from cmms_mlflow.exceptions import (
    BadDataError,
    MlflowRegistryError,
    MlflowServiceUnavailable,
    bad_data_fails_the_task,
    model_not_owned,
    server_did_not_answer,
)
from cmms_mlflow.hooks.mlflow_hook import MlflowHook
from cmms_mlflow.integrations.assets import CHAMPION_ALIAS, champion_asset
from cmms_mlflow.integrations.links import MODEL_VERSION_URL_KEY
from cmms_pm.spec import MANUAL_PROMOTION_POOL

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from cmms_pm.params import RunConfig
    from cmms_pm.spec import ModelSpec

#: Airflow pool (one slot, created by scripts/setup_airflow.sh) that serializes promotions.
PROMOTION_POOL = MANUAL_PROMOTION_POOL
CHAMPION_ASSET_PREFIX = champion_asset("").name

# MLflow error codes a retry cannot fix; anything else (5xx, connection refused) is retryable.
_PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "BAD_REQUEST",
    }
)


class LineageMixin:
    """OpenLineage: the provider's listener calls these before and after ``execute``; each operator
    says what it read and wrote in :meth:`openlineage` (built with :mod:`cmms_mlflow.integrations.lineage`).

    ``lineage_result`` is what ``execute`` returned (``None`` before it ran): the datasets that only
    exist once the task ran (the MLflow run, the version) are reported on completion.
    """

    lineage_result: Any = None

    def get_openlineage_facets_on_start(self) -> Any:
        return self.openlineage(None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return self.openlineage(self.lineage_result)

    def openlineage(self, result: Any) -> Any:
        """``OperatorLineage`` of this task, or None when it reads and writes no dataset."""
        return None


class MlflowBaseOperator(LineageMixin, BaseOperator):
    """Holds ``mlflow_conn_id``, the cached :class:`MlflowHook` and MLflow error translation.

    Subclasses implement :meth:`execute_mlflow`, which runs inside :meth:`MlflowHook.session`.
    """

    template_fields: Sequence[str] = ("mlflow_conn_id",)
    ui_color = "#d5e8f7"
    #: Whether the operator acts on ``model_name`` for its ``spec`` (when it has one): the model must
    #: then be the spec's own, checked before anything is read or written (:meth:`check_model_owner`).
    checks_model_owner: ClassVar[bool] = False

    def __init__(self, *, mlflow_conn_id: str = MlflowHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def execute(self, context: Context) -> Any:
        from mlflow.exceptions import MlflowException

        from cmms_pm.exceptions import SplitIntegrityError

        self.check_model_owner()
        with self.hook.session() as client:
            try:
                self.lineage_result = self.execute_mlflow(client, context)
                return self.lineage_result
            except SplitIntegrityError as err:  # the same bytes again on a retry
                raise BadDataError(f"{type(err).__name__}: {err}") from err
            except MlflowException as err:
                code = getattr(err, "error_code", "")
                if code in _PERMANENT_ERROR_CODES:
                    raise MlflowRegistryError(f"MLflow refused the request ({code}): {err.message}") from err
                if timed_out(err):
                    settings = self.hook.settings
                    raise server_did_not_answer(
                        settings.tracking_uri, settings.request_timeout, settings.max_retries
                    ) from err
                raise MlflowServiceUnavailable(f"MLflow call failed ({code}): {err.message}") from err

    def execute_mlflow(self, client: MlflowClient, context: Context) -> Any:
        raise NotImplementedError

    def check_model_owner(self) -> None:
        """A spec's task writes only to the spec's registered model: ``ModelOwnershipError`` (no retry,
        nothing written) for another, whatever the run's conf said (the form refuses it first)."""
        spec = getattr(self, "spec", None)
        if not self.checks_model_owner or not spec:
            return
        from cmms_pm.spec import ModelSpec

        owner = ModelSpec.from_dict(spec)
        model_name = str(getattr(self, "model_name", None))  # every operator that checks has one
        if model_name != owner.registered_model:
            raise model_not_owned(owner.name, owner.registered_model, model_name)

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI (read once by ``execute``; no connection lookup after that)."""
        return self.hook.settings.tracking_uri

    def airflow_ref(self, context: Context) -> dict[str, str]:
        """The task instance making a registry change (who, in the model's history)."""
        ti = context["ti"]
        return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}

    def event_key(self, context: Context) -> str:
        """The history key of this task's registry change: the same for every try of the task, so a
        retry or a cleared run records its event once."""
        from cmms_pm.registry_plan import event_key

        ref = self.airflow_ref(context)
        return event_key("airflow", ref["dag_id"], ref["run_id"], ref["task_id"])

    def push_model_version_link(self, context: Context, name: str, version: str) -> None:
        context["ti"].xcom_push(key=MODEL_VERSION_URL_KEY, value=self.hook.model_version_url(name, version))

    def announce_champion(
        self, context: Context, name: str, version: str | None, spec_name: str | None, **extra: Any
    ) -> None:
        """Emit the champion event of model ``name``: on the task's own champion Asset, or through
        the champion alias onto the Asset of ``spec_name`` (``model_promotion`` acts on any model)."""
        payload = {"model_name": name, "champion_version": version, **extra}
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias) and outlet.name == CHAMPION_ALIAS.name:
                if spec_name is None:
                    self.log.warning("No model spec owns %r: no champion event emitted", name)
                    continue
                context["outlet_events"][outlet].add(champion_asset(spec_name), extra=payload)
            elif str(getattr(outlet, "name", "")).startswith(CHAMPION_ASSET_PREFIX):
                context["outlet_events"][outlet].extra.update(payload)


class SpecOperatorMixin:
    """For operators built from a model spec: ``spec`` is ``ModelSpec.to_dict()`` (plain JSON, not a
    template: it is the DAG's definition); the run's own choices come from its validated params."""

    spec: Mapping[str, Any]

    @cached_property
    def model_spec(self) -> ModelSpec:
        from cmms_pm.spec import ModelSpec

        return ModelSpec.from_dict(self.spec)

    def run_config(self, context: Context) -> RunConfig:
        """The spec overridden by this run's params; bad hyperparameters fail without a retry."""
        from cmms_pm.params import run_config

        with bad_data_fails_the_task():
            return run_config(self.model_spec, context["params"])


def data_interval(context: Context) -> tuple[str, str]:
    """The run's data interval as ISO strings; a run with no logical date uses its ``run_after``."""
    start = context.get("data_interval_start") or context["dag_run"].run_after
    end = context.get("data_interval_end") or context["dag_run"].run_after
    return start.isoformat(), end.isoformat()


def timed_out(err: BaseException | None) -> bool:
    """``err`` comes from an HTTP read or connect timeout (MLflow wraps them, without ``from``)."""
    from requests.exceptions import Timeout
    from urllib3.exceptions import MaxRetryError, TimeoutError

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, Timeout | TimeoutError):
            return True
        if isinstance(err, MaxRetryError) and isinstance(err.reason, TimeoutError):
            return True
        reason = err.args[0] if err.args and isinstance(err.args[0], BaseException) else None
        err = err.__cause__ or err.__context__ or reason
    return False


def as_bool(value: Any) -> bool:
    """A boolean from a rendered template (``"True"``, ``"false"``) or a native value."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
