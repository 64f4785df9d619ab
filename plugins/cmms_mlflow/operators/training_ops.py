"""Operators of the training DAG: train, register, stage, validate, promote or reject, report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cmms_mlflow.exceptions import bad_data_fails_the_task
from cmms_mlflow.hooks.mlflow_hook import redact_uri
from cmms_mlflow.integrations.assets import SPEC_TAG
from cmms_mlflow.integrations.links import RUN_URL_KEY, MlflowModelVersionLink, MlflowRunLink
from cmms_mlflow.operators.base import MlflowBaseOperator, SpecOperatorMixin
from cmms_mlflow.registry import model_registry
from cmms_mlflow.tracking import training_run
from cmms_pm.notifications import PROMOTED, REJECTED

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from cmms_mlflow.integrations.notifiers import ModelEventNotifier
    from cmms_mlflow.records import (
        DataReport,
        DecisionRecord,
        PromotionOutcome,
        RegisteredVersion,
        TrainingResult,
    )
    from cmms_pm.batch import Manifest
    from cmms_pm.registry_plan import Authority, Outcome
    from cmms_pm.spec import ModelSpec


class MlflowTrainModelOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Train the spec's model on a data batch and log one MLflow run (resumed, not repeated, on retry).

    The experiment, estimator and hyperparameters are the spec's, overridden by the run's params.

    :param dataset: the manifest returned by the data step (splits' URIs, rows, digest).
    :param checks: the report of ``validate_data`` (contract check, drift), logged with the run.
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "dataset", "checks", "tuning")
    operator_extra_links = (MlflowRunLink(),)
    # What the upstream tasks returned, as ``execute`` sees them (XComArgs when the DAG is parsed).
    dataset: Manifest
    checks: DataReport | None

    def __init__(
        self, *, spec: Mapping[str, Any], dataset: Any, checks: Any = None, tuning: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.dataset = dataset
        self.checks = checks
        #: The plan returned by ``create_study`` when the spec tunes (None: one fit of the run's values).
        self.tuning = tuning

    def execute_mlflow(self, client: MlflowClient, context: Context) -> TrainingResult:
        spec = self.model_spec
        config = self.run_config(context)
        experiment_id = self.hook.get_or_create_experiment(client, config.experiment)
        airflow_tags = training_run.airflow_tags(context)
        if self.tuning:
            result = self.train_tuned(client, context, config)
            return self.finished(context, experiment_id, result)
        earlier = training_run.resume_or_close(
            client, training_run.find_task_runs(client, experiment_id, airflow_tags)
        )
        if earlier is not None:
            self.log.info("Reusing MLflow run %s from an earlier attempt", earlier.info.run_id)
            result = training_run.run_result(client, earlier)
        else:
            manifest = self.dataset
            tags = training_tags(spec, config.estimator, manifest, self.checks, airflow_tags)
            with bad_data_fails_the_task():  # e.g. a validation split with no failure: no threshold
                result = training_run.log_training_run(
                    client,
                    experiment_id=experiment_id,
                    manifest=manifest,
                    spec=spec,
                    estimator=config.estimator,
                    hyperparameters=config.hyperparameters,
                    tags=tags,
                    run_name=f"{self.task_id}-{manifest['training_date']}",
                    checks=self.checks,
                )
        return self.finished(context, experiment_id, result)

    def finished(self, context: Context, experiment_id: str, result: TrainingResult) -> TrainingResult:
        context["ti"].xcom_push(key=RUN_URL_KEY, value=self.hook.run_url(experiment_id, result["run_id"]))
        self.log.info("MLflow run %s: validation F1 %.4f", result["run_id"], result["metrics"]["f1"])
        return result

    def train_tuned(self, client: MlflowClient, context: Context, config: Any) -> TrainingResult:
        """The best trial's hyperparameters train the model, in the training run create_study made
        (the trials' parent); a finished one (a retry, a cleared run) is returned as it is."""
        from cmms_mlflow.tracking import tuning_study

        plan = self.tuning
        parent = client.get_run(plan["parent_run_id"])
        if parent.info.status == "FINISHED":
            self.log.info(
                "Reusing the finished training run %s of study %s", parent.info.run_id, plan["study"]
            )
            return training_run.run_result(client, parent)
        with bad_data_fails_the_task():
            hyperparameters, summary = tuning_study.best_hyperparameters(plan, config.hyperparameters)
        self.log.info(
            "Study %s: best trial %d of %d, validation %s %.4f, %s",
            plan["study"], summary["best_slot"], summary["trials"], plan["metric"], summary["best_value"],
            summary["best_params"],
        )  # fmt: skip
        tuning_study.log_summary(client, parent.info.run_id, summary)
        manifest = self.dataset
        airflow_tags = training_run.airflow_tags(context)
        with bad_data_fails_the_task():  # e.g. a validation split with no failure: no threshold
            return training_run.log_training_run(
                client,
                experiment_id=parent.info.experiment_id,
                manifest=manifest,
                spec=self.model_spec,
                estimator=config.estimator,
                hyperparameters=hyperparameters,
                tags=training_tags(self.model_spec, config.estimator, manifest, self.checks, airflow_tags),
                run_name=f"{self.task_id}-{manifest['training_date']}",
                checks=self.checks,
                run_id=parent.info.run_id,
                tuning=summary,
            )

    def openlineage(self, result: TrainingResult | None) -> Any:
        """Reads the batch; writes the MLflow run (params, metrics, plots, the logged model)."""
        from cmms_mlflow.integrations import lineage

        if result is None:
            return lineage.operator_lineage([lineage.batch(self.dataset)], dataDigest=self.dataset["digest"])
        return lineage.operator_lineage(
            [lineage.batch(self.dataset)],
            [lineage.mlflow_run(self.tracking_uri, result["run_id"])],
            tracking_uri=self.tracking_uri,
            runId=result["run_id"],
            dataDigest=self.dataset["digest"],
        )


def training_tags(
    spec: ModelSpec, kind: str, manifest: Any, checks: DataReport | None, airflow_tags: dict[str, str]
) -> dict[str, str]:
    """The tags of a training run (copied to its model version): spec, data, checks, Airflow task."""
    from cmms_pm.estimators import estimator

    tags = {
        "model_type": estimator(kind).title,
        "estimator": kind,
        "use_case": spec.name,
        SPEC_TAG: spec.name,
        "model_spec_file": spec.path,
        "data_source": manifest.get("source", ""),
        "data_version": manifest["data_version"],
        "data_interval_start": manifest["data_interval_start"],
        "data_interval_end": manifest["data_interval_end"],
        "data_digest": manifest["digest"],
        "training_date": manifest["training_date"],
        **_check_tags(checks),
        **airflow_tags,
    }
    commit = training_run.git_commit()
    if commit:
        tags.update({"git_commit": commit, "mlflow.source.git.commit": commit})
    return tags


def _check_tags(checks: DataReport | None) -> dict[str, str]:
    """Run tags (copied to the model version) that say how the batch compared with the champion's."""
    if not checks:
        return {}
    tags = {"data_checked_against": str(checks.get("champion_version") or "")}
    drift = checks.get("drift")
    if drift:
        from cmms_pm.drift import DriftReport, drift_tags

        tags.update(drift_tags(DriftReport.from_dict(drift)))
    else:
        tags["drift_status"] = checks.get("drift_status", "none")
    check = checks.get("contract_check")
    if check:
        tags["contract_unseen_category_columns"] = str(len(check.get("unseen_categories") or {}))
        tags["contract_out_of_range_columns"] = str(len(check.get("out_of_range") or {}))
    tags.update(_leakage_tags(checks))
    return tags


def _leakage_tags(checks: DataReport) -> dict[str, str]:
    """``leakage_columns`` and the accepted / left-out leaking columns (cmms_pm.leakage)."""
    from cmms_pm.leakage import leakage_tags

    return leakage_tags(checks.get("leakage") or {})


class MlflowRegisterModelOperator(MlflowBaseOperator):
    """Register the trained model as a new version carrying the run's tags and a description.

    :param spec: the spec the DAG is built from (``ModelSpec.to_dict()``), if any: ``model_name``
        must then be its registered model.
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "model_name", "training")
    operator_extra_links = (MlflowModelVersionLink(),)
    checks_model_owner: ClassVar[bool] = True
    training: TrainingResult  # train_model's result (an XComArg when the DAG is parsed)

    def __init__(
        self, *, model_name: str, training: Any, spec: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training = training
        self.spec = spec

    def execute_mlflow(self, client: MlflowClient, context: Context) -> RegisteredVersion:
        run = client.get_run(self.training["run_id"])
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
        metrics = self.training["metrics"]
        description = (
            f"{tags.get('model_type', 'model')} for {tags.get('use_case', 'predictive maintenance')}, "
            f"trained on data {tags.get('data_version', '?')} by Airflow run "
            f"{tags.get(training_run.TAG_RUN_ID, '?')}. Validation F1 {metrics['f1']:.4f}, "
            f"ROC-AUC {metrics['roc_auc']:.4f}, PR-AUC {metrics['pr_auc']:.4f}."
        )
        version = model_registry.register_version(
            client,
            name=self.model_name,
            source=self.training["model_uri"],
            run_id=self.training["run_id"],
            description=description,
            tags=tags,
            run_link=airflow_run_link(tags),
        )
        self.push_model_version_link(context, self.model_name, version.version)
        return {"name": self.model_name, "version": str(version.version), "run_id": self.training["run_id"]}

    def openlineage(self, result: RegisteredVersion | None) -> Any:
        """Reads the MLflow run (its logged model); writes the new model version."""
        if result is None:
            return None
        from cmms_mlflow.integrations import lineage

        uri = self.tracking_uri
        return lineage.operator_lineage(
            [lineage.mlflow_run(uri, result["run_id"])],
            [lineage.model_version(uri, result["name"], result["version"], result["run_id"])],
            tracking_uri=uri,
            runId=result["run_id"],
            modelName=result["name"],
            modelVersion=result["version"],
        )


class MlflowTransitionModelOperator(MlflowBaseOperator):
    """Move a version to a stage; the matching alias moves with it (see ``registry.transition``).

    :param spec: the spec the DAG is built from, if any: ``model_name`` must be its registered model.
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "model_name", "version", "stage")
    operator_extra_links = (MlflowModelVersionLink(),)
    checks_model_owner: ClassVar[bool] = True

    def __init__(
        self,
        *,
        model_name: str,
        version: Any,
        stage: str,
        from_stages: tuple[str, ...] | None = None,
        spec: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.stage = stage
        self.from_stages = from_stages
        self.spec = spec

    def execute_mlflow(self, client: MlflowClient, context: Context) -> Outcome:
        ti = context["ti"]
        version = str(self.version)
        with model_registry.model_lock(self.hook.lock_dir, self.model_name) as lock:
            changes = model_registry.transition(
                client,
                self.model_name,
                version,
                self.stage,
                from_stages=self.from_stages,
                lock=lock,
                actor=f"airflow:{ti.dag_id}/{ti.run_id}",
                at=context["dag_run"].run_after.isoformat(),
                reason=f"{self.task_id}: {self.stage}",
                key=self.event_key(context),
                airflow=self.airflow_ref(context),
            )
        self.push_model_version_link(context, self.model_name, version)
        return changes

    def openlineage(self, result: dict[str, Any] | None) -> Any:
        """Moves the version to a stage: reads and writes that version."""
        if result is None:
            return None
        from cmms_mlflow.integrations import lineage

        version = str(self.version)
        mv = lineage.model_version(self.tracking_uri, self.model_name, version)
        return lineage.operator_lineage(
            [mv], [mv], tracking_uri=self.tracking_uri, modelName=self.model_name, modelVersion=version
        )


class MlflowValidateModelOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Score the staged challenger and the champion on the holdout; tag and record the decision.

    The promotion policy (metric, threshold, minimum improvement, backfill rule) is the spec's,
    overridden by the run's params; the drift gate comes from ``validate_data``'s report.

    :param checks: the report of ``validate_data`` (its drift status and reason feed the gate).
    """

    template_fields: Sequence[str] = (
        *MlflowBaseOperator.template_fields,
        "model_name",
        "version",
        "holdout_uri",
        "holdout_sha256",
        "checks",
        "dataset",
    )
    operator_extra_links = (MlflowModelVersionLink(),)
    checks_model_owner: ClassVar[bool] = True
    # What the upstream tasks returned, as ``execute`` sees them (XComArgs when the DAG is parsed).
    checks: DataReport | None
    dataset: Manifest | None

    def __init__(
        self,
        *,
        spec: Mapping[str, Any],
        model_name: str,
        version: Any,
        holdout_uri: Any,
        holdout_sha256: Any = None,
        checks: Any = None,
        dataset: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.model_name = model_name
        self.version = version
        self.holdout_uri = holdout_uri
        self.holdout_sha256 = holdout_sha256
        self.checks = checks
        self.dataset = dataset

    def execute_mlflow(self, client: MlflowClient, context: Context) -> DecisionRecord:
        from cmms_mlflow.hooks.client_context import pickle_loading_disabled
        from cmms_mlflow.tracking.model_evaluation import validate_candidate

        config = self.run_config(context)
        checks = self.checks or {}
        with pickle_loading_disabled():
            record = validate_candidate(
                client,
                name=self.model_name,
                version=str(self.version),
                holdout_uri=self.holdout_uri,
                holdout_sha256=self.holdout_sha256 or None,
                target=self.model_spec.target,
                policy={**config.thresholds, "costs": _decision_costs(self.model_spec)},
                drift={
                    "status": checks.get("drift_status", "none"),
                    "reason": checks.get("drift_reason", ""),
                },
                split=(self.dataset or {}).get("split"),
                **load_options(self.model_spec),
            )
        self.push_model_version_link(context, self.model_name, str(self.version))
        from cmms_mlflow.integrations import metrics

        champion = record.get("champion_metrics") or {}
        metrics.holdout_f1(self.model_name, record["challenger_metrics"].get("f1"), champion.get("f1"))
        return record

    def openlineage(self, result: DecisionRecord | None) -> Any:
        """Reads the holdout split of the batch, the challenger and the champion; writes the
        challenger's decision (tags and ``validation/decision.json``)."""
        if result is None:
            return None
        from cmms_mlflow.integrations import lineage

        uri = self.tracking_uri
        challenger = lineage.model_version(uri, self.model_name, result["challenger_version"])
        inputs = [lineage.batch_of_split(self.holdout_uri), challenger]
        champion = result.get("champion_version")
        if champion:
            inputs.append(lineage.model_version(uri, self.model_name, champion))
        return lineage.operator_lineage(
            inputs,
            [challenger],
            tracking_uri=uri,
            runId=result.get("challenger_run_id"),
            modelName=self.model_name,
            modelVersion=result["challenger_version"],
            decision=result["decision"],
        )


class MlflowDecisionOperator(MlflowBaseOperator):
    """Base of the steps after validation: they act on the validation's decision record.

    :param validation: the record returned by :class:`MlflowValidateModelOperator`.
    :param approval: the human decision returned by the approval step, when the run asked one
        (``None`` when it did not; see :mod:`cmms_mlflow.operators.approval_ops`).
    :param notifier: the spec's :class:`~cmms_mlflow.integrations.notifiers.ModelEventNotifier`, told of what
        the step did (``None``: nobody is told).
    """

    template_fields: Sequence[str] = (
        *MlflowBaseOperator.template_fields,
        "model_name",
        "validation",
        "approval",
    )
    operator_extra_links = (MlflowModelVersionLink(),)
    checks_model_owner: ClassVar[bool] = True
    validation: DecisionRecord  # validate_model's record (an XComArg when the DAG is parsed)

    def __init__(
        self,
        *,
        model_name: str,
        validation: Any,
        spec: Mapping[str, Any] | None = None,
        approval: Any = None,
        notifier: ModelEventNotifier | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.validation = validation
        self.spec = spec
        self.approval = approval
        self.notifier = notifier

    #: Whether the step writes the challenger (promote, reject) or only reads it (report).
    writes_version: ClassVar[bool] = True

    def openlineage(self, result: dict[str, Any] | None) -> Any:
        """Reads the validated challenger; promote and reject write its new stage."""
        if result is None:
            return None
        from cmms_mlflow.integrations import lineage

        version = str(self.validation["challenger_version"])
        mv = lineage.model_version(self.tracking_uri, self.model_name, version)
        return lineage.operator_lineage(
            [mv],
            [mv] if self.writes_version else [],
            tracking_uri=self.tracking_uri,
            runId=self.validation.get("challenger_run_id"),
            modelName=self.model_name,
            modelVersion=version,
            decision=result.get("decision"),
        )

    def notify(self, context: Context, kind: str, *, version: str, reason: str) -> None:
        """Send the ``kind`` event of this step's version to the spec's channels (if any)."""
        if self.notifier is None:
            return
        from cmms_mlflow.integrations.notifiers import NOTIFICATIONS_KEY, airflow_links, airflow_run, now_iso
        from cmms_pm.notifications import model_event

        event = model_event(
            kind,
            model=self.model_name,
            version=version,
            spec=self.notifier.spec_name,
            reason=reason,
            record=self.validation,
            links={"mlflow": self.hook.model_version_url(self.model_name, version), **airflow_links(context)},
            airflow=airflow_run(context),
            occurred_at=now_iso(),
            approval=self.approval or None,
        )
        context["ti"].xcom_push(key=NOTIFICATIONS_KEY, value=self.notifier.send(event, context))


class MlflowPromoteModelOperator(MlflowDecisionOperator):
    """Make the validated version the champion (Production), archiving the one it replaces.

    A compare-and-set: if the champion is no longer the one the validation compared against,
    the promotion is refused and nothing changes.
    """

    def execute_mlflow(self, client: MlflowClient, context: Context) -> PromotionOutcome:
        from cmms_mlflow.hooks.client_context import pickle_loading_disabled
        from cmms_mlflow.registry.promotion import promote_validated
        from cmms_pm.spec import ModelSpec

        ti = context["ti"]
        spec = ModelSpec.from_dict(self.spec) if self.spec else None
        with pickle_loading_disabled():
            outcome = promote_validated(
                client,
                name=self.model_name,
                record=self.validation,
                lock_dir=self.hook.lock_dir,
                audit={
                    "promoted_at": context["dag_run"].run_after.isoformat(),
                    "promoted_by": f"airflow:{ti.dag_id}/{ti.run_id}",
                },
                key=self.event_key(context),
                airflow=self.airflow_ref(context),
                load_options=load_options(spec) if spec is not None else None,
                authority=step_authority(spec) if spec is not None else None,
            )
        self.push_model_version_link(context, self.model_name, outcome["version"])
        if outcome.get("superseded"):
            # A rerun of a run that did its work: nothing moved, nobody is told again.
            self.log.info("%s v%s: %s", self.model_name, outcome["version"], outcome["reason"])
            return outcome
        from cmms_mlflow.integrations import metrics

        metrics.decision(self.model_name, "promoted" if outcome["decision"] == "promote" else "rejected")
        champion = model_registry.get_champion(client, self.model_name)
        self.announce_champion(
            context,
            self.model_name,
            str(champion.version) if champion is not None else None,
            spec_name=None,  # the task's own outlet is its spec's champion Asset
            decision=outcome["decision"],
        )
        # A re-validation against a newer champion may have rejected it instead.
        kind = PROMOTED if outcome["decision"] == "promote" else REJECTED
        self.notify(context, kind, version=str(outcome["version"]), reason=outcome["reason"])
        return outcome


class MlflowRejectModelOperator(MlflowDecisionOperator):
    """Archive a challenger that failed validation, or that a person rejected (or left unanswered
    until the approval timed out), with the reason as a tag."""

    def execute_mlflow(self, client: MlflowClient, context: Context) -> PromotionOutcome:
        ti = context["ti"]
        version = str(self.validation["challenger_version"])
        reason = self.validation["reason"]
        if self.approval and self.approval.get("status") != "approved":
            reason = self.approval["reason"]
        changes = model_registry.reject(
            client,
            self.model_name,
            version,
            reason=reason,
            lock_dir=self.hook.lock_dir,
            actor=f"airflow:{ti.dag_id}/{ti.run_id}",
            at=context["dag_run"].run_after.isoformat(),
            key=self.event_key(context),
            airflow=self.airflow_ref(context),
        )
        self.push_model_version_link(context, self.model_name, version)
        from cmms_mlflow.integrations import metrics

        metrics.decision(self.model_name, "rejected")
        self.notify(context, REJECTED, version=version, reason=reason)
        return {**changes, "decision": "reject"}


class MlflowModelReportOperator(MlflowDecisionOperator):
    """Log a readable summary of what the run did to the registry and return it (a rerun whose
    promotion was superseded since says ``decision: superseded`` and by which version)."""

    writes_version: ClassVar[bool] = False
    #: The step whose outcome says whether this run's promotion was superseded (a rerun).
    promote_task_id: ClassVar[str] = "promote_model"

    def execute_mlflow(self, client: MlflowClient, context: Context) -> dict[str, Any]:
        from cmms_mlflow.tracking.model_evaluation import recorded_decision
        from cmms_pm.batch import split_periods
        from cmms_pm.report import format_summary

        version = str(self.validation["challenger_version"])
        # The promote step may have re-validated against a newer champion: report the final record.
        record = recorded_decision(client, self.validation["challenger_run_id"]) or self.validation
        promoted = context["ti"].xcom_pull(task_ids=self.promote_task_id)
        superseded = isinstance(promoted, dict) and bool(promoted.get("superseded"))
        mv = client.get_model_version(self.model_name, version)
        aliases = sorted(
            a for a, v in model_registry.aliases_of(client, self.model_name).items() if v == version
        )
        champion = model_registry.get_champion(client, self.model_name)
        # A person's rejection (or an approval that timed out) is why it was archived, not the policy.
        archived_because = mv.tags.get("rejection_reason") if mv.current_stage == "Archived" else None
        summary = {
            "model_name": self.model_name,
            "version": version,
            "stage": mv.current_stage,
            "aliases": aliases,
            "challenger_f1": record["challenger_metrics"]["f1"],
            "champion_f1": record["champion_metrics"]["f1"] if record["champion_metrics"] else None,
            "champion_version": record["champion_version"],
            "current_champion_version": str(champion.version) if champion is not None else None,
            "decision": "superseded"
            if superseded
            else ("promoted" if mv.current_stage == "Production" else "rejected"),
            "reason": promoted["reason"] if superseded else archived_because or record["reason"],
            "run_id": record["challenger_run_id"],
            "data_version": mv.tags.get("data_version", ""),
            "thresholds": _thresholds_line(record),
            "policy": _policy_line(record),
            "drift": (record.get("drift") or {}).get("reason", ""),
            "periods": split_periods(record.get("split")),
            "tracking_uri": redact_uri(self.hook.settings.tracking_uri),
            "mlflow_ui_url": self.hook.model_version_url(self.model_name, version),
            "airflow_ui_url": airflow_run_link(mv.tags) or "",
        }
        if superseded:
            summary["superseded_by"] = promoted["superseded_by"]
        summary["text"] = format_summary(summary)
        self.log.info("Pipeline summary\n%s", summary["text"])
        card_with_outcome(client, record["challenger_run_id"], mv, summary, self.approval)
        self.push_model_version_link(context, self.model_name, version)
        return summary


def _decision_costs(spec: ModelSpec) -> dict[str, float]:
    """The spec's costs of a missed failure and a needless inspection (the decision record's
    expected cost of challenger and champion is measured in them)."""
    from cmms_pm.thresholds import DecisionPolicy

    return DecisionPolicy.from_spec(spec.decision).costs


def step_authority(spec: ModelSpec) -> Authority:
    """The training DAG's own promotion: the version must have been approved when the spec requires it."""
    from cmms_pm.registry_plan import Authority

    return Authority.of(spec, approval_step=True)


def airflow_run_link(tags: Mapping[str, str]) -> str | None:
    """Airflow's page of the run that trained a version, built from its ``airflow.dag_id`` and
    ``airflow.run_id`` tags (validated) on this Airflow's base URL, never taken from a URL tag."""
    from cmms_mlflow.integrations.links import airflow_run_url

    return airflow_run_url(tags.get(training_run.TAG_DAG_ID), tags.get(training_run.TAG_RUN_ID))


def load_options(spec: ModelSpec) -> dict[str, Any]:
    """How validation loads the versions of ``spec``'s model (``model_loading.load_version``)."""
    return {"spec_name": spec.name, "allow_unverified": bool(spec.loading["allow_unverified_models"])}


def card_with_outcome(
    client: MlflowClient, run_id: str | None, mv: Any, summary: Mapping[str, Any], approval: Any
) -> None:
    """The card's last section: what became of the version, who decided and why (issue 19)."""
    from cmms_mlflow.tracking.card_logging import update_card

    if not run_id:
        return
    tags = dict(mv.tags)
    answer = approval if isinstance(approval, Mapping) else {}
    promoted = summary["decision"] == "promoted"
    update_card(
        client,
        run_id,
        "report",
        approval={
            "outcome": summary["decision"],
            "stage": summary["stage"],
            "decided_by": (tags.get("promoted_by") if promoted else None) or "the validation gate",
            "reason": summary["reason"],
            "approval_status": answer.get("status") or tags.get("approval_status"),
            "approved_by": answer.get("by") or tags.get("approval_by"),
            "approval_comment": answer.get("comment") or tags.get("approval_comment"),
            "at": tags.get("promoted_at") if promoted else None,
        },
    )


def _thresholds_line(record: DecisionRecord) -> str:
    """Each model's decision threshold as the gate used it: ``challenger 0.3412, champion 0.5000``."""
    challenger = (record.get("challenger_metrics") or {}).get("threshold")
    if challenger is None:
        return ""
    champion = (record.get("champion_metrics") or {}).get("threshold")
    return f"challenger {challenger:.4f}" + (f", champion {champion:.4f}" if champion is not None else "")


def _policy_line(record: DecisionRecord) -> str:
    """``metric ≥ threshold, + min improvement`` as decided, e.g. ``roc_auc ≥ 0.8000 (+0.0000)``."""
    policy = record.get("thresholds") or {}
    if "metric" not in policy:
        return ""
    return (
        f"{policy['metric']} ≥ {policy['threshold']:.4f} (+{policy['min_improvement']:.4f} over the champion)"
    )
