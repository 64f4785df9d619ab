"""The columns the synthetic telemetry generator writes (the demo and the embedded default).

What the pipeline checks and trains on is a model's spec: ``include/models/predictive_maintenance.yaml``
declares these columns with their types, categories and plausible ranges (a test keeps the two in step).
"""

from __future__ import annotations

TARGET = "failure_within_7d"
"""Label: 1 if the asset fails within ``HORIZON_DAYS`` of the reading, else 0."""

HORIZON_DAYS = 7

CATEGORICAL: list[str] = ["equipment_type"]
NUMERIC: list[str] = [
    "equipment_age_years",
    "operating_hours",
    "temperature_c",
    "vibration_mm_s",
    "pressure_bar",
    "rpm",
    "load_pct",
    "days_since_maintenance",
    "failures_last_year",
]
FEATURES: list[str] = CATEGORICAL + NUMERIC

INTEGER_COLUMNS: tuple[str, ...] = ("days_since_maintenance", "failures_last_year")
"""Numeric columns stored as int64; the other numeric columns are float64."""

EQUIPMENT_TYPES: tuple[str, ...] = ("pump", "compressor", "motor", "conveyor", "turbine", "hvac")
