"""End to end: the training DAG under ``dag.test()`` against a real MLflow SQLite store.

Run 1 (no champion) is promoted; run 2 (a one-stump forest) is rejected and leaves the
champion alone; run 3 (a stronger model) replaces the champion, which is archived. After every
run the registry's stages and aliases agree.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import xcom_value

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAG_ID = "predictive_maintenance_training"

pytestmark = pytest.mark.slow


@pytest.fixture
def dag(airflow_db, shipped_spec, model_name):
    """The shipped spec's training DAG, its spec owning this test's model (a spec's runs write only
    the model it owns; each test gets a model no other test touches)."""
    from support import training_dag_owning

    return training_dag_owning(shipped_spec, model_name)


def _conf(**overrides) -> dict:
    """A complete run conf: every parameter's default, then ``overrides``.

    dag.test() runs tasks in this process on one DAG object, and a conf key given to one call
    stays in the DAG's params for the next call (seen with data_source); so always pass all keys.
    """
    from cmms_pm.params import training_params
    from cmms_pm.spec import load_spec

    spec = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
    return {name: param["default"] for name, param in training_params(spec).items()} | overrides


def _run(dag, day: int | None, **conf):
    """Run the DAG for March ``day`` 2026, or with no logical date (as a REST trigger may)."""
    logical_date = None if day is None else datetime(2026, 3, day, 3, 0, tzinfo=UTC)
    return dag.test(logical_date=logical_date, run_conf=_conf(**conf))


def _report(dag_run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, key="return_value", dag_ids=DAG_ID, task_ids="report")
        ).all()
        value = XComModel.deserialize_value(rows[0])
    return json.loads(value) if isinstance(value, str) else value


def _task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _registry(client, name):
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    return versions, aliases


def _assert_stages_and_aliases_agree(client, name):
    versions, aliases = _registry(client, name)
    production = [v for v, mv in versions.items() if mv.current_stage == "Production"]
    assert len(production) == 1, versions
    assert aliases["champion"] == production[0]
    staging = [v for v, mv in versions.items() if mv.current_stage == "Staging"]
    assert aliases.get("challenger") in (staging[0] if staging else None,)


def test_nightly_runs_promote_reject_and_replace(dag, mlflow_conn, client, model_name, monkeypatch):
    base = {"model_name": model_name, "experiment_name": f"e2e-{model_name}", "n_samples": 4000}

    first = _run(dag, 1, **base)
    assert str(first.state) == "success", _task_states(first)
    versions, aliases = _registry(client, model_name)
    assert {v: mv.current_stage for v, mv in versions.items()} == {"1": "Production"}
    assert aliases == {"champion": "1"}
    v1 = versions["1"]
    assert v1.tags["validation_status"] == "passed" and v1.tags["champion_version"] == ""
    assert float(v1.tags["validation_f1"]) >= 0.80
    assert v1.tags["data_version"] == "2026-02-28T02:00:00+00:00/2026-03-01T02:00:00+00:00"
    assert v1.tags["training_date"] == "2026-03-01" and v1.description
    report = _report(first)
    assert report["decision"] == "promoted" and report["version"] == "1" and "champion" in report["aliases"]
    assert model_name in report["text"]
    _assert_stages_and_aliases_agree(client, model_name)

    # The MLflow run carries params, metrics, artifacts, dataset and Airflow lineage.
    run = client.get_run(v1.run_id)
    assert run.data.params["n_estimators"] == "100" and run.data.params["max_depth"] == "10"
    assert {"val_accuracy", "val_precision", "val_recall", "val_f1", "val_roc_auc", "val_pr_auc"} <= set(
        run.data.metrics
    )
    for key in (
        "model_type",
        "use_case",
        "data_version",
        "training_date",
        "airflow.dag_id",
        "airflow.run_id",
        "airflow.task_id",
        "airflow.try_number",
        "airflow.run_url",
    ):
        assert run.data.tags.get(key), key
    assert run.data.tags["airflow.run_id"] == first.run_id
    assert run.data.tags["airflow.run_type"] == "manual"
    artifacts = {a.path for a in client.list_artifacts(v1.run_id, "evaluation")}
    assert artifacts >= {
        f"evaluation/{n}"
        for n in (
            "feature_importances.csv",
            "feature_importances.png",
            "confusion_matrix.png",
            "roc_curve.png",
            "pr_curve.png",
        )
    }
    record = json.loads(Path(client.download_artifacts(v1.run_id, "validation/decision.json")).read_text())
    assert record["decision"] == "promote" and record["champion_version"] is None
    assert record["challenger_uri"] == f"models:/{model_name}/{v1.version}"
    assert record["thresholds"]["metric"] == "f1" and record["drift"]["status"] == "none"
    assert len(run.inputs.dataset_inputs) == 1
    assert "data_contract/contract.json" in {
        a.path for a in client.list_artifacts(v1.run_id, "data_contract")
    }

    second = _run(dag, 2, **base, n_estimators=1, max_depth=1)
    assert str(second.state) == "success", _task_states(second)
    assert _task_states(second)["promote_model"] == "skipped"
    versions, aliases = _registry(client, model_name)
    assert versions["2"].current_stage == "Archived" and versions["1"].current_stage == "Production"
    assert versions["2"].tags["validation_status"] == "rejected"
    assert versions["2"].tags["rejection_reason"]
    assert aliases == {"champion": "1"}
    assert _report(second)["decision"] == "rejected"
    _assert_stages_and_aliases_agree(client, model_name)

    third = _run(dag, 3, **{**base, "n_samples": 20000, "n_estimators": 150, "max_depth": 14})
    assert str(third.state) == "success", _task_states(third)
    versions, aliases = _registry(client, model_name)
    assert {v: mv.current_stage for v, mv in versions.items()} == {
        "1": "Archived",
        "2": "Archived",
        "3": "Production",
    }
    assert aliases == {"champion": "3", "previous_champion": "1"}
    assert versions["3"].tags["champion_version"] == "1"
    assert versions["3"].tags["replaced_version"] == "1"
    # Runs 2 and 3 were checked against the champion's contract: same generator, no drift gate.
    assert versions["3"].tags["data_checked_against"] == "1"
    assert versions["3"].tags["drift_status"] == "ok"
    assert float(versions["3"].tags["validation_f1"]) >= float(versions["3"].tags["champion_f1"])
    _assert_stages_and_aliases_agree(client, model_name)

    # Loading through the registry: the Production stage and the champion alias are one model.
    import mlflow.pyfunc

    from cmms_pm.data import generate_telemetry
    from cmms_pm.schema import FEATURES

    sample = generate_telemetry(50, seed=7)[FEATURES]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_conn)
    by_stage = mlflow.pyfunc.load_model(f"models:/{model_name}/Production")
    by_alias = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    assert by_stage.metadata.run_id == by_alias.metadata.run_id == versions["3"].run_id
    assert list(by_stage.predict(sample)) == list(by_alias.predict(sample))


@pytest.mark.parametrize(
    ("case", "mutate", "message"),
    [
        (
            "nan",
            lambda df: df.assign(vibration_mm_s=df["vibration_mm_s"].where(df.index % 7 != 0)),
            "vibration_mm_s",
        ),
        ("one-class", lambda df: df.assign(failure_within_7d=0), "failure"),
        ("wrong-columns", lambda df: df.drop(columns=["temperature_c"]), "temperature_c"),
    ],
)
def test_bad_data_file_fails_at_validation_and_registers_nothing(
    dag, mlflow_conn, client, model_name, tmp_path, capfd, case, mutate, message
):
    import os

    from cmms_pm.data import generate_telemetry

    # Files are read from allowed folders only: the data root's incoming/ is one.
    path = Path(os.environ["CMMS_DATA_ROOT"]) / "incoming" / f"telemetry-{case}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    mutate(generate_telemetry(1000, seed=11)).to_csv(path, index=False)
    # The NaN case also runs with no logical date: extraction must cope without a data interval.
    day = {"nan": None, "one-class": 11, "wrong-columns": 12}[case]
    dag_run = _run(dag, day, model_name=model_name, data_source=str(path))
    states = _task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["train_model"] == "upstream_failed", states
    if case == "wrong-columns":
        assert "failed" in (states["extract_data"], states["validate_data"]), states
    else:
        assert (states["extract_data"], states["validate_data"]) == ("success", "failed"), states
    assert not client.search_registered_models(f"name = '{model_name}'")
    # The task's error names what was wrong.
    logged = capfd.readouterr()
    errors = [line for line in (logged.out + logged.err).splitlines() if "BadDataError" in line]
    assert errors and message in errors[-1], errors[-3:]


def test_invalid_parameters_are_rejected_before_a_run_exists(dag):
    from airflow.sdk.exceptions import ParamValidationError

    for conf in (
        {"n_estimators": 0},
        {"f1_threshold": 1.5},
        {"data_source": "telemetry.xlsx"},
        {"model_name": "bad name!"},
        {"model_name": "123"},
        {"allow_promotion": "maybe"},
    ):
        with pytest.raises(ParamValidationError):
            _run(dag, 20, **conf)
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = (
            session.query(DagRun)
            .filter(DagRun.dag_id == DAG_ID, DagRun.logical_date == datetime(2026, 3, 20, 3, 0, tzinfo=UTC))
            .all()
        )
    assert runs == []


def _snapshot(client, name: str, experiment_name: str) -> dict:
    """Everything a rerun could change: versions, stages, tags, aliases, runs and their status."""
    versions = {
        str(v.version): (v.current_stage, dict(v.tags), v.description, v.run_id)
        for v in client.search_model_versions(f"name = '{name}'")
    }
    experiment = client.get_experiment_by_name(experiment_name)
    runs = {
        r.info.run_id: (r.info.status, dict(r.data.tags))
        for r in client.search_runs([experiment.experiment_id])
    }
    aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    return {"versions": versions, "aliases": aliases, "runs": runs}


def test_clearing_a_finished_run_and_running_it_again_leaves_the_registry_unchanged(
    dag, mlflow_conn, client, model_name
):
    from cmms_mlflow.registry import history

    # Every run that trains promotes (F1 out of the decision): later runs replace the champion.
    conf = _conf(
        model_name=model_name, experiment_name=f"rerun-{model_name}", n_samples=3000,
        f1_threshold=0.0, min_improvement=-1.0,
    )  # fmt: skip
    when = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    first = dag.test(logical_date=when, run_after=when, run_conf=conf)
    assert str(first.state) == "success", _task_states(first)
    before = _snapshot(client, model_name, conf["experiment_name"])
    assert before["aliases"] == {"champion": "1"}

    # Same logical date and run_after: the same run_id, every task executed again.
    again = dag.test(logical_date=when, run_after=when, run_conf=conf)
    assert again.run_id == first.run_id and str(again.state) == "success", _task_states(again)
    assert _snapshot(client, model_name, conf["experiment_name"]) == before

    # The next day's run replaces that champion; then the first run is cleared and run again (a
    # backfill rerun): its promotion was done and has been superseded. It ends green, says so, and
    # changes nothing (it used to fail: "champion changed since validation: expected None, found '2'").
    later = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    assert str(dag.test(logical_date=later, run_after=later, run_conf=conf).state) == "success"
    replaced = _snapshot(client, model_name, conf["experiment_name"])
    assert replaced["aliases"] == {"champion": "2", "previous_champion": "1"}
    events = history.read(client, model_name, limit=100)

    rerun = dag.test(logical_date=when, run_after=when, run_conf=conf)
    assert rerun.run_id == first.run_id and str(rerun.state) == "success", _task_states(rerun)
    assert _task_states(rerun)["promote_model"] == "success"
    assert _snapshot(client, model_name, conf["experiment_name"]) == replaced
    assert history.read(client, model_name, limit=100) == events
    promoted = xcom_value(rerun, "promote_model")
    assert (promoted["superseded"], promoted["superseded_by"], promoted["version"]) == (True, "2", "1")
    assert promoted["reason"].startswith("already promoted by this step") and "by v2" in promoted["reason"]
    report = _report(rerun)
    assert (report["decision"], report["superseded_by"], report["stage"]) == ("superseded", "2", "Archived")
    assert "superseded since by v2" in report["text"]


def test_a_backfill_on_older_data_does_not_replace_a_newer_champion(dag, mlflow_conn, client, model_name):
    # min_improvement -0.5 takes F1 out of the decision: only the data-freshness rule is tested.
    base = {
        "model_name": model_name,
        "experiment_name": f"backfill-{model_name}",
        "n_samples": 3000,
        "min_improvement": -0.5,
    }
    assert str(_run(dag, 20, **base).state) == "success"
    older = _run(dag, 10, **base)
    assert str(older.state) == "success", _task_states(older)
    versions, aliases = _registry(client, model_name)
    assert aliases["champion"] == "1" and versions["2"].current_stage == "Archived"
    assert "before the champion's 2026-03-20T02:00:00+00:00" in versions["2"].tags["decision_reason"]
    assert "promote_older_data=true" in _report(older)["reason"]

    allowed = _run(dag, 11, **base, promote_older_data=True)
    assert str(allowed.state) == "success", _task_states(allowed)
    versions, aliases = _registry(client, model_name)
    assert aliases == {"champion": "3", "previous_champion": "1"}
    assert "allowed by promote_older_data=true" in versions["3"].tags["decision_reason"]
    _assert_stages_and_aliases_agree(client, model_name)
