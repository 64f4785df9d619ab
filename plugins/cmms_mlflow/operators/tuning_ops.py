"""Operators of a tuned training DAG: ``create_study``, then ``tune`` mapped over chains of trials.

``create_study`` makes the Optuna study (shared storage) and the training run that parents every
trial, pushes the plan and returns the chains; ``tune`` (``.expand`` over the chains) runs one chain
of trials per task instance, so that chains spread over the executor's workers; ``train_model`` trains
the best trial's values into that training run (``MlflowTrainModelOperator`` with ``tuning=``).
The search is ``cmms_pm.tuning``; storage, trial runs and the summary are
``cmms_mlflow.tracking.tuning_study``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cmms_mlflow.operators.base import MlflowBaseOperator, SpecOperatorMixin
from cmms_mlflow.tracking import training_run

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from cmms_mlflow.records import DataReport
    from cmms_pm.batch import Manifest

#: XCom key of create_study's plan (study, storage, training run); its return value is the list
#: of chains ``tune`` expands over (Airflow maps over return values only).
PLAN_KEY = "plan"


class MlflowCreateStudyOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Create (or find again) the run's Optuna study and its training run; plan the chains.

    :param dataset: the batch manifest (its digest is part of the study's key).
    :param checks: validate_data's report (tags of the training run, as train_model writes them).
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "dataset", "checks")
    # What the upstream tasks returned, as ``execute`` sees them (XComArgs when the DAG is parsed).
    dataset: Manifest
    checks: DataReport | None

    def __init__(self, *, spec: Mapping[str, Any], dataset: Any, checks: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.dataset = dataset
        self.checks = checks

    def execute_mlflow(self, client: MlflowClient, context: Context) -> list[dict[str, Any]]:
        from cmms_mlflow.operators.training_ops import training_tags
        from cmms_mlflow.tracking import tuning_study

        spec = self.model_spec
        config = self.run_config(context)
        experiment_id = self.hook.get_or_create_experiment(client, config.experiment)
        airflow_tags = training_run.airflow_tags(context)
        ti = context["ti"]
        plan, chains = tuning_study.create_study(
            client,
            spec=spec,
            config=config,
            manifest=self.dataset,
            experiment_id=experiment_id,
            tags=training_tags(spec, config.estimator, self.dataset, self.checks, airflow_tags),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            run_name=f"train_model-{self.dataset['training_date']}",
        )
        self.log.info(
            "Study %s (%s): %d trials in %d chains, training run %s",
            plan["study"], plan["storage"], plan["n_trials"], len(chains), plan["parent_run_id"],
        )  # fmt: skip
        ti.xcom_push(key=PLAN_KEY, value=plan)
        return chains


class MlflowTuneTrialsOperator(SpecOperatorMixin, MlflowBaseOperator):
    """Run one chain of the study's trials (mapped: one task instance per chain).

    :param plan: ``create_study``'s plan (its ``plan`` XCom).
    :param chain: ``{"chain": index, "slots": [...]}``, one item of the list create_study returned.
    :param dataset: the batch manifest (train and validation splits).
    """

    template_fields: Sequence[str] = (*MlflowBaseOperator.template_fields, "plan", "chain", "dataset")
    ui_color = "#f3e5c0"
    dataset: Manifest  # extract_data's result (an XComArg when the DAG is parsed)

    def __init__(
        self, *, spec: Mapping[str, Any], plan: Any, chain: Any, dataset: Any, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.plan = plan
        self.chain = chain
        self.dataset = dataset

    def execute_mlflow(self, client: MlflowClient, context: Context) -> dict[str, Any]:
        from cmms_mlflow.exceptions import bad_data_fails_the_task
        from cmms_mlflow.tracking import tuning_study
        from cmms_pm import tuning as search
        from cmms_pm.batch import manifest_features
        from cmms_pm.data import read_split

        spec = self.model_spec
        config = self.run_config(context)
        manifest = self.dataset
        with bad_data_fails_the_task():
            train, validation = (manifest["splits"][name] for name in ("train", "validation"))
            prepared = search.prepare(
                read_split(train["uri"], sha256=train["sha256"]),
                read_split(validation["uri"], sha256=validation["sha256"]),
                features=manifest_features(spec, manifest),
                target=spec.target,
                kind=self.plan["estimator"],
                hyperparameters=config.hyperparameters,
            )
        airflow_tags = training_run.airflow_tags(context)
        map_index = getattr(context["ti"], "map_index", -1)
        result = tuning_study.run_chain(
            client,
            spec=spec,
            plan=self.plan,
            chain=self.chain,
            prepared=prepared,
            hyperparameters=config.hyperparameters,
            airflow_tags={**airflow_tags, "airflow.map_index": str(map_index)},
            map_index=map_index,
        )
        done = [t for t in result["trials"] if t["state"] == "COMPLETE"]
        self.log.info(
            "Chain %d on %s: %d trials, %d complete, best %s",
            result["chain"], result["host"], len(result["trials"]), len(done),
            max((t["value"] for t in done), default=None),
        )  # fmt: skip
        return result
