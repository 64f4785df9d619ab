"""The telemetry schema shared by generation, validation and training: one source of column truth."""

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

RANGES: dict[str, tuple[float, float]] = {
    "equipment_age_years": (0.0, 60.0),
    "operating_hours": (0.0, 60.0 * 8760.0),
    "temperature_c": (-40.0, 200.0),
    "vibration_mm_s": (0.0, 100.0),
    "pressure_bar": (0.0, 400.0),
    "rpm": (0.0, 30000.0),
    "load_pct": (0.0, 150.0),
    "days_since_maintenance": (0.0, 3650.0),
    "failures_last_year": (0.0, 52.0),
}
"""Physically plausible inclusive bounds; a value outside them is a sensor or ETL fault, not a signal."""

MIN_ROWS = 200
"""Fewer rows than this cannot give a stratified holdout with a meaningful F1."""
