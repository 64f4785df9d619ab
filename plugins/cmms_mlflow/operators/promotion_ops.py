"""Operators of the ``model_promotion`` DAG: a person's promotion, demotion or rollback.

The MLflow work is ``cmms_mlflow.registry.promotion`` (the same guarded path as the API); these only
resolve the request and record who asked. Who asked also decides what is allowed for a model whose
spec requires approval (:func:`run_authority`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cmms_mlflow.integrations.links import MlflowModelVersionLink
from cmms_mlflow.operators.base import MlflowBaseOperator, as_bool
from cmms_mlflow.registry import model_registry

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from cmms_mlflow.records import ResolvedVersion, StageChange


class MlflowResolveVersionOperator(MlflowBaseOperator):
    """Turn ``version`` (a number, or ``"previous"`` = the champion the current one replaced) into a
    version number, and record the champion seen now, for the compare-and-set of the next step.

    Resolving in its own task makes the promotion step idempotent: a retry or a clear of it
    promotes the same version again (no change) instead of rolling back one step further.
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "model_name", "version")

    def __init__(self, *, model_name: str, version: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version

    def execute_mlflow(self, client: MlflowClient, context: Context) -> ResolvedVersion:
        from cmms_mlflow.registry.promotion import existing_version, previous_champion

        requested = str(self.version).strip()
        version = previous_champion(client, self.model_name) if requested == "previous" else requested
        existing_version(client, self.model_name, version)
        champion = model_registry.get_champion(client, self.model_name)
        return {
            "version": version,
            "requested": requested,
            "champion": str(champion.version) if champion is not None else None,
        }


class MlflowChangeStageOperator(MlflowBaseOperator):
    """A person's promotion, demotion or rollback of one version, with who/when/why tags.

    :param resolved: the record of :class:`MlflowResolveVersionOperator` (version + champion seen).
    :param override_approval: the person overrides a rejected or timed-out approval (approvers only).
    """

    template_fields: Sequence[str] = (
        *MlflowBaseOperator.template_fields,
        "model_name",
        "resolved",
        "stage",
        "reason",
        "override_approval",
    )
    operator_extra_links = (MlflowModelVersionLink(),)
    resolved: ResolvedVersion  # resolve_version's record (an XComArg when the DAG is parsed)

    def __init__(
        self,
        *,
        model_name: str,
        resolved: Any,
        stage: str,
        reason: str,
        override_approval: Any = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.resolved = resolved
        self.stage = stage
        self.reason = reason
        self.override_approval = override_approval

    def execute_mlflow(self, client: MlflowClient, context: Context) -> StageChange:
        from cmms_mlflow.registry.promotion import change_stage

        dag_run = context["dag_run"]
        who = getattr(dag_run, "triggering_user_name", None) or "airflow"
        rollback = self.resolved["requested"] == "previous"
        outcome = change_stage(
            client,
            name=self.model_name,
            version=self.resolved["version"],
            stage=self.stage,
            lock_dir=self.hook.lock_dir,
            actor=f"{who} via airflow:{dag_run.dag_id}/{dag_run.run_id}",
            reason=self.reason,
            at=dag_run.run_after.isoformat(),
            expected_champion=self.resolved["champion"],
            kind="rollback" if rollback and self.stage == "Production" else "manual",
            key=self.event_key(context),
            airflow=self.airflow_ref(context),
            authority=run_authority(
                self.model_name,
                getattr(dag_run, "triggering_user_name", None),
                override=self.reason if as_bool(self.override_approval) else "",
            ),
        )
        self.push_model_version_link(context, self.model_name, outcome["version"])
        from cmms_mlflow.integrations.assets import spec_name_of

        champion = model_registry.get_champion(client, self.model_name)
        self.announce_champion(
            context,
            self.model_name,
            str(champion.version) if champion is not None else None,
            spec_name=spec_name_of(self.model_name, champion.tags if champion is not None else {}),
        )
        self.log.info(
            "%s v%s: %s -> %s (champion before: %s, replaced: %s) by %s: %s",
            self.model_name, outcome["version"], outcome["previous_stage"], outcome["stage"],
            outcome["champion_before"], outcome["replaced"], outcome["actor"], self.reason,
        )  # fmt: skip
        if not outcome["unchanged"]:
            from cmms_mlflow.integrations import metrics

            metrics.decision(self.model_name, outcome["kind"])
        return outcome

    def openlineage(self, result: StageChange | None) -> Any:
        """Moves one version: reads and writes it."""
        if result is None:
            return None
        from cmms_mlflow.integrations import lineage

        mv = lineage.model_version(self.tracking_uri, self.model_name, result["version"])
        return lineage.operator_lineage(
            [mv], [mv], tracking_uri=self.tracking_uri, modelName=self.model_name,
            modelVersion=result["version"], decision=f"{result['kind']}:{result['stage']}",
        )  # fmt: skip


def run_authority(model_name: str, user: str | None, *, override: str = "") -> Any:
    """Who asks, for the approval rules of ``model_name``'s spec: the run's triggering user is one of
    its approvers when the spec lists them by name. A spec that requires approval but names no
    approvers ("whoever may answer its approvals") cannot be checked from a worker: promote those
    through the model API or the Models page, which ask Airflow."""
    from cmms_pm.registry_plan import Authority
    from cmms_pm.spec import load_specs, spec_for_model

    spec = spec_for_model(load_specs()[0], model_name)
    approvers = tuple(spec.approval["approvers"]) if spec is not None else ()
    return Authority.of(spec, is_approver=bool(user) and user in approvers, override=override)
