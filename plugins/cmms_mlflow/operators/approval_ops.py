"""Human approval before Production: Airflow's human-in-the-loop branch operator, with the request,
the answer and the approver kept on the MLflow model version.

The training DAG runs this step only when the spec or the run asks for approval and the version
passed validation. The step writes the request (Airflow's *Required actions*; REST
``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/approve_promotion/-1/hitlDetails``), tells
the spec's channels that an approval is needed, and waits in ``awaiting_input`` (no worker slot
held). *Approve* → ``promote_model`` (still a compare-and-set against the champion of that
moment); *Reject*, or no answer within the timeout (the scheduler then records the default,
*Reject*) → ``reject_model``, which archives the version with the approval's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from cmms_pm.approval import APPROVE, PENDING, REJECT, requested_by

if TYPE_CHECKING:
    from airflow.sdk import Context

    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.integrations.notifiers import ModelEventNotifier
    from cmms_mlflow.records import DecisionRecord

APPROVAL_TIMEOUT_PARAM = "approval_timeout_hours"
DEFAULT_TIMEOUT_HOURS = 24.0


class MlflowApprovalOperator(HITLBranchOperator):
    """Ask a person to approve the validated challenger before it goes to Production.

    :param validation: the decision record of ``validate_model`` (version, metrics, reason).
    :param registered_model: the spec's registered model: ``model_name`` must be it (a spec's runs
        touch no other model), checked before anything is written.
    :param approvers: Airflow user ids allowed to answer (empty: anyone allowed to act on the
        DAG's human-in-the-loop tasks, e.g. SimpleAuthManager's ``user``/``op``/``admin``).
    :param notifier: the spec's notifier; told ``approval_needed`` when the request is written.
    :param promote_task_id: / :param reject_task_id: the two branches.

    The timeout is the run's ``approval_timeout_hours`` param (from the spec's
    ``approval.timeout_hours``), read when the step starts.
    """

    template_fields: Sequence[str] = (
        *HITLBranchOperator.template_fields,
        "model_name",
        "validation",
        "mlflow_conn_id",
    )
    ui_color = "#fde9c9"
    validation: DecisionRecord  # validate_model's record (an XComArg when the DAG is parsed)

    def __init__(
        self,
        *,
        model_name: str,
        validation: Any,
        registered_model: str | None = None,
        approvers: Sequence[str] = (),
        notifier: ModelEventNotifier | None = None,
        mlflow_conn_id: str = "mlflow_default",
        promote_task_id: str = "promote_model",
        reject_task_id: str = "reject_model",
        **kwargs: Any,
    ) -> None:
        # Airflow's metaclass hands the DAG's params in; the form adds its own field (a task param).
        params = ParamsDict(kwargs.pop("params", None) or {})
        params["comment"] = Param(
            "",
            type="string",
            maxLength=2000,
            title="Comment",
            description="Why you approve or reject; kept on the model version.",
            source="task",
        )
        super().__init__(
            subject="Promote {{ params.model_name }} to Production?",
            options=[APPROVE, REJECT],
            options_mapping={APPROVE: promote_task_id, REJECT: reject_task_id},
            # What the scheduler records when nobody answers in time: never an approval.
            defaults=[REJECT],
            multiple=False,
            params=params,
            assigned_users=[{"id": user, "name": user} for user in approvers] or None,
            **kwargs,
        )
        self.model_name = model_name
        self.registered_model = registered_model
        self.validation = validation
        self.approvers = tuple(approvers)
        self.notifier = notifier
        self.mlflow_conn_id = mlflow_conn_id

    def _hook(self) -> MlflowHook:
        from cmms_mlflow.hooks.mlflow_hook import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    @property
    def version(self) -> str:
        return str(self.validation["challenger_version"])

    def _check_model_owner(self) -> None:
        if self.registered_model is not None and str(self.model_name) != self.registered_model:
            from cmms_mlflow.exceptions import model_not_owned

            spec = self.dag_id.removesuffix("_training")  # the factory's DAG id: <spec>_training
            raise model_not_owned(spec, self.registered_model, str(self.model_name))

    def execute(self, context: Context) -> Any:
        from cmms_mlflow.integrations.notifiers import airflow_links, airflow_run, now_iso
        from cmms_mlflow.registry import model_registry
        from cmms_pm.notifications import APPROVAL_NEEDED, approval_request, model_event

        self._check_model_owner()
        hours = float(context["params"].get(APPROVAL_TIMEOUT_PARAM) or DEFAULT_TIMEOUT_HOURS)
        self.response_timeout = timedelta(hours=hours)
        hook = self._hook()
        links = {"mlflow": hook.model_version_url(self.model_name, self.version), **airflow_links(context)}
        try:
            links["approve"] = self.generate_link_to_ui_from_context(context=context)
        except ValueError:  # no [api] base_url: the Airflow links above still lead there
            pass
        requested_at = now_iso()
        event = model_event(
            APPROVAL_NEEDED,
            model=self.model_name,
            version=self.version,
            spec=self.notifier.spec_name if self.notifier else None,
            reason=self.validation["reason"],
            record=self.validation,
            links=links,
            airflow=airflow_run(context),
            occurred_at=requested_at,
            approval={"timeout_hours": hours, "approvers": ", ".join(self.approvers) or None},
        )
        self.subject = f"Promote {self.model_name} version {self.version} to Production?"
        self.body = approval_request(event)
        with hook.session() as client:
            model_registry.set_tags(
                client,
                self.model_name,
                self.version,
                {
                    "approval_status": PENDING,
                    "approval_requested_at": requested_at,
                    "approval_timeout_hours": f"{hours:g}",
                    "approval_requested_by": requested_by(context["ti"].dag_id, context["ti"].run_id),
                },
            )
        # HITLOperator calls its notifiers once the request is written, before the task waits.
        self.notifiers = [self.notifier.with_event(event)] if self.notifier else []
        self.log.info("Waiting up to %g h for an answer on %s v%s", hours, self.model_name, self.version)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from cmms_mlflow.registry import model_registry
        from cmms_pm.approval import approval_outcome
        from cmms_pm.registry_plan import event_key

        self._check_model_owner()
        if "error" not in event:
            self.validate_chosen_options(event["chosen_options"])
            responded_at = event.get("responded_at")
            isoformat = getattr(responded_at, "isoformat", None)  # a datetime, or already text
            outcome = approval_outcome(
                chosen=event["chosen_options"],
                user=event.get("responded_by_user"),
                comment=(event.get("params_input") or {}).get("comment"),
                timed_out=bool(event.get("timedout")),
                timeout_hours=float(context["params"].get(APPROVAL_TIMEOUT_PARAM) or DEFAULT_TIMEOUT_HOURS),
                responded_at=isoformat() if isoformat is not None else responded_at,
            )
            hook = self._hook()
            ti = context["ti"]
            with hook.session() as client:
                # The answer's tags and its history event (who, when, why, this run), under the lock.
                model_registry.record_approval(
                    client,
                    self.model_name,
                    self.version,
                    outcome=outcome,
                    lock_dir=hook.lock_dir,
                    key=event_key("airflow", ti.dag_id, ti.run_id, ti.task_id),
                    airflow={"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id},
                )
            self.log.info("%s v%s: %s", self.model_name, self.version, outcome["reason"])
            # The decision is this step's result, read by promote_model/reject_model. Pushed here:
            # branching ends the step by raising, so a returned value would never reach XCom.
            context["ti"].xcom_push(key="return_value", value=outcome)
        # Validates again and branches: Approve -> promote_model; Reject or timeout -> reject_model.
        return super().execute_complete(context, event)
