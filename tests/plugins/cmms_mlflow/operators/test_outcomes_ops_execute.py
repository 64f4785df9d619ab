"""``execute(context)`` of plugins/cmms_mlflow/operators/outcomes_ops.py's operators on a real MLflow:
the champion's stored predictions measured against the failure log, and a retraining asked (once a
day) when the realized F1 is under the spec's floor."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowSkipException

from cmms_mlflow.operators import MlflowTransitionModelOperator
from cmms_mlflow.operators.outcomes_ops import MlflowMeasureOutcomesOperator, MlflowRequestRetrainingOperator
from cmms_pm.spec import ModelSpec

#: Assets (UDI) that failed 7 h after the scoring run of 2026-07-02 03:00, inside the 48 h horizon;
#: asset 4 fails on 07-05, after it: the log is then known past the horizon, so the day has matured.
FAILED = [1, 2, 3]
LATER = (4, "2026-07-05T12:00:00+00:00")


def test_outcomes_are_measured_and_a_champion_under_the_floor_asks_for_retraining_once_a_day(
    fresh_model, score_fleet, client
):
    outcomes = {
        "source": {"kind": "file", "path": "incoming/failures.csv"},
        "entity_column": "asset",
        "time_column": "failed_at",
        "horizon_hours": 48,
        "window_days": 3,
        "floor": {"metric": "f1", "value": 0.9, "min_failures": 1},
    }
    spec = ModelSpec.from_dict({**fresh_model.spec.to_dict(), "outcomes": outcomes})
    name, run = fresh_model.name, fresh_model.run
    run(
        MlflowTransitionModelOperator(
            task_id="promote", model_name=name, version=fresh_model.version, stage="Production"
        )
    )
    scored, predictions, _ = score_fleet(risk_threshold="0.0", spec=spec)  # every machine an alert
    assert scored["model_name"] == name and scored["at_risk"] == 300
    failures = pd.DataFrame(
        {"asset": [*FAILED, LATER[0]], "failed_at": ["2026-07-02T10:00:00+00:00"] * len(FAILED) + [LATER[1]]}
    )
    failures.to_csv(Path(os.environ["CMMS_DATA_ROOT"]) / "incoming" / "failures.csv", index=False)

    measured = run(
        MlflowMeasureOutcomesOperator(task_id="measure_outcomes", spec=spec.to_dict(), model_name=name), 6
    )

    assert measured["champion"] == fresh_model.version and measured["missing_prediction_files"] == 0
    window = measured["versions"][fresh_model.version]["window"]
    assert (window["tp"], window["fp"], window["fn"]) == (len(FAILED), 300 - len(FAILED), 0)
    assert measured["versions"][fresh_model.version]["days"] == 1
    assert client.get_run(measured["versions"][fresh_model.version]["monitoring_run_id"]).info.status
    verdict = measured["retrain"]
    assert verdict["version"] == fresh_model.version and verdict["day"] == "2026-07-06" and verdict["reason"]

    request = MlflowRequestRetrainingOperator(
        task_id="request_retraining", spec=spec.to_dict(), model_name=name, measured=measured
    )
    asked = run(request, 6)
    assert asked == {"model_name": name, "spec": spec.name, **verdict}
    # Another run the same day asks nothing more; a measurement without a verdict asks nothing at all.
    with pytest.raises(AirflowSkipException, match="already requested on 2026-07-06"):
        run(request, 7)
    with pytest.raises(AirflowSkipException, match="not below the floor"):
        run(
            MlflowRequestRetrainingOperator(
                task_id="request_retraining",
                spec=spec.to_dict(),
                model_name=name,
                measured={**measured, "retrain": None},
            ),
            6,
        )
