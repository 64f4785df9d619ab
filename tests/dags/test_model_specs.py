"""Bring your own data, end to end: foreign-schema specs (tests/dag_fixtures/models) under ``dag.test()``.

The dataset is AI4I-like (tests/datasets.py): an id column, a product-id string, a quality category,
five sensors whose names carry units in brackets, string labels with ~3 % failures. Everything
runs for real: the DAG factory's DAGs, a real MLflow SQLite store, Parquet batches, PostgreSQL.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from datasets import ai4i_like, with_label_copy

PROJECT_DIR = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT_DIR / "tests" / "dag_fixtures"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dags(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(FIXTURES))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


@pytest.fixture(scope="module")
def incoming() -> Path:
    folder = Path(os.environ["CMMS_DATA_ROOT"]) / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _conf(dag, **overrides) -> dict:
    """A complete conf (dag.test() keeps earlier calls' keys in the DAG's params otherwise)."""
    return dag.params.dump() | overrides


def _run(dag, day: int, **conf):
    when = datetime(2026, 5, day, 3, 0, tzinfo=UTC)
    return dag.test(logical_date=when, run_conf=_conf(dag, **conf))


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _xcom(dag_run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, key="return_value", dag_ids=dag_run.dag_id, task_ids=task_id
            )
        ).all()
        return XComModel.deserialize_value(rows[0]) if rows else None


def _errors(capfd) -> str:
    logged = capfd.readouterr()
    return "\n".join(line for line in (logged.out + logged.err).splitlines() if "Error" in line)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _owned(dag_id: str, name: str):
    """The fixture spec's DAG ``dag_id`` (``<spec>_training`` / ``<spec>_scoring``), built by the DAG
    factory for the spec owning model ``name`` (a spec writes only its own model; each test gets one)."""
    from support import spec_owning

    from cmms_mlflow.factory import build_scoring_dag, build_training_dag
    from cmms_pm.spec import load_spec

    spec_name, kind = dag_id.rsplit("_", 1)
    spec = spec_owning(load_spec(FIXTURES / "models" / f"{spec_name}.yaml"), name)
    return (build_training_dag if kind == "training" else build_scoring_dag)(spec)


def test_a_foreign_dataset_trains_promotes_and_scores_flagging_unseen_categories(
    dags, mlflow_conn, client, incoming, monkeypatch
):
    import pandas as pd

    name = _unique("ai4i")
    training, scoring = _owned("ai4i_training", name), _owned("ai4i_scoring", name)
    ai4i_like(10_000, seed=1).to_csv(incoming / "ai4i.csv", index=False)
    first = _run(training, 1, model_name=name, experiment_name=name)
    assert str(first.state) == "success", _states(first)

    (version,) = client.search_model_versions(f"name = '{name}'")
    assert (str(version.version), version.current_stage) == ("1", "Production")
    assert version.tags["estimator"] == "hist_gradient_boosting" and version.tags["use_case"] == "ai4i"
    assert float(version.tags["validation_f1"]) >= 0.4
    assert version.tags["drift_status"] == "none"  # no champion before this one
    run = client.get_run(version.run_id)
    assert run.data.params["estimator"] == "hist_gradient_boosting" and run.data.params["max_iter"] == "150"

    # The data contract travels with the model: columns, kinds, categories seen, label balance.
    contract = json.loads(
        Path(client.download_artifacts(version.run_id, "data_contract/contract.json")).read_text()
    )
    columns = {column["name"]: column for column in contract["columns"]}
    assert columns["Torque [Nm]"]["feature"] and columns["Torque [Nm]"]["kind"] == "numeric"
    assert set(columns["Type"]["categories"]) == {"L", "M", "H"}
    assert 0.01 < contract["positive_rate"] < 0.06
    # The signature describes what pyfunc.predict returns (0/1), and the MLmodel points at the contract.
    import mlflow.models

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_conn)
    info = mlflow.models.get_model_info(f"models:/{name}/1")
    (output,) = info.signature.outputs.to_dict()
    assert output == {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": (-1,)}}
    assert info.metadata["data_contract"].endswith("data_contract/contract.json")
    assert {i["name"] for i in info.signature.inputs.to_dict()} == {
        "Type", "Air temperature [K]", "Process temperature [K]", "Torque [Nm]", "Rotational speed [rpm]",
        "Tool wear [min]",
    }  # fmt: skip

    # Scoring checks its input against the champion's contract: unseen categories are flagged.
    fleet = ai4i_like(500, seed=2).drop(columns=["Machine failure"])
    fleet.loc[fleet.index[:20], "Type"] = "X"
    fleet.to_csv(incoming / "ai4i_fleet.csv", index=False)
    scored = scoring.test(
        logical_date=datetime(2026, 5, 1, 9, tzinfo=UTC), run_conf=_conf(scoring, model_name=name)
    )
    assert str(scored.state) == "success", _states(scored)
    (summary,) = _xcom(scored, "score_fleet")
    predictions = pd.read_parquet(summary["predictions_uri"])
    assert len(predictions) == 500 and predictions["UDI"].is_unique
    unseen = predictions["contract_issues"].str.contains("unseen_category:Type")
    assert unseen.sum() == 20 and not predictions.loc[unseen, "contract_ok"].any()
    assert set(predictions.loc[unseen, "UDI"]) == set(fleet["UDI"].iloc[:20])
    assert summary["flagged_by_reason"]["unseen_category"] == 20
    assert predictions["failure_probability"].between(0, 1).all()
    assert set(predictions["model_version"]) == {"1"}


def test_a_changed_schema_fails_validate_data_naming_the_columns_unless_accepted(
    dags, mlflow_conn, client, incoming, capfd
):
    name = _unique("ai4i_schema")
    training = _owned("ai4i_training", name)
    ai4i_like(4000, seed=3).to_csv(incoming / "ai4i_base.csv", index=False)
    base = {"model_name": name, "experiment_name": name}
    assert str(_run(training, 2, **base, data_source="incoming/ai4i_base.csv").state) == "success"

    changed = ai4i_like(4000, seed=4).assign(**{"Humidity [%]": 40.0})
    changed["Air temperature [K]"] = changed["Air temperature [K]"].astype(str) + " K"
    changed.to_csv(incoming / "ai4i_changed.csv", index=False)
    capfd.readouterr()
    refused = _run(training, 3, **base, data_source="incoming/ai4i_changed.csv")
    assert str(refused.state) == "failed"
    assert (
        _states(refused)["validate_data"] == "failed" and _states(refused)["train_model"] == "upstream_failed"
    )
    errors = _errors(capfd)
    assert "Air temperature [K]" in errors, errors[-2000:]
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]

    added = ai4i_like(4000, seed=5).assign(**{"Humidity [%]": 40.0})
    added.to_csv(incoming / "ai4i_added.csv", index=False)
    capfd.readouterr()
    refused = _run(training, 4, **base, data_source="incoming/ai4i_added.csv")
    assert _states(refused)["validate_data"] == "failed"
    assert "Humidity [%]" in _errors(capfd)
    accepted = _run(training, 5, **base, data_source="incoming/ai4i_added.csv", accept_schema_change=True)
    assert str(accepted.state) == "success", _states(accepted)
    report = _xcom(accepted, "validate_data")
    assert report["contract_check"]["added"] == ["Humidity [%]"]
    assert any("accept_schema_change" in note for note in report["notes"])


def test_drift_above_the_blocking_threshold_rejects_with_the_drift_reason(
    dags, mlflow_conn, client, incoming
):
    name = _unique("ai4i_strict")
    training = _owned("ai4i_strict_training", name)
    ai4i_like(6000, seed=6).to_csv(incoming / "ai4i_strict.csv", index=False)
    base = {"model_name": name, "experiment_name": name, "min_improvement": -1.0}
    assert str(_run(training, 6, **base, data_source="incoming/ai4i_strict.csv").state) == "success"

    drifted = ai4i_like(6000, seed=7)
    drifted["Torque [Nm]"] = drifted["Torque [Nm]"] + 3 * drifted["Torque [Nm]"].std()
    drifted.to_csv(incoming / "ai4i_drifted.csv", index=False)
    second = _run(training, 7, **base, data_source="incoming/ai4i_drifted.csv")
    assert str(second.state) == "success", _states(second)
    assert _states(second)["reject_model"] == "success" and _states(second)["promote_model"] == "skipped"
    version = client.get_model_version(name, "2")
    assert version.current_stage == "Archived"
    assert version.tags["drift_status"] == "block" and "Torque [Nm]" in version.tags["drift_features"]
    assert version.tags["decision_reason"].startswith("drift gate:")
    record = json.loads(
        Path(client.download_artifacts(version.run_id, "validation/decision.json")).read_text()
    )
    assert record["decision"] == "reject" and "Torque [Nm]" in record["reason"]
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "data_checks")}
    assert {"data_checks/drift.html", "data_checks/drift.png", "data_checks/drift.csv"} <= artifacts
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


def test_a_sql_source_trains_on_the_rows_of_the_run_interval(
    dags, mlflow_conn, client, postgres_server, monkeypatch
):
    import pandas as pd
    import sqlalchemy

    url = postgres_server.create_database(_unique("telemetry"))
    frame = ai4i_like(6000, seed=8)
    # Three days of readings; the run of 2026-05-10 03:00 covers 2026-05-09 02:00 .. 05-10 02:00.
    frame["read_at"] = pd.Timestamp("2026-05-08T02:00:00Z") + pd.to_timedelta(
        (frame.index % 3) * 24 + 1, unit="h"
    )
    engine = sqlalchemy.create_engine(url)
    frame.to_sql("ai4i_readings", engine, index=False)
    engine.dispose()
    database = url.rsplit("/", 1)[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_TELEMETRY_DB",
        json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": postgres_server.port, "login": "postgres",
             "schema": database}
        ),
    )  # fmt: skip
    name = _unique("ai4i_sql")
    training = _owned("ai4i_sql_training", name)
    run = _run(training, 10, model_name=name, experiment_name=name)
    assert str(run.state) == "success", _states(run)
    manifest = _xcom(run, "extract_data")
    in_interval = frame[
        (frame["read_at"] >= pd.Timestamp("2026-05-09T02:00:00Z"))
        & (frame["read_at"] < pd.Timestamp("2026-05-10T02:00:00Z"))
    ]
    assert manifest["rows"] == len(in_interval) == 2000
    # Features were inferred (the spec says infer: true): ids and the timestamp are not among them.
    features = {c for kind in manifest["features"].values() for c in kind}
    assert "Torque [Nm]" in features and "Type" in manifest["features"]["categorical"]
    assert not features & {"UDI", "Product ID", "read_at"}
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


def test_a_leaking_feature_fails_validate_data_by_name_and_an_accepted_one_trains_with_a_warning(
    dags, mlflow_conn, client, incoming, capfd
):
    """ai4i_leaky lists the failure-mode flags (accepted) and "Spindle state" (not) as features."""
    import numpy as np

    name = _unique("ai4i_leaky")
    training = _owned("ai4i_leaky_training", name)
    base = {"model_name": name, "experiment_name": name}
    frame = ai4i_like(6000, seed=14, failure_modes=True)
    with_label_copy(frame, "Spindle state", flip=0.04).to_csv(incoming / "leak_copy.csv", index=False)
    capfd.readouterr()
    refused = _run(training, 14, **base, data_source="incoming/leak_copy.csv")
    assert str(refused.state) == "failed"
    states = _states(refused)
    assert states["validate_data"] == "failed" and states["train_model"] == "upstream_failed", states
    # The task's error (chained from cmms_pm's LabelLeakError): non-retryable, naming the leak.
    error = next(line for line in _errors(capfd).splitlines() if "BadDataError: LabelLeakError" in line)
    assert "['Spindle state'] leak the label" in error and "near_copy: balanced accuracy 0.9" in error
    assert "train split of" in error and "leakage.accept" in error
    assert "TWF" not in error  # accepted by the spec
    assert not client.search_registered_models(f"name = '{name}'")

    honest = frame.assign(**{"Spindle state": np.where(frame.index % 3 == 0, "loaded", "idle")})
    honest.insert(honest.columns.get_loc("Machine failure") - 1, "Spindle state", honest.pop("Spindle state"))
    honest.to_csv(incoming / "leak_accepted.csv", index=False)
    accepted = _run(training, 15, **base, data_source="incoming/leak_accepted.csv")
    assert str(accepted.state) == "success", _states(accepted)
    report = _xcom(accepted, "validate_data")
    (note,) = [n for n in report["notes"] if n.startswith("leakage accepted")]
    assert "'TWF', 'HDF', 'PWF', 'OSF' (flag_set: F1 of the OR" in note
    version = client.get_model_version(name, "1")
    assert version.current_stage == "Production"  # knowingly: the flags are the label
    assert float(version.tags["validation_f1"]) > 0.8  # above the default gate: what the leak buys
    assert version.tags["leakage_columns"] == "4" and version.tags["leakage_accepted"] == "HDF,OSF,PWF,TWF"
    record = json.loads(
        Path(client.download_artifacts(version.run_id, "data_checks/leakage.json")).read_text()
    )
    assert [f["columns"] for f in record["accepted"]] == [["TWF", "HDF", "PWF", "OSF"]]
    assert record["thresholds"]["set_min_f1"] == 0.95 and record["notes"] == [note]


def _unknown_label(frame):
    return frame.assign(**{"Machine failure": frame["Machine failure"].where(frame.index % 50 != 0, "maybe")})


def _duplicate_columns(frame):
    return frame.rename(columns={"Process temperature [K]": "Air temperature [K]"})


def _int64_overflow(frame):
    wear = frame["Tool wear [min]"].astype(object).where(frame.index != 3, 2**70)
    return frame.assign(**{"Tool wear [min]": wear})


def _fractional_integer(frame):
    return frame.assign(**{"Rotational speed [rpm]": frame["Rotational speed [rpm]"] + 0.5})


BAD_INPUTS = [
    ("header-only", lambda frame: frame.head(0), "0 rows"),
    ("unknown-label", _unknown_label, "Machine failure"),
    ("duplicate-columns", _duplicate_columns, "duplicate"),
    ("int64-overflow", _int64_overflow, "int64"),
    ("fractional-integer", _fractional_integer, "fractional"),
]


@pytest.mark.parametrize(("case", "mutate", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_each_bad_input_file_fails_clearly_and_registers_nothing(
    dags, mlflow_conn, client, incoming, capfd, case, mutate, message
):
    name = _unique("ai4i_bad")
    training = _owned("ai4i_training", name)
    sentinel = "SENTINEL-VALUE-7731"
    frame = ai4i_like(1000, seed=9)
    frame["Product ID"] = frame["Product ID"].where(frame.index != 0, sentinel)
    mutate(frame).to_csv(incoming / f"bad-{case}.csv", index=False)
    capfd.readouterr()
    dag_run = _run(
        training, 12, model_name=name, experiment_name=name, data_source=f"incoming/bad-{case}.csv"
    )
    assert str(dag_run.state) == "failed"
    states = _states(dag_run)
    assert "failed" in (states["extract_data"], states["validate_data"]), states
    assert states["train_model"] == "upstream_failed", states
    errors = _errors(capfd)
    assert message in errors, errors[-2000:]
    assert sentinel not in errors  # error messages name columns and counts, never values
    assert not client.search_registered_models(f"name = '{name}'")


def test_a_source_outside_the_allowed_folders_is_refused_before_reading(
    dags, mlflow_conn, client, tmp_path, capfd
):
    name = _unique("ai4i_escape")
    training = _owned("ai4i_training", name)
    outside = tmp_path / "outside.csv"
    ai4i_like(500, seed=10).to_csv(outside, index=False)
    for source in (str(outside), "incoming/../../outside.csv"):
        capfd.readouterr()
        dag_run = _run(training, 13, model_name=name, experiment_name=name, data_source=source)
        assert _states(dag_run)["extract_data"] == "failed"
        assert "allowed" in _errors(capfd)
    assert not client.search_registered_models(f"name = '{name}'")


@pytest.mark.parametrize(
    "conf",
    [
        {"model_name": "123"},
        {"model_name": "0x1F"},
        {"model_name": "pm_model\n"},
        {"model_name": "pm_notify_rf"},  # a valid name, another spec's model
        {"data_source": "s3://bucket/ai4i.csv?endpoint_override=attacker.example:80"},
        {"data_source": "s3://bucket/ai4i.csv#frag"},
        {"data_source": "incoming/ai4i.csv\n"},
        {"estimator": "catboost"},
        {"hyperparameters": {"learning_rate": 5}},
    ],
    ids=lambda conf: repr(conf)[:40],
)
def test_invalid_parameters_are_refused_before_a_run_exists(dags, conf):
    from airflow.models.dagrun import DagRun
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.utils.session import create_session

    training = dags["ai4i_training"]
    with pytest.raises(ParamValidationError):
        _run(training, 20, **conf)
    with create_session() as session:
        runs = session.query(DagRun).filter(
            DagRun.dag_id == "ai4i_training", DagRun.logical_date == datetime(2026, 5, 20, 3, 0, tzinfo=UTC)
        )
        assert runs.count() == 0
