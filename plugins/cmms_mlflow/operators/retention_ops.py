"""The last step of a model's training and scoring DAGs: the spec's ``retention``
(cmms_mlflow.registry.pruning).

A teardown task: it runs whatever happened upstream (a failed run still leaves folders behind) and
its own outcome does not decide the DAG run's state (a failed clean-up is announced by the spec's
``task_failed`` notification, the model run's result stands).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cmms_mlflow.operators.base import MlflowBaseOperator, SpecOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

#: Dag-run states whose runs may still read their folder.
ACTIVE_STATES = ["queued", "running"]


class MlflowRetentionOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Remove this DAG's run folders beyond the spec's ``retention.keep_batches`` and, with a
    ``model_name`` (the training DAG), the artifacts of archived versions beyond
    ``retention.keep_archived_versions``. A spec without ``retention`` removes nothing.

    :param model_name: the registered model whose archived versions are pruned (``None``: folders only).
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "model_name")
    ui_color = "#eeeeee"

    def __init__(self, *, spec: Mapping[str, Any], model_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.model_name = model_name

    def execute_mlflow(self, client: MlflowClient, context: Context) -> dict[str, Any]:
        from cmms_mlflow.registry.pruning import prune_folders, prune_versions
        from cmms_pm.batch import batch_uri, data_root
        from cmms_pm.retention import settings

        keep_batches, keep_versions = settings(self.model_spec.retention)
        ti, dag_run = context["ti"], context["dag_run"]
        dag_id, run_id = dag_run.dag_id, dag_run.run_id

        def active_runs(run_ids: list[str] | None) -> int:
            return ti.get_dr_count(dag_id=dag_id, run_ids=run_ids, states=ACTIVE_STATES)

        result: dict[str, Any] = {
            "folders": prune_folders(
                data_root(), dag_id, keep=keep_batches, own_run_id=run_id,
                own_uri=batch_uri(data_root(), dag_id, run_id), active_runs=active_runs,
            ),
            "versions": None,
        }  # fmt: skip
        if self.model_name:
            result["versions"] = prune_versions(
                client,
                self.model_name,
                spec=self.model_spec,
                keep=keep_versions,
                lock_dir=self.hook.lock_dir,
                local_root=self.hook.settings.artifact_location,
                actor=f"airflow:{dag_id}/{run_id}",
                at=dag_run.run_after.isoformat(),
                key=self.event_key(context),
                airflow=self.airflow_ref(context),
            )
        folders, versions = result["folders"], result["versions"] or {}
        kept_versions = {f"v{v}": why for v, why in (versions.get("protected") or {}).items()}
        self.log.info(
            "Retention (keep_batches=%s, keep_archived_versions=%s): removed %d run folder(s) %s; pruned "
            "the artifacts of %s; kept %s",
            keep_batches, keep_versions, len(folders["removed"]), folders["removed"],
            [f"v{v}" for v in versions.get("pruned", [])] or "no version",
            {**folders["protected"], **kept_versions},
        )  # fmt: skip
        return result


def record_run(context: Context, folder_uri: str, kind: str) -> None:
    """Write the run record of this run's folder before anything else goes in it, so retention knows
    the folder's run and data interval even if the run fails halfway (``cmms_pm.retention``)."""
    from cmms_mlflow.operators.base import data_interval
    from cmms_pm.retention import run_record, write_run_record

    start, end = data_interval(context)
    dag_run = context["dag_run"]
    write_run_record(
        folder_uri,
        run_record(
            kind=kind, dag_id=dag_run.dag_id, run_id=dag_run.run_id, run_after=dag_run.run_after.isoformat(),
            data_interval_start=start, data_interval_end=end,
        ),
    )  # fmt: skip
