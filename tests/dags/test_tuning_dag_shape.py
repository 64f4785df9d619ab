"""The shape of a tuned training DAG, and that a spec without ``tuning`` keeps today's shape."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
UNTUNED_TASKS = {
    "extract_data", "validate_data", "train_model", "register_model", "stage_model", "validate_model",
    "decide", "approve_promotion", "promote_model", "reject_model", "report",
    "retention",  # the teardown every training DAG ends with (the spec's retention section)
}  # fmt: skip


@pytest.fixture(scope="module")
def tuned_spec():
    from cmms_pm.spec import load_spec

    return load_spec(PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "ai4i_tuned.yaml")


def test_without_a_tuning_section_the_training_dag_is_unchanged(shipped_spec, tuned_spec):
    from cmms_mlflow.factory import build_training_dag
    from cmms_pm.spec import build_spec

    dag = build_training_dag(shipped_spec)
    assert {task.task_id for task in dag.tasks} == UNTUNED_TASKS
    assert dag.get_task("train_model").upstream_task_ids == {"extract_data", "validate_data"}
    assert dag.get_task("train_model").tuning is None
    raw = copy.deepcopy(dict(tuned_spec.raw))
    del raw["tuning"]
    untuned = build_training_dag(build_spec(raw))
    assert {task.task_id for task in untuned.tasks} == UNTUNED_TASKS and "n_trials" not in untuned.params


def test_a_tuned_spec_runs_create_study_then_mapped_trials_before_train_model(tuned_spec):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from cmms_mlflow.factory import build_training_dag

    dag = build_training_dag(tuned_spec)
    assert {task.task_id for task in dag.tasks} == UNTUNED_TASKS | {"create_study", "tune"}
    assert dag.get_task("create_study").upstream_task_ids == {"extract_data", "validate_data"}
    tune = dag.get_task("tune")
    assert isinstance(tune, MappedOperator) and "create_study" in tune.upstream_task_ids
    assert {"tune", "create_study"} <= dag.get_task("train_model").upstream_task_ids
    assert "**Tuning**" in dag.doc_md and "cmms_optuna" in dag.doc_md


@pytest.mark.parametrize("conf", [{"n_trials": 0}, {"n_trials": 13}, {"estimator": "lightgbm"}])
def test_a_trigger_outside_the_specs_bounds_is_refused_before_a_run_exists(tuned_spec, conf):
    """What Airflow's trigger (UI form, REST API: 400) checks before it creates a run."""
    from airflow.sdk.exceptions import ParamValidationError

    from cmms_mlflow.factory import build_training_dag

    params = build_training_dag(tuned_spec).params
    params.validate()  # the defaults are valid
    with pytest.raises(ParamValidationError, match=next(iter(conf))):
        params.update(conf)
        params.validate()
