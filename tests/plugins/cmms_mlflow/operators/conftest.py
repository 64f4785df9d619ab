"""The operators' ``execute(context)`` tests (fast tier): a real MLflow on the session's SQLite file,
real data and models; the Airflow context is tests/operator_context.py's small stand-in.

One model is trained once per session, through the operators themselves (extract → validate_data →
train → register → Staging → validate → promote): ``pipeline`` keeps what each step returned, and
each test module asserts on its operators' part of it and executes them again where that is cheap.
A test that changes the registry works on a model of its own (``fresh_model``: the same training run
registered under a new name, owned by a copy of the spec).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from datasets import ai4i_like
from operator_context import operator_runner, write_incoming
from support import spec_owning

from cmms_pm.spec import ModelSpec, load_spec

FIXTURES = Path(__file__).resolve().parents[3] / "dag_fixtures" / "models"
#: Rows of the session's batch. The model is the cheapest the project trains (a logistic regression,
#: uncalibrated: ~4 s of CPU against ~10 s for a small booster) and the gate is open (F1 >= 0): these
#: tests are about the operators, not the model's quality.
ROWS = 2000


@dataclass
class Pipeline:
    """The session's model and what each operator returned for it (day 1 of its training DAG)."""

    spec: ModelSpec
    model_name: str
    root: Path
    source: str
    results: dict[str, Any]

    @property
    def version(self) -> str:
        return self.results["register_model"]["version"]


def spec_with(spec: ModelSpec, **sections: Any) -> ModelSpec:
    """``spec`` with top-level sections replaced (e.g. ``retention={...}``)."""
    return ModelSpec.from_dict({**spec.to_dict(), **sections})


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, mlflow_store) -> Pipeline:
    from cmms_mlflow.operators import (
        ExtractBatchOperator,
        MlflowPromoteModelOperator,
        MlflowRegisterModelOperator,
        MlflowTrainModelOperator,
        MlflowTransitionModelOperator,
        MlflowValidateDataOperator,
        MlflowValidateModelOperator,
    )

    model_name = f"ops_{uuid.uuid4().hex[:8]}"
    base = load_spec(FIXTURES / "ai4i.yaml")
    cheap = {
        "estimator": {"kind": "logistic_regression", "params": {}},
        "calibration": {"method": "none"},
        "promotion": {**base.to_dict()["promotion"], "threshold": 0.0},
    }
    spec = spec_owning(spec_with(base, **cheap), model_name)
    definition = spec.to_dict()
    root = tmp_path_factory.mktemp("operators-pipeline")
    results: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_store}))
        run = operator_runner(spec, model_name, root, patch)
        source = write_incoming(root, ai4i_like(ROWS, seed=41))
        results["extract_data"] = manifest = run(
            ExtractBatchOperator(task_id="extract_data", spec=definition), data_source=source
        )
        results["validate_data"] = checks = run(
            MlflowValidateDataOperator(task_id="validate_data", spec=definition, manifest=manifest),
            data_source=source,
        )
        results["train_model"] = trained = run(
            MlflowTrainModelOperator(task_id="train_model", spec=definition, dataset=manifest, checks=checks)
        )
        results["register_model"] = registered = run(
            MlflowRegisterModelOperator(
                task_id="register_model", model_name=model_name, training=trained, spec=definition
            )
        )
        results["stage_model"] = run(
            MlflowTransitionModelOperator(
                task_id="stage_model", model_name=model_name, version=registered["version"], stage="Staging",
                spec=definition,
            )
        )  # fmt: skip
        version = registered["version"]
        results["validate_model"] = record = run(
            MlflowValidateModelOperator(
                task_id="validate_model", spec=definition, model_name=model_name, version=version,
                holdout_uri=manifest["splits"]["holdout"]["uri"],
                holdout_sha256=manifest["splits"]["holdout"]["sha256"], checks=checks,
            )
        )  # fmt: skip
        results["promote_model"] = run(
            MlflowPromoteModelOperator(
                task_id="promote_model", model_name=model_name, validation=record, spec=definition
            )
        )
    return Pipeline(spec=spec, model_name=model_name, root=root, source=source, results=results)


@pytest.fixture
def run(pipeline, mlflow_conn, tmp_path, monkeypatch):
    """``run(operator, day=1, **params) -> result`` for the session model's spec (a data root of this
    test's own; the session's batch stays readable by its absolute URIs)."""
    return operator_runner(pipeline.spec, pipeline.model_name, tmp_path, monkeypatch)


@dataclass
class FreshModel:
    spec: ModelSpec
    name: str
    version: str
    run: Any


@pytest.fixture
def fresh_model(pipeline, mlflow_conn, tmp_path, monkeypatch) -> FreshModel:
    """The session's trained model registered (version 1, Staging) under a name of this test's own,
    owned by a copy of the spec: a test that changes the registry changes nothing another reads."""
    from cmms_mlflow.operators import MlflowRegisterModelOperator, MlflowTransitionModelOperator

    name = f"ops_fresh_{uuid.uuid4().hex[:8]}"
    spec = spec_owning(pipeline.spec, name)
    run = operator_runner(spec, name, tmp_path / "fresh", monkeypatch)
    registered = run(
        MlflowRegisterModelOperator(
            task_id="register_model",
            model_name=name,
            training=pipeline.results["train_model"],
            spec=spec.to_dict(),
        )
    )
    run(
        MlflowTransitionModelOperator(
            task_id="stage_model", model_name=name, version=registered["version"], stage="Staging",
            spec=spec.to_dict(),
        )
    )  # fmt: skip
    return FreshModel(spec=spec, name=name, version=registered["version"], run=run)


@pytest.fixture
def score_fleet(pipeline, run):
    """``score_fleet(risk_threshold="None", run_id=..., spec=None) -> (result, predictions, ti)``: execute
    ``score_fleet`` of ``spec``'s scoring DAG (default: the session model's) on its scoring source
    (incoming/ai4i_fleet.csv, 300 machines, written under the data root of the moment)."""
    import os

    import pandas as pd
    from operator_context import TaskInstance

    from cmms_mlflow.operators import MlflowBatchScoreOperator

    def score(
        risk_threshold: str = "None", run_id: str = "scheduled__2026-07-02", spec: ModelSpec | None = None
    ):
        spec = spec or pipeline.spec
        incoming = Path(os.environ["CMMS_DATA_ROOT"]) / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        ai4i_like(300, seed=44).to_csv(incoming / "ai4i_fleet.csv", index=False)
        dag_id = spec.scoring_dag_id
        ti = TaskInstance(dag_id=dag_id, run_id=run_id, task_id="score_fleet")
        run_after = pd.Timestamp("2026-07-02T03:00:00+00:00")
        context = {
            "ti": ti,
            "dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=run_after, run_type="manual"),
            "triggering_asset_events": {},
            "params": {},
        }
        operator = MlflowBatchScoreOperator(
            task_id="score_fleet", spec=spec.to_dict(), model_name=spec.registered_model,
            risk_threshold=risk_threshold,
        )  # fmt: skip
        [result] = operator.execute(context)
        return result, pd.read_parquet(result["predictions_uri"]), ti

    return score
