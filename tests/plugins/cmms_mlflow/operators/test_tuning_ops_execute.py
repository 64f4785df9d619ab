"""``execute(context)`` of plugins/cmms_mlflow/operators/tuning_ops.py's operators on a real MLflow and
an Optuna journal file: the study and its training run, then one chain of trials as child runs."""

from __future__ import annotations

from operator_context import operator_runner

from cmms_mlflow.operators.tuning_ops import PLAN_KEY, MlflowCreateStudyOperator, MlflowTuneTrialsOperator
from cmms_pm.spec import ModelSpec

#: A small booster (trials force one thread each through ``n_jobs``, which only the boosters take).
ESTIMATOR = {"kind": "xgboost", "params": {"n_estimators": 20, "early_stopping_rounds": 5}}
TUNING = {
    "n_trials": 2, "max_trials": 4, "trials_per_task": 2, "startup_trials": 1, "metric": "pr_auc", "seed": 3,
    "space": {"max_depth": {"low": 2, "high": 4}},
}  # fmt: skip


def test_a_study_is_planned_in_chains_and_a_chain_logs_its_trials_under_the_training_run(
    pipeline, mlflow_conn, tmp_path, monkeypatch, client
):
    monkeypatch.setenv("CMMS_OPTUNA_HOME", str(tmp_path / "optuna"))
    monkeypatch.setenv("CMMS_OPTUNA_STORAGE", "journal")
    spec = ModelSpec.from_dict({**pipeline.spec.to_dict(), "estimator": ESTIMATOR, "tuning": TUNING})
    manifest, checks = pipeline.results["extract_data"], pipeline.results["validate_data"]
    run = operator_runner(spec, pipeline.model_name, tmp_path / "tuning", monkeypatch)  # the spec's params

    create = MlflowCreateStudyOperator(
        task_id="create_study", spec=spec.to_dict(), dataset=manifest, checks=checks
    )
    chains = run(create)
    assert chains == [{"chain": 0, "slots": [0, 1]}]
    plan = run.ti.pushed[PLAN_KEY]  # for the mapped tune tasks, beside the chains
    assert run(create) == chains and run.ti.pushed[PLAN_KEY]["study"] == plan["study"]  # a retry finds it
    assert plan["estimator"] == "xgboost" and plan["n_trials"] == 2
    assert (tmp_path / "optuna").is_dir()
    parent = client.get_run(plan["parent_run_id"])
    assert parent.data.tags["model_spec"] == spec.name

    tune = MlflowTuneTrialsOperator(
        task_id="tune", spec=spec.to_dict(), plan=plan, chain=chains[0], dataset=manifest
    )
    result = run(tune)
    assert result["chain"] == 0 and [t["slot"] for t in result["trials"]] == [0, 1]
    assert all(t["state"] == "COMPLETE" and 0 < t["value"] <= 1 for t in result["trials"])
    assert all(2 <= t["params"]["max_depth"] <= 4 for t in result["trials"])
    children = client.search_runs(
        [plan["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{plan['parent_run_id']}'"
    )
    assert len(children) == 2
    # A retry of the chain reuses its finished trials: no new child run.
    assert all(t["reused"] for t in run(tune)["trials"])
