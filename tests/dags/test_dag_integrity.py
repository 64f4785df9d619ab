"""Every DAG file parses, cheaply, and follows the house rules (tags, retries, docs)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((PROJECT_DIR / "dags").glob("*.py"))
HEAVY_MODULES = ("mlflow", "sklearn", "pandas", "pyarrow", "matplotlib")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_DIR / "dags"))


def test_dags_folder_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) >= {
        "predictive_maintenance_training",
        "model_promotion",
        "predictive_maintenance_scoring",
    }


def test_every_dag_file_is_named_after_its_dag_or_is_the_factory(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem in (dag_id, "model_pipelines"), dag_id


def test_the_factory_builds_a_training_and_a_scoring_dag_per_spec(dagbag):
    from cmms_pm.spec import load_specs

    specs, errors = load_specs()
    assert specs and not errors
    for spec in specs:
        for dag_id in (spec.training_dag_id, spec.scoring_dag_id):
            assert Path(dagbag.dags[dag_id].fileloc).name == "model_pipelines.py"


def test_a_broken_spec_is_an_import_error_naming_it_while_the_others_load(tmp_path, monkeypatch):
    import shutil

    from airflow.dag_processing.dagbag import DagBag

    shutil.copy(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml", tmp_path)
    (tmp_path / "broken.yaml").write_text(
        "name: broken\nregistered_model: broken_rf\nsource: {kind: synthetic}\n"
        "target: {column: y, positive: 1}\nfeatures: {numeric: [x]}\nestimator: {kind: catboost}\n"
    )
    monkeypatch.setenv("CMMS_MODELS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags" / "model_pipelines.py"))
    assert {"predictive_maintenance_training", "predictive_maintenance_scoring"} <= set(bag.dags)
    assert not {"broken_training", "broken_scoring"} & set(bag.dags)
    (error,) = bag.import_errors.values()
    assert "broken.yaml: estimator.kind: 'catboost' is not one of" in error
    assert "predictive_maintenance.yaml" not in error


def test_every_dag_has_tags_docs_and_retries(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        for task in dag.tasks:
            assert task.retries >= 2 or task.task_id == "validate_data", (dag_id, task.task_id)
            assert task.execution_timeout is not None, (dag_id, task.task_id)


def test_training_dag_schedule_and_params(dagbag):
    dag = dagbag.dags["predictive_maintenance_training"]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 2 * * *", "UTC")
    params = dag.params.dump()
    assert params["model_name"] == "predictive_maintenance_rf" and params["estimator"] == "random_forest"
    assert params["experiment_name"] == "predictive_maintenance"
    assert (params["n_estimators"], params["max_depth"]) == (100, 10)
    assert params["f1_threshold"] == 0.80 and params["min_improvement"] == 0.0
    assert params["allow_promotion"] is True and params["data_source"] == "synthetic"
    assert params["accept_schema_change"] is False and params["hyperparameters"] == {}
    assert dag.get_task("promote_model").pool == "mlflow_promotion_predictive_maintenance"
    for name, param in dag.params.items():
        assert param.schema.get("title") and param.schema.get("section"), name
        assert param.description, name


def test_training_dag_task_order(dagbag):
    dag = dagbag.dags["predictive_maintenance_training"]
    chain = [
        "extract_data",
        "validate_data",
        "train_model",
        "register_model",
        "stage_model",
        "validate_model",
        "decide",
    ]
    for upstream, downstream in itertools.pairwise(chain):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert dag.get_task("decide").downstream_task_ids == {
        "promote_model",
        "approve_promotion",
        "reject_model",
    }
    # Human approval, when a run needs it, sits between the decision and the registry change.
    assert dag.get_task("approve_promotion").downstream_task_ids == {"promote_model", "reject_model"}
    assert dag.get_task("report").upstream_task_ids >= {"promote_model", "reject_model"}


def test_promotions_emit_the_champion_asset_that_schedules_scoring(dagbag):
    from cmms_mlflow.integrations.assets import CHAMPION_ALIAS, champion_asset

    asset = champion_asset("predictive_maintenance")
    emitters = {
        (dag_id, task.task_id, outlet.name)
        for dag_id, dag in dagbag.dags.items()
        for task in dag.tasks
        for outlet in task.outlets
    }
    assert emitters == {
        ("predictive_maintenance_training", "promote_model", asset.name),
        ("model_promotion", "change_stage", CHAMPION_ALIAS.name),
    }
    scoring = dagbag.dags["predictive_maintenance_scoring"]
    assert type(scoring.timetable).__name__ == "AssetTriggeredTimetable"
    assert [a.name for a in scoring.timetable.asset_condition.objects] == [asset.name]


def test_model_promotion_is_manual_with_a_validated_form(dagbag):
    dag = dagbag.dags["model_promotion"]
    assert type(dag.timetable).__name__ == "NullTimetable"
    params = dag.params
    assert params["version"] == "previous" and params["stage"] == "Production"
    assert params.get_param("stage").schema["enum"] == ["Production", "Staging", "Archived"]
    assert (
        params.get_param("model_name").schema["pattern"]
        == dagbag.dags["predictive_maintenance_training"].params.get_param("model_name").schema["pattern"]
    )
    assert dag.get_task("change_stage").upstream_task_ids == {"resolve_version"}
    assert dag.get_task("change_stage").pool == "mlflow_promotion"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_nothing_heavy_at_parse_time(dag_file):
    """Parse cost is dominated by imports; the timed budget is checked by bench/parse_cost.py."""
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(dag_file)], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert loaded == "", f"{dag_file.name} imports {loaded} at parse time"
