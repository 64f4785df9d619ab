"""A tuned spec end to end under ``dag.test()``: create_study → tune (mapped chains) → train_model with
the best trial, registered and promoted as any model; trials as MLflow child runs; a cleared run
resumes its study without a single new trial. Real MLflow (SQLite), real Optuna journal storage.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from datasets import ai4i_like

PROJECT_DIR = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT_DIR / "tests" / "dag_fixtures"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned_name() -> str:
    return f"ai4i_tuned_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def tuned_dag(airflow_db, tuned_name):
    """ai4i_tuned's training DAG, built by the DAG factory for the spec owning this module's model
    (a spec's runs write only the model it owns)."""
    from support import training_dag_owning

    from cmms_pm.spec import load_spec

    return training_dag_owning(load_spec(FIXTURES / "models" / "ai4i_tuned.yaml"), tuned_name)


@pytest.fixture(scope="module")
def ai4i_file() -> Path:
    folder = Path(os.environ["CMMS_DATA_ROOT"]) / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    ai4i_like(4000, seed=3).to_csv(folder / "ai4i.csv", index=False)
    return folder / "ai4i.csv"


def _run(dag, day: int, **conf):
    when = datetime(2026, 6, day, 3, 0, tzinfo=UTC)
    # A fixed run_after gives a fixed run id: a second call re-creates the same run (a cleared run).
    return dag.test(logical_date=when, run_after=when, run_conf=dag.params.dump() | conf)


def _states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in dag_run.get_task_instances()}


def _study(name: str):
    from cmms_mlflow.tracking.tuning_study import load_study

    return load_study(name)[0]


@pytest.fixture(scope="module")
def tuned_run(tuned_dag, tuned_name, ai4i_file, mlflow_store):
    """One tuned run (6 trials in 2 chains), then the same run cleared and run again."""
    os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({"conn_type": "mlflow", "host": mlflow_store})
    name = tuned_name
    try:
        first = _run(tuned_dag, 1, model_name=name, experiment_name=name)
        from support import xcom_value

        plan = xcom_value(first, "create_study", key="plan")
        second = _run(tuned_dag, 1, model_name=name, experiment_name=name)  # same run id: a cleared run
        return {"name": name, "first": first, "second": second, "plan": plan,
                "plan_again": xcom_value(second, "create_study", key="plan")}  # fmt: skip
    finally:
        os.environ.pop("AIRFLOW_CONN_MLFLOW_DEFAULT", None)


def test_a_tuned_run_trains_the_best_trial_and_promotes_it(tuned_run, client):
    from cmms_pm import tuning

    first = tuned_run["first"]
    states = _states(first)
    assert str(first.state) == "success", states
    assert [states.get(("tune", i)) for i in (0, 1)] == ["success", "success"], states  # two chains
    assert states[("promote_model", -1)] == "success"
    plan = tuned_run["plan"]
    study = _study(plan["study"])
    trials = study.get_trials(deepcopy=False)
    assert sorted(tuning.slot_of(t) for t in trials) == list(range(6))  # one trial per slot
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert all(
        t.user_attrs["key"] == f"{first.run_id}/{t.user_attrs['chain']}/{tuning.slot_of(t)}" for t in trials
    )
    best = tuning.best_trial(trials)

    (version,) = client.search_model_versions(f"name = '{tuned_run['name']}'")
    assert version.current_stage == "Production" and version.run_id == plan["parent_run_id"]
    run = client.get_run(version.run_id)
    assert run.data.params["estimator"] == "xgboost"
    for name, value in best.params.items():  # the best trial's values trained the model
        assert run.data.params[name] == str(value), name
    assert run.data.params["n_estimators"] == "150"  # the spec's fixed values stay
    assert run.data.params["n_jobs"] == "2"  # the final fit's threads, not a trial's one
    # Deterministic fits: the final model scores on validation exactly what its trial did.
    assert run.data.metrics["val_pr_auc"] == pytest.approx(best.value, abs=1e-12)
    assert run.data.metrics["tuning_best_pr_auc"] == pytest.approx(best.value)
    assert run.data.params["tuning_trials"] == "6" and run.data.params["tuning_best_slot"] == str(
        tuning.slot_of(best)
    )

    # Each trial is a child run of the training run, with its parameters and validation metric.
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
    )
    assert sorted(int(c.data.tags["cmms.trial_slot"]) for c in children) == list(range(6))
    for child in children:
        trial = next(t for t in trials if tuning.slot_of(t) == int(child.data.tags["cmms.trial_slot"]))
        assert child.data.tags["optuna.trial_state"] == trial.state.name
        assert {k: child.data.params[k] for k in trial.params} == {k: str(v) for k, v in trial.params.items()}
        if trial.state.name == "COMPLETE":
            assert child.data.metrics["val_pr_auc"] == pytest.approx(trial.value)
            assert child.info.status == "FINISHED"
        assert child.data.tags["airflow.task_id"] == "tune"

    # The study's summary is logged with the model.
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "tuning")}
    expected = ("summary.json", "trials.csv", "optimization_history.png", "param_importances.png")
    assert artifacts == {f"tuning/{name}" for name in expected}
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "tuning/summary.json")).read_text())
    assert summary["best_params"] == best.params and summary["trials"] == 6
    assert set(summary["importances"]) <= set(best.params)


def test_the_model_card_shows_the_study(tuned_run, mlflow_conn, client):
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.www.model_overview import version_detail

    detail = version_detail(client, MlflowHook(), tuned_run["name"], "1")
    assert detail["tuning"]["trials"] == 6 and detail["tuning"]["metric"] == "pr_auc"
    assert detail["tuning"]["study"] == tuned_run["plan"]["study"] and detail["tuning"]["bestValue"] > 0
    assert {"tuning.optimization_history", "tuning.param_importances"} <= set(detail["plots"])
    # model_card.md itself carries the study: the card travels with the run's artifacts.
    card = detail["modelCard"]
    section = card[card.index("## Hyperparameter tuning") :].split("\n## ")[0]
    assert tuned_run["plan"]["study"] in section and "6 trials" in section
    assert f"{detail['tuning']['bestValue']:.4f}" in section


def test_a_cleared_run_resumes_its_study_with_no_new_trial_and_the_same_model(tuned_run, client):
    second = tuned_run["second"]
    assert str(second.state) == "success", _states(second)
    plan, again = tuned_run["plan"], tuned_run["plan_again"]
    assert again["study"] == plan["study"] and again["parent_run_id"] == plan["parent_run_id"]
    study = _study(plan["study"])
    assert len(study.get_trials(deepcopy=False)) == 6  # not one trial more
    children = client.search_runs(
        [plan["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{plan['parent_run_id']}'"
    )
    assert len(children) == 6
    chains = _mapped_xcoms(second, "tune")
    assert len(chains) == 2 and all(t["reused"] for chain in chains for t in chain["trials"])


def _mapped_xcoms(dag_run, task_id: str) -> list:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, key="return_value", dag_ids=dag_run.dag_id, task_ids=task_id
            )
        ).all()
        return [XComModel.deserialize_value(row) for row in sorted(rows, key=lambda r: r.map_index)]
