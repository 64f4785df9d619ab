"""Batch scoring of the fleet: the latest reading of every unit, its failure risk, a short summary.

Pure domain code (no Airflow, no MLflow): the caller loads the model and decides where files go.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cmms_pm.schema import FEATURES

DEFAULT_FLEET_SIZE = 500
RISK_THRESHOLD = 0.5
TOP_AT_RISK = 10


def latest_telemetry(as_of: str, n_units: int = DEFAULT_FLEET_SIZE) -> pd.DataFrame:
    """The latest reading of each of ``n_units`` units (``equipment_id`` + FEATURES) as of ``as_of``.

    Synthetic and seeded by ``as_of``, like the training batches: the same time gives the same fleet.
    """
    from cmms_pm.data import generate_telemetry, interval_seed

    frame = generate_telemetry(n_units, interval_seed(as_of, as_of))[FEATURES]
    frame.insert(0, "equipment_id", [f"EQ-{i:05d}" for i in range(1, n_units + 1)])
    return frame


def score_fleet(
    model: Any,
    telemetry: pd.DataFrame,
    *,
    model_name: str,
    model_version: str,
    scored_at: str,
    threshold: float = RISK_THRESHOLD,
) -> pd.DataFrame:
    """One row per unit: id, type, failure probability, at-risk flag, and which model scored it when."""
    proba = model.predict_proba(telemetry[FEATURES])[:, 1]
    return pd.DataFrame(
        {
            "equipment_id": telemetry["equipment_id"].astype("str"),
            "equipment_type": telemetry["equipment_type"].astype("str"),
            "failure_probability": proba.astype("float64"),
            "at_risk": proba >= threshold,
            "model_name": model_name,
            "model_version": str(model_version),
            "scored_at": pd.Timestamp(scored_at),
        }
    )


def summarize(predictions: pd.DataFrame, *, threshold: float = RISK_THRESHOLD) -> dict[str, Any]:
    """How many units are at risk (overall and per type) and the riskiest ones, as plain JSON values."""
    at_risk = predictions[predictions["at_risk"]]
    top = predictions.nlargest(TOP_AT_RISK, "failure_probability")
    return {
        "units": int(len(predictions)),
        "at_risk": int(len(at_risk)),
        "at_risk_rate": float(len(at_risk) / len(predictions)) if len(predictions) else 0.0,
        "threshold": float(threshold),
        "at_risk_by_type": {str(k): int(v) for k, v in at_risk["equipment_type"].value_counts().items()},
        "riskiest": [
            {"equipment_id": r.equipment_id, "failure_probability": round(float(r.failure_probability), 4)}
            for r in top.itertuples()
        ],
        "model_name": str(predictions["model_name"].iloc[0]) if len(predictions) else "",
        "model_version": str(predictions["model_version"].iloc[0]) if len(predictions) else "",
    }
