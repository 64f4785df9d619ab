"""The training run's parameters as JSON Schema: one definition for the Airflow trigger form and
every other entry point (an API, a notebook) that starts a training run.

Each entry is the keyword arguments of an Airflow ``Param``: ``default``, ``description`` and
JSON-Schema keys (``type``, bounds, ``pattern``) plus the form's ``title`` and ``section``.
"""

from __future__ import annotations

from typing import Any

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
DATA_SOURCE_PATTERN = r"^(synthetic|\S+\.(csv|parquet|pq))$"

TRAINING_PARAMS: dict[str, dict[str, Any]] = {
    "model_name": {
        "default": "predictive_maintenance_rf",
        "type": "string",
        "pattern": MODEL_NAME_PATTERN,
        "title": "Registered model name",
        "description": "MLflow registered model that receives the new version.",
        "section": "Model",
    },
    "experiment_name": {
        "default": "predictive_maintenance",
        "type": "string",
        "pattern": r"^\S.{0,199}$",
        "title": "MLflow experiment",
        "description": "Experiment that holds the training run (created if missing).",
        "section": "Model",
    },
    "n_estimators": {
        "default": 100,
        "type": "integer",
        "minimum": 1,
        "maximum": 2000,
        "title": "Number of trees",
        "description": "RandomForest n_estimators.",
        "section": "Hyperparameters",
    },
    "max_depth": {
        "default": 10,
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "title": "Maximum tree depth",
        "description": "RandomForest max_depth.",
        "section": "Hyperparameters",
    },
    "n_samples": {
        "default": 20000,
        "type": "integer",
        "minimum": 1000,
        "maximum": 10_000_000,
        "title": "Synthetic samples",
        "description": "Rows of synthetic telemetry to generate (ignored for a file source).",
        "section": "Data",
    },
    "data_source": {
        "default": "synthetic",
        "type": "string",
        "pattern": DATA_SOURCE_PATTERN,
        "title": "Data source",
        "description": "'synthetic', or the path/URI of a .csv or .parquet file of real telemetry "
        "(local path, file:// or s3://).",
        "section": "Data",
    },
    "target_column": {
        "default": "failure_within_7d",
        "type": "string",
        "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
        "title": "Target column",
        "description": "Label column of a file source (1 = failure within the horizon).",
        "section": "Data",
    },
    "f1_threshold": {
        "default": 0.80,
        "type": "number",
        "minimum": 0.0,
        "maximum": 1.0,
        "title": "F1 threshold",
        "description": "Minimum holdout F1 for promotion to Production.",
        "section": "Promotion",
    },
    "min_improvement": {
        "default": 0.0,
        "type": "number",
        "minimum": -1.0,
        "maximum": 1.0,
        "title": "Minimum improvement over the champion",
        "description": "The challenger's holdout F1 must reach champion F1 + this value.",
        "section": "Promotion",
    },
    "promote_older_data": {
        "default": False,
        "type": "boolean",
        "title": "Allow promotion of a model trained on older data",
        "description": "Off (default): a run whose data interval ends before the champion's (a backfill) "
        "never replaces it, whatever its F1.",
        "section": "Promotion",
    },
    "allow_promotion": {
        "default": True,
        "type": "boolean",
        "title": "Allow promotion",
        "description": "If off, the run validates and reports but never changes Production.",
        "section": "Promotion",
    },
}


def training_conf_schema() -> dict[str, Any]:
    """JSON Schema of a whole run conf, built from :data:`TRAINING_PARAMS` (no second definition).

    ``title``/``section``/``description``/``default`` are annotations JSON Schema ignores; unknown
    keys are refused so a typo is not silently dropped.
    """
    return {"type": "object", "properties": TRAINING_PARAMS, "additionalProperties": False}


def validate_training_conf(conf: dict[str, Any]) -> dict[str, Any]:
    """Return the full conf (defaults filled in) or raise ``InvalidParamsError`` naming every problem."""
    import jsonschema

    from cmms_pm.exceptions import InvalidParamsError

    validator = jsonschema.Draft7Validator(training_conf_schema())
    problems = sorted(
        f"{'.'.join(map(str, err.absolute_path)) or '<conf>'}: {err.message}"
        for err in validator.iter_errors(conf)
    )
    if problems:
        raise InvalidParamsError(problems)
    return {name: spec["default"] for name, spec in TRAINING_PARAMS.items()} | conf
