"""The training pipeline's operators, one ``execute(context)`` at a time, against the session's real
MLflow SQLite store: seconds instead of a ``dag.test()``.

The context is a small stand-in for Airflow's (task instance, DAG run, params, outlet events): the
operators read only those keys. MLflow, the data and the models are real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import ai4i_like
from operator_context import operator_runner, train_and_stage, write_incoming
from support import spec_owning

from cmms_mlflow.exceptions import BadDataError
from cmms_mlflow.operators import (
    ExtractBatchOperator,
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowTrainModelOperator,
    MlflowTransitionModelOperator,
    MlflowValidateDataOperator,
    MlflowValidateModelOperator,
)
from cmms_mlflow.registry import model_registry
from cmms_pm.spec import load_spec

FIXTURES = Path(__file__).resolve().parents[3] / "dag_fixtures" / "models"


@pytest.fixture
def spec(model_name):
    """The ai4i spec, owning this test's model (a spec writes only its own model)."""
    return spec_owning(load_spec(FIXTURES / "ai4i.yaml"), model_name)


@pytest.fixture
def run(spec, model_name, tmp_path, monkeypatch):
    """``run(operator, day=1, **params) -> result``: execute one operator for a DAG run of ``day``."""
    return operator_runner(spec, model_name, tmp_path, monkeypatch)


def test_the_operators_take_a_foreign_batch_from_file_to_champion(
    run, spec, mlflow_conn, client, model_name, tmp_path
):
    source = write_incoming(tmp_path, ai4i_like(3000, seed=31))
    manifest, checks, version = train_and_stage(run, spec, model_name, 1, source)
    assert manifest["rows"] == 3000 and manifest["features"]["categorical"] == ["Type"]
    assert not {"UDI", "Product ID"} & set(manifest["columns"])  # the spec's drop list
    assert checks["drift_status"] == "none" and checks["champion_version"] is None

    definition = spec.to_dict()
    record = run(
        MlflowValidateModelOperator(
            task_id="validate_model", spec=definition, model_name=model_name, version=version,
            holdout_uri=manifest["splits"]["holdout"]["uri"],
            holdout_sha256=manifest["splits"]["holdout"]["sha256"], checks=checks,
        )
    )  # fmt: skip
    assert record["decision"] == "promote" and record["thresholds"]["metric"] == "f1"
    assert record["holdout_sha256"] == manifest["splits"]["holdout"]["sha256"]
    outcome = run(
        MlflowPromoteModelOperator(
            task_id="promote_model", model_name=model_name, validation=record, spec=definition
        )
    )
    assert outcome["decision"] == "promote"
    assert model_registry.aliases_of(client, model_name) == {"champion": version}
    tags = client.get_model_version(model_name, version).tags
    assert tags["model_spec"] == "ai4i" and tags["estimator"] == "hist_gradient_boosting"


def test_validate_data_compares_the_next_batch_with_the_champions_contract(
    run, spec, mlflow_conn, client, model_name, tmp_path
):
    source = write_incoming(tmp_path, ai4i_like(3000, seed=32))
    manifest, checks, version = train_and_stage(run, spec, model_name, 1, source)
    model_registry.promote(
        client, model_name, version, expected_champion=None, lock_dir=tmp_path / "locks", audit={}
    )

    definition = spec.to_dict()
    retyped = ai4i_like(3000, seed=33)
    retyped["Tool wear [min]"] = retyped["Tool wear [min]"].astype(float) + 0.25
    next_source = write_incoming(tmp_path, retyped.assign(**{"Humidity [%]": 41.0}), "next.csv")
    manifest = run(ExtractBatchOperator(task_id="extract_data", spec=definition), 2, data_source=next_source)
    with pytest.raises(BadDataError, match="fractional"):  # the spec's own checks come first
        run(MlflowValidateDataOperator(task_id="validate_data", spec=definition, manifest=manifest), 2)

    added = write_incoming(tmp_path, ai4i_like(3000, seed=34).assign(**{"Humidity [%]": 41.0}), "added.csv")
    manifest = run(ExtractBatchOperator(task_id="extract_data", spec=definition), 3, data_source=added)
    with pytest.raises(BadDataError, match=r"schema changed since champion v1.*Humidity \[%\]"):
        run(MlflowValidateDataOperator(task_id="validate_data", spec=definition, manifest=manifest), 3)
    report = run(
        MlflowValidateDataOperator(task_id="validate_data", spec=definition, manifest=manifest),
        3,
        accept_schema_change=True,
    )
    assert report["champion_version"] == "1" and report["contract_check"]["added"] == ["Humidity [%]"]
    assert report["drift_status"] == "ok", report["drift_reason"]
    json.dumps(report)  # travels through XCom


def test_extract_refuses_sources_outside_the_allowed_folders_before_reading(run, spec, tmp_path):
    outside = tmp_path / "outside.csv"
    ai4i_like(300, seed=35).to_csv(outside, index=False)
    for source in (str(outside), "incoming/../../outside.csv", "/etc/passwd.csv"):
        with pytest.raises(BadDataError, match="SourceNotAllowedError"):
            run(ExtractBatchOperator(task_id="extract_data", spec=spec.to_dict()), data_source=source)


def test_a_task_given_another_specs_model_fails_without_retry_and_writes_nothing(
    run, spec, mlflow_conn, client, model_name, tmp_path
):
    """The second line of defence behind the trigger form: a conf naming another spec's model (a run
    created before the rule, a hand-made DAG) reaches no registry write."""
    from airflow.sdk.exceptions import AirflowFailException

    from cmms_mlflow.exceptions import ModelOwnershipError
    from cmms_mlflow.operators import (
        MlflowModelReportOperator,
        MlflowRejectModelOperator,
        MlflowValidateModelOperator,
    )

    victim = f"{model_name}_victim"  # owned by another spec (or by none: the same refusal)
    definition = spec.to_dict()
    source = write_incoming(tmp_path, ai4i_like(400, seed=36))
    with pytest.raises(BadDataError, match=f"model_name: '{victim}' is not spec 'ai4i'"):
        run(
            ExtractBatchOperator(task_id="extract_data", spec=definition),
            data_source=source,
            model_name=victim,
        )
    assert not any((tmp_path / "data").glob("ai4i_training/*")), "no batch was written"

    trained = {"run_id": "0" * 32, "model_uri": "models:/m-0", "metrics": {}}
    record = {"challenger_version": "1", "champion_version": None, "decision": "promote", "reason": "r"}
    mine = {"model_name": victim, "spec": definition}
    for operator in (
        MlflowRegisterModelOperator(task_id="register_model", training=trained, **mine),
        MlflowTransitionModelOperator(task_id="stage_model", version="1", stage="Staging", **mine),
        MlflowPromoteModelOperator(task_id="promote_model", validation=record, **mine),
        MlflowRejectModelOperator(task_id="reject_model", validation=record, **mine),
        MlflowValidateModelOperator(
            task_id="validate_model", version="1", holdout_uri=str(tmp_path / "holdout.parquet"), **mine
        ),
        MlflowModelReportOperator(task_id="report", validation=record, **mine),
    ):
        with pytest.raises(
            ModelOwnershipError, match=f"'{victim}' is not spec 'ai4i'.s registered model"
        ) as caught:
            run(operator)
        assert isinstance(caught.value, AirflowFailException), operator.task_id  # no retry
    assert client.search_registered_models(f"name = '{victim}'") == []


def test_inferred_features_leave_leaks_out_and_the_run_records_them(
    run, spec, mlflow_conn, client, model_name, tmp_path
):
    """A spec with ``features: {infer: true}`` on AI4I as is: the failure-mode flags and a label
    copy are never features; validate_data notes them, the run tags and logs them."""
    from datasets import with_label_copy

    from cmms_pm.spec import ModelSpec

    raw = {k: v for k, v in spec.to_dict().items() if k != "features"}
    definition = ModelSpec.from_dict({**raw, "features": {"infer": True}}).to_dict()
    frame = with_label_copy(ai4i_like(4000, seed=36, failure_modes=True), "Status", flip=0.02)
    source = write_incoming(tmp_path, frame, "as_is.csv")
    manifest = run(ExtractBatchOperator(task_id="extract_data", spec=definition), data_source=source)
    assert set(manifest["leakage_excluded"]) == {"Status", "TWF", "HDF", "PWF", "OSF"}
    assert not set(manifest["leakage_excluded"]) & {c for kind in manifest["features"].values() for c in kind}

    checks = run(MlflowValidateDataOperator(task_id="validate_data", spec=definition, manifest=manifest))
    assert sum("left out, it leaks the label" in note for note in checks["notes"]) == 5
    trained = run(
        MlflowTrainModelOperator(task_id="train_model", spec=definition, dataset=manifest, checks=checks)
    )
    tags = client.get_run(trained["run_id"]).data.tags
    assert tags["leakage_columns"] == "5" and tags["leakage_excluded"] == "HDF,OSF,PWF,Status,TWF"
    record = json.loads(
        Path(
            client.download_artifacts(trained["run_id"], "data_checks/leakage.json", str(tmp_path))
        ).read_text()
    )
    assert record["excluded"] == manifest["leakage_excluded"] and record["findings"] == []
