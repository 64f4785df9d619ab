"""Tuning on an existing distributed engine: the production stack's CeleryExecutor with two workers,
each on its own host name, the Optuna study in PostgreSQL (connection ``cmms_optuna``).

A tuned XGBoost spec (``pm_tuned``: 4 trials in 2 chains, tiny synthetic data) is triggered through
Airflow's REST API; the chains run as two mapped task instances, one on each worker, and write
their trials into one study.
"""

from __future__ import annotations

import urllib.parse
import uuid

import pytest

pytestmark = pytest.mark.slow

TUNED_DAG = "pm_tuned_training"


def _mapped(celery_stack, run_id: str, task_id: str) -> list[dict]:
    quoted = urllib.parse.quote(run_id, safe="")
    path = f"/api/v2/dags/{TUNED_DAG}/dagRuns/{quoted}/taskInstances?task_id_pattern={task_id}&limit=100"
    return [ti for ti in celery_stack.request("GET", path)[1]["task_instances"] if ti["task_id"] == task_id]


@pytest.fixture(scope="module")
def tuned_stack_run(celery_stack, mlflow_server):
    """The tuned DAG triggered through the REST API (after test_production_stack's run, by file
    order: one run at a time on two one-slot workers); (run, conf)."""
    model = "pm_tuned_xgb"  # the spec's own model (tests/deploy/conftest.py): a spec trains no other
    experiment = f"stack-{uuid.uuid4().hex[:8]}"
    conf = {"model_name": model, "experiment_name": experiment, "n_samples": 3000, "n_trials": 4}
    # A trigger outside the spec's bounds is refused before a run exists.
    for bad in ({"n_trials": 9}, {"n_trials": 0}):
        status, body = celery_stack.request(
            "POST", f"/api/v2/dags/{TUNED_DAG}/dagRuns", {"logical_date": None, "conf": {**conf, **bad}}
        )
        assert status == 400 and "n_trials" in str(body), (status, body)
    status, body = celery_stack.request(
        "POST", f"/api/v2/dags/{TUNED_DAG}/dagRuns", {"logical_date": None, "conf": conf}
    )
    assert status == 200, body
    [run] = celery_stack.wait_for_runs({body["dag_run_id"]}, 1, timeout=900, dag_id=TUNED_DAG)
    return run, conf


def test_trials_run_on_both_workers_into_one_study(
    celery_stack, tuned_stack_run, optuna_database, worker_hosts
):
    import optuna

    from cmms_pm.tuning import slot_of

    run, conf = tuned_stack_run
    states = {
        ti["task_id"]: ti["state"]
        for ti in celery_stack.task_instances(run["dag_run_id"], dag_id=TUNED_DAG).values()
    }
    assert run["state"] == "success", (states, celery_stack.home)
    assert states["reject_model"] == "success"  # the spec never promotes: no scoring run on the stack
    assert len(celery_stack.dag_runs(TUNED_DAG)) == 1  # the refused triggers made no run
    chains = _mapped(celery_stack, run["dag_run_id"], "tune")
    assert sorted(ti["map_index"] for ti in chains) == [0, 1]
    assert all(ti["state"] == "success" for ti in chains), chains
    # One chain on each worker: the task instances' host names are the workers' own.
    assert {ti["hostname"] for ti in chains} == set(worker_hosts), [ti["hostname"] for ti in chains]

    url = optuna_database.replace("postgres://", "postgresql+psycopg2://", 1)
    summaries = optuna.study.get_all_study_summaries(storage=url)
    [summary] = [s for s in summaries if s.study_name.startswith(f"{TUNED_DAG}.{run['dag_run_id']}.")]
    study = optuna.load_study(study_name=summary.study_name, storage=url)
    trials = study.get_trials(deepcopy=False)
    assert sorted(slot_of(t) for t in trials) == [0, 1, 2, 3]  # all trials, once each, in one study
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert {t.user_attrs["host"] for t in trials} == set(worker_hosts)
    by_chain = {t.user_attrs["chain"]: t.user_attrs["host"] for t in trials}
    assert by_chain == {ti["map_index"]: ti["hostname"] for ti in chains}
