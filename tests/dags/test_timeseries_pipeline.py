"""Raw telemetry and event logs, end to end: scaffold → training → registered, gated, promoted →
scoring of each asset's latest snapshot (``dag.test()``, real MLflow on SQLite, real files).

The fleet is the CMMS-shaped generator's (``cmms_pm.timeseries.generator``): hourly CSV readings in
a folder partitioned by day, failure/maintenance/alarm logs, an assets table. Two assets stop
reporting two days before the end (stale), one asset of the assets table never reported (missing),
and the failure log names an asset the telemetry does not know (reported, not fatal).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
FIXTURE = PROJECT_DIR / "tests" / "dag_fixtures" / "timeseries_models.py"
START, END = "2026-01-01", "2026-04-01"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet_files() -> dict[str, Path]:
    import pandas as pd

    from cmms_pm.timeseries.generator import generate_fleet, write_fleet

    fleet = generate_fleet(60, START, END, seed=18, silent_assets=2)
    # An asset the CMMS knows that never reported, and a failure of an asset the telemetry lacks.
    silent = {"asset_id": ["A09999"], "model": ["M1"], "install_date": ["2020-01-01"], "site": ["north"]}
    assets = pd.concat([fleet.assets, pd.DataFrame(silent)], ignore_index=True)
    stranger = {
        "asset_id": ["B00001"],
        "timestamp": [pd.Timestamp("2026-02-01", tz="UTC")],
        "component": ["comp1"],
    }
    failures = pd.concat([fleet.failures, pd.DataFrame(stranger)], ignore_index=True)
    fleet = type(fleet)(fleet.telemetry, failures, fleet.maintenance, fleet.alarms, assets)
    root = Path(os.environ["CMMS_DATA_ROOT"]) / "incoming" / "fleet_e2e"
    return write_fleet(fleet, root, fmt="csv", partition_telemetry=True)


@pytest.fixture(scope="module")
def scaffolded(fleet_files, tmp_path_factory, airflow_db):
    """``make new-model`` on the raw files (the CLI, as a person runs it), then the next DAG parse."""
    import subprocess
    import sys

    models = tmp_path_factory.mktemp("ts-models")
    command = [
        sys.executable, "-m", "cmms_pm.scaffold", "--name", "fleet_e2e", "--models-dir", str(models),
        "--telemetry", str(fleet_files["telemetry"]), "--failures", str(fleet_files["failures"]),
        "--maintenance", str(fleet_files["maintenance"]), "--alarms", str(fleet_files["alarms"]),
        "--assets", str(fleet_files["assets"]), "--horizon", "48h",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr
    # A second spec, the same but for its telemetry: a copy with an asset's readings duplicated.
    import pandas as pd
    import yaml

    telemetry = pd.read_csv(fleet_files["failures"].parent / "telemetry" / "date=2026-02-01" / "part-0.csv")
    bad = fleet_files["failures"].parent.parent / "fleet_bad_telemetry"
    bad.mkdir(exist_ok=True)
    pd.concat([telemetry, telemetry.head(5)]).to_csv(bad / "part-0.csv", index=False)
    spec = yaml.safe_load((models / "fleet_e2e.yaml").read_text())
    spec.update(name="fleet_bad", registered_model="fleet_bad", experiment="fleet_bad")
    spec["timeseries"]["telemetry"]["source"]["path"] = "incoming/fleet_bad_telemetry"
    (models / "fleet_bad.yaml").write_text(yaml.safe_dump(spec))
    # The DAG file reads the folder at every parse (dag.test() parses it again to serialize it).
    os.environ["CMMS_TS_TEST_MODELS_DIR"] = str(models)
    try:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(FIXTURE))
        assert not bag.import_errors, bag.import_errors
        yield done.stdout, models, bag.dags
    finally:
        del os.environ["CMMS_TS_TEST_MODELS_DIR"]


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _owned(spec_path: Path, model_name: str):
    """The training and scoring DAGs of the scaffolded spec owning ``model_name`` (a spec writes only
    its own model; each test gets one), built by the DAG factory as the parse above did."""
    from support import spec_owning

    from cmms_mlflow.factory import build_scoring_dag, build_training_dag
    from cmms_pm.spec import load_spec

    spec = spec_owning(load_spec(spec_path), model_name)
    return build_training_dag(spec), build_scoring_dag(spec)


def test_raw_files_scaffold_train_promote_and_score_the_latest_snapshot_per_asset(
    scaffolded, mlflow_conn, client, model_name
):
    import pandas as pd
    from support import xcom_value

    printed, models, dags = scaffolded
    # The scaffold said what it inferred and why, and the next parse shows both DAGs.
    for said in ("entity column 'asset_id'", "time column 'timestamp'", "snapshots every 6h", "alarm codes"):
        assert said in printed, printed
    assert {"fleet_e2e_training", "fleet_e2e_scoring"} <= set(dags)
    training, scoring = _owned(models / "fleet_e2e.yaml", model_name)
    conf = training.params.dump() | {
        "model_name": model_name, "experiment_name": model_name, "f1_threshold": 0.25, "n_estimators": 40,
    }  # fmt: skip
    when = datetime(2026, 3, 30, 2, tzinfo=UTC)
    first = training.test(logical_date=when, run_conf=conf)
    assert str(first.state) == "success", _states(first)
    manifest = xcom_value(first, "extract_data")
    split = manifest["split"]
    as_of = pd.Timestamp(manifest["data_interval_end"])
    # A point-in-time batch: no snapshot newer than the data minus the horizon, periods in order, purged.
    parts = {name: pd.read_parquet(entry["uri"]) for name, entry in manifest["splits"].items()}
    newest = max(part["snapshot_time"].max() for part in parts.values())
    assert newest <= as_of - pd.Timedelta(hours=48)
    assert parts["train"]["snapshot_time"].max() < pd.Timestamp(split["train_end"])
    assert parts["validation"]["snapshot_time"].min() >= pd.Timestamp(split["validation_start"])
    assert parts["holdout"]["snapshot_time"].min() >= pd.Timestamp(split["holdout_start"])
    gap = pd.Timestamp(split["validation_start"]) - pd.Timestamp(split["train_end"])
    assert gap >= pd.Timedelta(hours=48) and split["label_horizon_hours"] == 48.0
    assert all(part["failure_within_48h"].sum() > 0 for part in parts.values())
    assert not set(manifest["features"]["numeric"]) & {"asset_id", "snapshot_time"}
    assert any("B00001" not in note and "failures log" in note for note in manifest["notes"])

    (version,) = client.search_model_versions(f"name = '{model_name}'")
    assert version.current_stage == "Production"
    params = client.get_run(version.run_id).data.params
    assert params["split_strategy"] == "time" and params["label_horizon_hours"] == "48.0"
    assert params["train_end"] == split["train_end"] and params["holdout_start"] == split["holdout_start"]
    record = json.loads(
        Path(client.download_artifacts(version.run_id, "validation/decision.json")).read_text()
    )
    assert record["split"]["holdout_start"] == split["holdout_start"] and record["decision"] == "promote"
    assert "time split: train" in xcom_value(first, "report")["text"]

    # The same interval again (a backfill rerun): the same bytes and the same model.
    second = training.test(logical_date=when, run_conf=conf)
    assert str(second.state) == "success", _states(second)
    assert xcom_value(second, "extract_data")["digest"] == manifest["digest"]
    again = client.get_model_version(model_name, "2")
    assert again.tags["data_digest"] == version.tags["data_digest"]
    assert again.tags["validation_f1"] == version.tags["validation_f1"]
    # The forest adds its trees' probabilities up in threads (in no fixed order) before the calibration
    # maps them: the same model's ROC-AUC may differ in the last printed digit, never more.
    auc = float(version.tags["validation_roc_auc"])
    assert float(again.tags["validation_roc_auc"]) == pytest.approx(auc, abs=2e-6)

    # Scoring: one row per asset at the latest snapshot; stale and missing telemetry are flagged.
    scoring_conf = {"model_name": model_name, "snapshot_at": "2026-04-01T03:30:00Z"}
    run = scoring.test(run_conf=scoring.params.dump() | scoring_conf)
    assert str(run.state) == "success", _states(run)
    (summary,) = xcom_value(run, "score_fleet")
    out = pd.read_parquet(summary["predictions_uri"])
    # Every asset the CMMS knows (assets table, event logs): 60 with telemetry, A09999 and B00001 without.
    assert len(out) == 62 and out["asset_id"].is_unique
    assert set(out["snapshot_time"]) == {pd.Timestamp("2026-04-01T00:00:00Z")}
    missing = out[out["asset_id"].isin(["A09999", "B00001"])]
    assert (missing["contract_issues"] == "missing_telemetry").all() and missing[
        "failure_probability"
    ].isna().all()
    stale = out[out["contract_issues"].str.contains("stale_telemetry")]
    assert set(stale["asset_id"]) == {"A00059", "A00060"}
    assert (stale["telemetry_age_hours"] > 6).all() and not stale["contract_ok"].any()
    fresh = out[~out["asset_id"].isin(["A00059", "A00060", "A09999", "B00001"])]
    assert (fresh["telemetry_age_hours"] <= 1).all() and not fresh["contract_issues"].str.contains(
        "telemetry"
    ).any()
    assert fresh["contract_ok"].mean() > 0.8  # a degrading asset may read outside the training range: flagged
    assert fresh["failure_probability"].between(0, 1).all()
    assert summary["flagged_by_reason"]["stale_telemetry"] == 2
    assert summary["flagged_by_reason"]["missing_telemetry"] == 2


def test_bad_raw_input_fails_the_extract_without_a_retry_and_registers_nothing(
    scaffolded, mlflow_conn, client, model_name
):
    """The message itself ("5 duplicate ('asset_id', 'timestamp') readings in 5 assets") is asserted
    by the unit tests of every bad input (tests/include/cmms_pm/test_cmms_pm_timeseries.py)."""
    from airflow.sdk.exceptions import AirflowFailException

    from cmms_mlflow.exceptions import BadDataError

    _, models, dags = scaffolded
    assert "fleet_bad_training" in dags
    training, _ = _owned(models / "fleet_bad.yaml", model_name)
    conf = training.params.dump() | {"model_name": model_name, "experiment_name": model_name}
    run = training.test(logical_date=datetime(2026, 2, 10, 2, tzinfo=UTC), run_conf=conf)
    assert str(run.state) == "failed"
    states = _states(run)
    assert states["extract_data"] == "failed" and states["train_model"] == "upstream_failed", states
    (extract,) = [ti for ti in run.get_task_instances() if ti.task_id == "extract_data"]
    assert extract.try_number == 1  # failed for good: BadDataError is an AirflowFailException
    assert issubclass(BadDataError, AirflowFailException)
    assert not client.search_registered_models(f"name = '{model_name}'")
