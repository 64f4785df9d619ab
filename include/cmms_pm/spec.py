"""A model is data: one YAML spec per model (``include/models/<name>.yaml``), validated here.

The spec says where the data comes from, what to predict, which columns are features, which
estimator to fit and how a challenger becomes champion. Every default lives in
:data:`SPEC_SCHEMA` once; the DAG factory, the trigger form, the API and the tasks all read the
:class:`ModelSpec` built from it, so no setting is written twice.

Errors name the file and the field (``include/models/x.yaml: estimator.kind: 'xgb' is not one of
[...]``) so a broken spec is fixed without reading code.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from cmms_pm.exceptions import SpecError
from cmms_pm.timeseries.config import AGGREGATES as TS_AGGREGATES
from cmms_pm.timeseries.config import DURATION_PATTERN
from cmms_pm.timeseries.config import SINCE_KINDS as TS_SINCE_KINDS

if TYPE_CHECKING:
    from cmms_pm.timeseries.config import TimeSeriesConfig

PROJECT_DIR = Path(__file__).resolve().parents[2]
#: The ``source.kind`` a time-series spec reports (its tables are in its ``timeseries`` section).
TIMESERIES = "timeseries"

# Patterns are JSON Schema patterns, read by Python's ``re`` (jsonschema, Airflow's param check)
# and by the browser's JavaScript (the trigger form). In Python ``$`` also matches before a
# trailing newline, so each starts with a lookahead that refuses any newline. pydantic's regex
# engine has no lookahead, but its ``$`` is the end of the text: the API uses the ``*_REGEX`` forms.
_SPEC_NAME = r"[a-z][a-z0-9_]{0,59}"
_MODEL_NAME = r"[A-Za-z][A-Za-z0-9_.\-]{0,99}"
#: Spec names become DAG ids (``<name>_training``) and pool names: lower case, no dots.
SPEC_NAME_PATTERN = rf"^(?![\s\S]*\n){_SPEC_NAME}$"
SPEC_NAME_REGEX = rf"^{_SPEC_NAME}$"
#: Registered-model names: a letter first (so Jinja/JSON never read one as a number), then
#: letters, digits, ``_.-``.
MODEL_NAME_PATTERN = rf"^(?![\s\S]*\n){_MODEL_NAME}$"
MODEL_NAME_REGEX = rf"^{_MODEL_NAME}$"
#: Column names are free text in real files (``Torque [Nm]``) but one line, printable, bounded.
COLUMN_NAME_PATTERN = r"^(?![\s\S]*[\n\r\t])\S(.{0,198}\S)?$"
#: SQL identifiers (table, optionally schema-qualified; timestamp column): never quoted from input.
SQL_IDENTIFIER_PATTERN = r"^(?![\s\S]*\n)[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"
CONN_ID_PATTERN = r"^(?![\s\S]*\n)[A-Za-z0-9_.\-]{1,250}$"
#: An e-mail address on one line, no list separators or spaces (they would reach a mail header).
EMAIL_PATTERN = r"^(?![\s\S]*[\n\r])[^@\s,;<>\"]{1,64}@[A-Za-z0-9.\-]{1,253}$"
#: An Airflow user id (SimpleAuthManager user names, FAB ids, e-mail-like SSO ids), one line.
USER_ID_PATTERN = r"^(?![\s\S]*[\n\r])[A-Za-z0-9_.@+\-]{1,256}$"
#: What a spec's notifications can be sent for (``notifications.events``).
NOTIFICATION_EVENTS = ("promoted", "rejected", "approval_needed", "task_failed", "retrain_requested")

ESTIMATOR_KINDS = ("random_forest", "hist_gradient_boosting", "logistic_regression", "xgboost", "lightgbm")
METRICS = ("f1", "roc_auc", "pr_auc", "precision", "recall", "accuracy")
SPLIT_STRATEGIES = ("random", "time", "group")

_COLUMN = {"type": "string", "pattern": COLUMN_NAME_PATTERN}
_COLUMNS = {"type": "array", "items": _COLUMN, "uniqueItems": True, "default": []}
_LABEL = {"type": ["string", "integer", "boolean"]}

#: Columns kept as features although the leakage guard (cmms_pm.leakage) finds they leak the label:
#: without this a spec listing one fails validate_data; with it the run records a warning.
_LEAKAGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"accept": _COLUMNS},
    "default": {},
}

_SYNTHETIC_SOURCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind"],
    "properties": {
        "kind": {"const": "synthetic"},
        "n_samples": {"type": "integer", "minimum": 1000, "maximum": 50_000_000, "default": 20000},
    },
}
_FILE_SOURCE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "path"],
    "properties": {
        "kind": {"const": "file"},
        # Relative to the data root, or absolute under an allowed root, or s3://bucket/key.
        "path": {"type": "string", "minLength": 1, "maxLength": 1000},
        "aws_conn_id": {"type": "string", "pattern": CONN_ID_PATTERN, "default": "aws_default"},
    },
}
_SQL_SOURCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "conn_id"],
    "properties": {
        "kind": {"const": "sql"},
        "conn_id": {"type": "string", "pattern": CONN_ID_PATTERN},
        "table": {"type": "string", "pattern": SQL_IDENTIFIER_PATTERN},
        # Rows of the run's data interval: ``timestamp_column >= start AND < end``.
        "timestamp_column": {"type": "string", "pattern": SQL_IDENTIFIER_PATTERN},
        # Or a query with the named parameters %(data_interval_start)s / %(data_interval_end)s.
        "query": {"type": "string", "minLength": 1, "maxLength": 20000},
    },
    "oneOf": [{"required": ["table"]}, {"required": ["query"]}],
}

#: Values a time-series spec names from the data (components, alarm codes): they become parts of
#: feature names and SQL string literals, so plain text only.
TS_VALUE_PATTERN = r"^(?![\s\S]*\n)[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_DURATION = {"type": "string", "pattern": DURATION_PATTERN}
_TS_VALUES = {"type": "array", "items": {"type": "string", "pattern": TS_VALUE_PATTERN}, "uniqueItems": True}
# A time-series table: a file or a folder of files (possibly partitioned by date, e.g. date=2026-01-01/),
# local or s3:// (allow-listed roots, cmms_pm.sources), or a table of an Airflow SQL connection.
_TS_FILE_SOURCE = {
    **_FILE_SOURCE,
    # For a folder: the files' format (default: the suffix of the files found).
    "properties": {**_FILE_SOURCE["properties"], "format": {"enum": ["csv", "parquet"]}},
}
_TS_SQL_SOURCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "conn_id", "table"],
    "properties": {
        "kind": {"const": "sql"},
        "conn_id": {"type": "string", "pattern": CONN_ID_PATTERN},
        "table": {"type": "string", "pattern": SQL_IDENTIFIER_PATTERN},
    },
}


def _ts_table(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["source", *required],
        "properties": {
            "source": {"oneOf": [_TS_FILE_SOURCE, _TS_SQL_SOURCE]},
            # This table's own entity / time column, when it differs from the section's.
            "entity": _COLUMN,
            "time": _COLUMN,
            **properties,
        },
    }


#: ``timeseries``: raw telemetry and event logs in, snapshots x features x labels out
#: (cmms_pm.timeseries). A spec with this section has no source/target/features: they are derived.
TIMESERIES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["entity", "time", "telemetry", "failures", "label"],
    "properties": {
        "entity": _COLUMN,
        "time": _COLUMN,
        "telemetry": _ts_table(
            ["signals"], signals={"type": "array", "items": _COLUMN, "uniqueItems": True, "minItems": 1}
        ),
        "failures": _ts_table([], component_column=_COLUMN, components=_TS_VALUES),
        "maintenance": _ts_table([], component_column=_COLUMN, components=_TS_VALUES, kind_column=_COLUMN),
        "alarms": _ts_table(["code_column", "codes"], code_column=_COLUMN, codes=_TS_VALUES),
        "assets": _ts_table([], categorical=_COLUMNS, numeric=_COLUMNS, install_date=_COLUMN),
        "features": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "windows": {
                    "type": "array",
                    "items": _DURATION,
                    "minItems": 1,
                    "default": ["6h", "24h", "7d"],
                },
                "aggregates": {
                    "type": "array",
                    "items": {"enum": list(TS_AGGREGATES)},
                    "uniqueItems": True,
                    "minItems": 1,
                    "default": list(TS_AGGREGATES),
                },
                "alarm_windows": {"type": "array", "items": _DURATION, "minItems": 1, "default": ["24h"]},
                "time_since": {
                    "type": "array",
                    "items": {"enum": list(TS_SINCE_KINDS)},
                    "uniqueItems": True,
                    "default": list(TS_SINCE_KINDS),
                },
                # Hours since an event are capped here (and "never" reads as the cap).
                "time_since_cap": {**_DURATION, "default": "90d"},
            },
            "default": {},
        },
        "label": {
            "type": "object",
            "additionalProperties": False,
            "required": ["horizon"],
            "properties": {"horizon": _DURATION, "components": {**_TS_VALUES, "default": []}},
        },
        # One snapshot per asset every cadence (aligned to midnight UTC).
        "cadence": {**_DURATION, "default": "6h"},
        # Trailing window of snapshots a run trains on, ending at its data interval's end; null: all.
        "training_window": {"oneOf": [_DURATION, {"type": "null"}], "default": None},
        # Scoring flags an asset whose newest reading is older than this (default: the cadence).
        "stale_after": {"oneOf": [_DURATION, {"type": "null"}], "default": None},
    },
}

#: ``split``: how a batch is split. ``random`` (stratified rows, the default of a flat spec), ``time``
#: (train on the earliest part, validation next, holdout the latest, ``gap_hours`` purged between
#: them; with ``entity_column`` also grouped) or ``group`` (whole entities per part).
SPLIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "strategy": {"enum": list(SPLIT_STRATEGIES)},
        "time_column": _COLUMN,
        "entity_column": _COLUMN,
        "gap_hours": {"type": "number", "minimum": 0, "maximum": 87600},
        "validation": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.4, "default": 0.15},
        "holdout": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.4, "default": 0.15},
    },
}

#: Kubernetes resource quantities a spec may ask per trial task: cores ("1", "1.5", "500m"), bytes ("2Gi").
CPU_QUANTITY_PATTERN = r"^(?![\s\S]*\n)[0-9]{1,4}(\.[0-9]{1,3})?m?$"
MEMORY_QUANTITY_PATTERN = r"^(?![\s\S]*\n)[0-9]{1,6}(Ki|Mi|Gi|Ti)?$"
#: The most trials one tuning run may ask for (a spec's ``tuning.max_trials`` is at most this).
TUNING_TRIALS_LIMIT = 1000
#: A spec's hyperparameter search (``cmms_pm.tuning``): per hyperparameter of the estimator, a
#: range ``{low, high, log?, step?}`` (integers for an integer hyperparameter) or ``{choices: [...]}``.
#: Which names, bounds and values are valid depends on the estimator: checked by
#: :func:`_tuning_problems` when the spec loads.
_TUNING = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["space"],
    "properties": {
        "space": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "low": {"type": "number"},
                    "high": {"type": "number"},
                    "log": {"type": "boolean"},
                    "step": {"type": "number", "exclusiveMinimum": 0},
                    "choices": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"type": ["string", "number", "boolean"]},
                    },
                },
            },
        },
        # Trials per run (a trigger may ask any number from 1 to max_trials).
        "n_trials": {"type": "integer", "minimum": 1, "maximum": TUNING_TRIALS_LIMIT, "default": 20},
        "max_trials": {"type": "integer", "minimum": 1, "maximum": TUNING_TRIALS_LIMIT, "default": 100},
        # Trials one mapped Airflow task runs, one after the other (an independent TPE chain).
        "trials_per_task": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        # Random (seeded) trials at the start of each chain before TPE models the results.
        "startup_trials": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
        # Optional time budget from the study's start: no trial starts after it.
        "timeout_minutes": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": 1440,
            "default": None,
        },
        # Maximised on the validation split (the time split's where the spec has one).
        "metric": {"enum": list(METRICS), "default": "pr_auc"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 0},
        # Stop hopeless trials early (boosting libraries: by the validation PR-AUC of their rounds).
        "pruning": {"type": "boolean", "default": True},
        # What one trial task asks of a Kubernetes node (KubernetesExecutor: the pod_override of
        # the tune tasks, cmms_mlflow.integrations.kubernetes). Kubernetes quantities: cpu "1" or
        # "500m", memory "2Gi".
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cpu": {"type": "string", "pattern": CPU_QUANTITY_PATTERN, "default": "1"},
                "memory": {"type": "string", "pattern": MEMORY_QUANTITY_PATTERN, "default": "2Gi"},
            },
            "default": {},
        },
    },
    "default": None,
}
#: How the alert threshold is chosen on the validation split (issue 19; ``cmms_pm.thresholds``).
DECISION_STRATEGIES = ("f1", "cost", "precision_floor", "alert_budget")
_DECISION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "strategy": {"enum": list(DECISION_STRATEGIES), "default": "f1"},
        # What a missed failure and a needless inspection cost (any one unit): the ``cost`` strategy
        # minimises their sum; every strategy reports the expected cost per scored row.
        "costs": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "missed_failure": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12, "default": 10.0},
                "needless_inspection": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 1e12,
                    "default": 1.0,
                },
            },
            "default": {},
        },
        # precision_floor: the lowest threshold (most recall) whose precision reaches this.
        "min_precision": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        # alert_budget: at most per_day alerts on any day (needs the batch's time column), or at
        # most a share of the rows (of the fleet) alerted.
        "alert_budget": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "per_day": {"type": "integer", "minimum": 1, "maximum": 50_000_000},
                "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            },
        },
        # When no threshold meets the cost, floor or budget: the F1-best threshold, a fixed one, or
        # fail the run before anything is registered. Recorded either way.
        "fallback": {"enum": ["f1", "fixed", "fail"], "default": "f1"},
        "fixed_threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.5},
    },
    "default": {},
}
#: Calibrated risk: a map from the classifier's score to a probability, fitted on held-out rows.
CALIBRATION_METHODS = ("auto", "isotonic", "sigmoid", "none")
_CALIBRATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"method": {"enum": list(CALIBRATION_METHODS), "default": "auto"}},
    "default": {},
}
#: Reasons per scored row (``cmms_pm.explain``): how many, for which rows.
_EXPLAIN = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "reasons": {"type": "integer", "minimum": 0, "maximum": 20, "default": 3},
        "scope": {"enum": ["at_risk", "all"], "default": "at_risk"},
        # The riskiest rows explained at most per scoring run (exact SHAP on a forest: ~5-15 ms a row).
        "max_rows": {"type": "integer", "minimum": 0, "maximum": 50_000_000, "default": 1_000},
        # exact: Tree SHAP; approximate: Saabas path attributions (~100x faster on forests, also add up).
        "method": {"enum": ["exact", "approximate"], "default": "exact"},
    },
    "default": {},
}

#: Realized outcomes (issue 20, ``cmms_pm.outcomes``): the failure log the champion's stored predictions
#: are scored against (``<name>_outcomes`` DAG, daily), and the realized floor under which the package
#: asks the training DAG for a new model. Absent (null): no outcomes DAG, nothing changes.
_OUTCOMES = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["source", "entity_column", "time_column"],
    "properties": {
        # The failure log: a file, or a SQL table/query read for the interval the predictions need.
        "source": {"oneOf": [_FILE_SOURCE, _SQL_SOURCE]},
        # Its asset column (matched to the first of id_columns in the predictions) and failure time.
        "entity_column": _COLUMN,
        "time_column": _COLUMN,
        "component_column": _COLUMN,
        # A prediction at t is right about a failure in (t, t + horizon_hours]; it counts once matured.
        "horizon_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 8784, "default": 168},
        # The realized floor is judged on the champion's newest window_days matured days.
        "window_days": {"type": "integer", "minimum": 1, "maximum": 365, "default": 14},
        "schedule": {"type": "string", "maxLength": 100, "default": "0 6 * * *"},
        # Below it (on at least min_failures failures), a retraining is requested (at most one a day).
        "floor": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["value"],
            "properties": {
                "metric": {"enum": ["f1", "recall"], "default": "f1"},
                "value": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "min_failures": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 5},
            },
            "default": None,
        },
    },
    "default": None,
}

#: The model API's predict route (``POST /api/v1/ml/models/{name}/predict``, cmms_mlflow.www.predict_api).
_SERVING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # Rows per request; a longer list is refused with 413 before anything is scored.
        "max_rows": {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 10_000},
        # Request body size; a larger body is refused with 413 before it is read.
        "max_body_bytes": {"type": "integer", "minimum": 1024, "maximum": 268_435_456, "default": 8_388_608},
        # Reasons: how many and for which rows, from the explain section; the method as explain.method
        # (exact Tree SHAP, or approximate: path attributions), approximate by default for online requests.
        "explainer": {"enum": ["approximate", "exact"], "default": "approximate"},
        # How often the api-server asks the registry whether the champion changed.
        "refresh_seconds": {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 2.0},
    },
    "default": {},
}
#: Where the scoring DAG's ``deliver`` task sends the scores (cmms_mlflow.operators.delivery_ops).
_DELIVERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # Upsert one row per model, asset and scoring day into a table of an Airflow SQL connection.
        "table": {
            "type": "object",
            "additionalProperties": False,
            "required": ["conn_id", "name"],
            "properties": {
                "conn_id": {"type": "string", "pattern": CONN_ID_PATTERN},
                "name": {"type": "string", "pattern": SQL_IDENTIFIER_PATTERN},
                # Create the table when it is missing (else a missing table fails the task).
                "create": {"type": "boolean", "default": True},
            },
        },
        # POST the top-K alerts, one work-order suggestion each, to an Airflow HTTP connection.
        "webhook": {
            "type": "object",
            "additionalProperties": False,
            "required": ["conn_id"],
            "properties": {
                "conn_id": {"type": "string", "pattern": CONN_ID_PATTERN},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
            },
        },
    },
    "default": {},
}

#: What a model keeps as it ages (``cmms_mlflow.registry.pruning``, the last step of its training and scoring
#: DAGs). ``null`` keeps everything: a spec without the section removes nothing, as before.
RETENTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # Run folders under the data root (training batches; the scoring DAG's outputs), newest data
        # interval first. At least 1: the running run's own folder is always needed.
        "keep_batches": {"type": ["integer", "null"], "minimum": 1, "maximum": 100_000, "default": None},
        # Archived versions that keep their artifacts, newest first; older ones lose them (the version,
        # its tags, metrics and history stay). The champion, the challenger, a version waiting for
        # approval and the previous champion (the rollback target) always keep theirs.
        "keep_archived_versions": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": 100_000,
            "default": None,
        },
    },
    "default": {},
}

SPEC_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "CMMS model spec",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "registered_model"],
    # A flat table needs its source, target and features; a time-series spec derives them.
    "if": {"required": ["timeseries"]},
    "else": {"required": ["source", "target", "features"]},
    "properties": {
        "name": {"type": "string", "pattern": SPEC_NAME_PATTERN},
        "description": {"type": "string", "maxLength": 2000, "default": ""},
        "registered_model": {"type": "string", "pattern": MODEL_NAME_PATTERN},
        "experiment": {"type": "string", "pattern": r"^(?![\s\S]*\n)\S.{0,199}$"},
        # A cron expression (UTC by default) or null for manual runs only.
        "schedule": {"type": ["string", "null"], "maxLength": 100, "default": "0 2 * * *"},
        "timezone": {"type": "string", "default": "UTC"},
        "owner": {"type": "string", "default": "ml-platform"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 50}, "default": []},
        "source": {"oneOf": [_SYNTHETIC_SOURCE, _FILE_SOURCE, _SQL_SOURCE]},
        "target": {
            "type": "object",
            "additionalProperties": False,
            "required": ["column", "positive"],
            "properties": {
                "column": _COLUMN,
                "positive": _LABEL,
                # Optional: the other label; any third label then fails the batch.
                "negative": _LABEL,
            },
        },
        "features": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "numeric": _COLUMNS,
                # Numeric columns whose values must be whole numbers (a fraction fails the batch).
                "integer": _COLUMNS,
                "categorical": _COLUMNS,
                # Infer the feature columns from the data (every column but target/drop/exclude).
                "infer": {"type": "boolean", "default": False},
                "exclude": _COLUMNS,
                # Known values of a categorical column; any other value fails the batch.
                "categories": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "default": {},
                },
                # Physically plausible bounds [low, high]; a value outside fails the batch.
                "ranges": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "array",
                        "items": {"type": "number"},
                        "minItems": 2,
                        "maxItems": 2,
                    },
                    "default": {},
                },
            },
        },
        "timeseries": TIMESERIES_SCHEMA,
        # Id, timestamp and free-text columns: never features; id_columns travel to predictions.
        "drop": _COLUMNS,
        "id_columns": _COLUMNS,
        "leakage": _LEAKAGE,
        "split": SPLIT_SCHEMA,
        "estimator": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": list(ESTIMATOR_KINDS), "default": "random_forest"},
                "params": {"type": "object", "default": {}},
            },
            "default": {},
        },
        "tuning": _TUNING,
        "promotion": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "metric": {"enum": list(METRICS), "default": "f1"},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8},
                "min_improvement": {"type": "number", "minimum": -1, "maximum": 1, "default": 0.0},
                "promote_older_data": {"type": "boolean", "default": False},
                "allow_promotion": {"type": "boolean", "default": True},
            },
            "default": {},
        },
        "decision": _DECISION,
        "calibration": _CALIBRATION,
        "explain": _EXPLAIN,
        "drift": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                # Population stability index per feature: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major.
                "psi_threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "default": 0.25},
                "action": {"enum": ["warn", "block"], "default": "warn"},
            },
            "default": {},
        },
        "outcomes": _OUTCOMES,
        # Which model versions validation and scoring load: only this package's skops models (run
        # tags model_spec = this spec, airflow.dag_id/run_id) unless allow_unverified_models.
        "loading": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"allow_unverified_models": {"type": "boolean", "default": False}},
            "default": {},
        },
        "validation": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "min_rows": {"type": "integer", "minimum": 20, "default": 200},
                # Largest share of missing values a feature column may have in a batch.
                "max_missing_rate": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
            },
            "default": {},
        },
        # Human approval before Production (cmms_mlflow.operators.approval_ops): the training DAG asks
        # in Airflow (Required actions) and waits; no answer within timeout_hours archives the version.
        "approval": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "required": {"type": "boolean", "default": False},
                "timeout_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 8760, "default": 24},
                # Airflow user ids allowed to answer; empty: anyone who may act on the DAG's HITL tasks.
                "approvers": {
                    "type": "array",
                    "items": {"type": "string", "pattern": USER_ID_PATTERN},
                    "uniqueItems": True,
                    "default": [],
                },
            },
            "default": {},
        },
        "retention": RETENTION_SCHEMA,
        # Every task's retries (Airflow's retries / retry_delay / exponential backoff): a down MLflow or
        # storage recovers; bad data fails at once (typed errors are not retried).
        "retries": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "attempts": {"type": "integer", "minimum": 0, "maximum": 10, "default": 2},
                "delay_seconds": {"type": "number", "minimum": 0, "maximum": 3600, "default": 30},
                "exponential_backoff": {"type": "boolean", "default": True},
                "max_delay_seconds": {"type": "number", "minimum": 0, "maximum": 86400, "default": 600},
            },
            "default": {},
        },
        # Who hears of promotions, rejections, approvals needed and failed tasks
        # (cmms_mlflow.integrations.notifiers).
        # Nothing configured: nothing is sent.
        "notifications": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                # E-mail through Airflow's SMTP notifier; the connection defaults to smtp_default.
                "email_conn_id": {"type": ["string", "null"], "pattern": CONN_ID_PATTERN, "default": None},
                "email_to": {
                    "type": "array",
                    "items": {"type": "string", "pattern": EMAIL_PATTERN},
                    "uniqueItems": True,
                    "default": [],
                },
                # Sender; default: the SMTP connection's from_email extra.
                "email_from": {"type": ["string", "null"], "pattern": EMAIL_PATTERN, "default": None},
                # JSON POST to the URL of this HTTP connection (password = optional bearer token).
                "webhook_conn_id": {"type": ["string", "null"], "pattern": CONN_ID_PATTERN, "default": None},
                "events": {
                    "type": "array",
                    "items": {"enum": list(NOTIFICATION_EVENTS)},
                    "uniqueItems": True,
                    "minItems": 1,
                    "default": list(NOTIFICATION_EVENTS),
                },
            },
            "default": {},
        },
        "scoring": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "source": {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["kind"],
                            "properties": {
                                "kind": {"const": "synthetic"},
                                "n_units": {"type": "integer", "minimum": 1, "maximum": 50_000_000},
                            },
                        },
                        _FILE_SOURCE,
                        _SQL_SOURCE,
                    ],
                    "default": {"kind": "synthetic", "n_units": 500},
                },
                # null (default): each champion's own decision threshold; a number overrides it.
                "risk_threshold": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "default": None},
                "experiment": {"type": "string", "pattern": r"^(?![\s\S]*\n)\S.{0,199}$"},
            },
            "default": {},
        },
        "serving": _SERVING,
        "delivery": _DELIVERY,
    },
}


@dataclass(frozen=True)
class FeatureSpec:
    """The spec's feature columns (empty lists when ``infer`` is on)."""

    numeric: tuple[str, ...] = ()
    integer: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    infer: bool = False
    exclude: tuple[str, ...] = ()
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def declared(self) -> tuple[str, ...]:
        """Declared feature columns in a stable order: categorical, then numeric, then integer."""
        return (*self.categorical, *self.numeric, *self.integer)

    def kind_of(self, column: str) -> str:
        """``"categorical"``, ``"integer"`` or ``"numeric"`` for a declared column."""
        if column in self.categorical:
            return "categorical"
        if column in self.integer:
            return "integer"
        return "numeric"


# --- typed sections: what ModelSpec's accessors return (the schema above fills every default) ---


class Promotion(TypedDict):
    """``promotion``: the gate a challenger passes, on the holdout, to become the champion."""

    metric: str
    threshold: float
    min_improvement: float
    promote_older_data: bool
    allow_promotion: bool


class Drift(TypedDict):
    """``drift``: the PSI above which a feature has drifted, and what drift does to the promotion."""

    psi_threshold: float
    action: Literal["warn", "block"]


class Loading(TypedDict):
    """``loading``: whether validation and scoring may load a version this package did not train."""

    allow_unverified_models: bool


class BatchValidation(TypedDict):
    """``validation``: what every batch must have before anything trains on it."""

    min_rows: int
    max_missing_rate: float


class Approval(TypedDict):
    """``approval``: a person's answer before Production (``approvers``: empty = anyone allowed)."""

    required: bool
    timeout_hours: float
    approvers: list[str]


class Notifications(TypedDict):
    """``notifications``: who hears of which events (nothing configured: nothing is sent)."""

    email_conn_id: str | None
    email_to: list[str]
    email_from: str | None
    webhook_conn_id: str | None
    events: list[str]


class Retention(TypedDict):
    """``retention``: how many run folders and archived versions keep their files (None: all)."""

    keep_batches: int | None
    keep_archived_versions: int | None


class Split(TypedDict):
    """``ModelSpec.split``: how batches are split, every applicable key resolved."""

    strategy: str  # "random" | "time" | "group"
    validation: NotRequired[float]
    holdout: NotRequired[float]
    time_column: NotRequired[str]
    entity_column: NotRequired[str]
    gap_hours: NotRequired[float]
    label_horizon_hours: NotRequired[float]


@dataclass(frozen=True)
class ModelSpec:
    """One model: a validated spec file, defaults filled in. ``raw`` is the JSON-able whole."""

    name: str
    path: str
    raw: Mapping[str, Any]
    features: FeatureSpec

    # Plain accessors: the raw dict is the single store of every value.
    @property
    def registered_model(self) -> str:
        return self.raw["registered_model"]

    @property
    def experiment(self) -> str:
        return self.raw["experiment"]

    @property
    def description(self) -> str:
        return self.raw["description"]

    @property
    def schedule(self) -> str | None:
        return self.raw["schedule"]

    @property
    def timezone(self) -> str:
        return self.raw["timezone"]

    @property
    def owner(self) -> str:
        return self.raw["owner"]

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.raw["tags"])

    @property
    def source(self) -> Mapping[str, Any]:
        """The flat source, or ``{"kind": "timeseries"}`` for a time-series spec (its tables are in
        :attr:`timeseries`)."""
        return self.raw["source"] if self.timeseries is None else {"kind": TIMESERIES}

    @property
    def target(self) -> str:
        return self.raw["target"]["column"] if self.timeseries is None else self.timeseries.label_column

    @property
    def positive_label(self) -> Any:
        return self.raw["target"]["positive"] if self.timeseries is None else 1

    @property
    def negative_label(self) -> Any:
        return self.raw["target"].get("negative") if self.timeseries is None else 0

    @property
    def drop(self) -> tuple[str, ...]:
        return tuple(self.raw["drop"])

    @property
    def id_columns(self) -> tuple[str, ...]:
        if self.timeseries is not None:
            return self.timeseries.id_columns
        return tuple(self.raw["id_columns"])

    @cached_property
    def timeseries(self) -> TimeSeriesConfig | None:
        """The typed ``timeseries`` section, or None for a flat-table spec."""
        from cmms_pm.timeseries.config import TimeSeriesConfig

        section = self.raw.get("timeseries")
        return TimeSeriesConfig.from_section(section) if section is not None else None

    @property
    def split(self) -> Split:
        """How batches are split, every applicable key resolved: ``strategy`` (``random`` for a flat
        spec without ``split``; always ``time`` for a time-series spec), ``validation``/``holdout``
        shares and, for time/group splits, the columns and ``gap_hours``."""
        given = dict(self.raw.get("split") or {})
        config = self.timeseries
        if config is None:
            strategy = given.get("strategy", "random")
            if strategy == "random":
                return {"strategy": "random"}
            resolved: Split = {"strategy": strategy, "validation": given.get("validation", 0.15)}
            resolved["holdout"] = given.get("holdout", 0.15)
            for key in ("time_column", "entity_column"):
                if key in given:
                    resolved[key] = given[key]
            if strategy == "time":
                resolved["gap_hours"] = float(given.get("gap_hours", 0))
            return resolved
        from cmms_pm.timeseries.config import SNAPSHOT_TIME

        resolved = {  # a time-series spec's split
            "strategy": "time",
            "time_column": SNAPSHOT_TIME,
            "gap_hours": float(given.get("gap_hours", config.horizon_hours)),
            "label_horizon_hours": config.horizon_hours,
            "validation": given.get("validation", 0.15),
            "holdout": given.get("holdout", 0.15),
        }
        if given.get("entity_column"):
            resolved["entity_column"] = given["entity_column"]
        return resolved

    @property
    def leakage_accept(self) -> tuple[str, ...]:
        """Feature columns kept knowingly although they leak the label (``leakage.accept``)."""
        return tuple(self.raw["leakage"]["accept"])

    @property
    def estimator(self) -> str:
        return self.raw["estimator"]["kind"]

    @property
    def estimator_params(self) -> Mapping[str, Any]:
        return self.raw["estimator"]["params"]

    @property
    def tuning(self) -> Mapping[str, Any] | None:
        """The hyperparameter search (``None``: the spec's hyperparameters are fitted once)."""
        return self.raw.get("tuning")

    @property
    def promotion(self) -> Promotion:
        return self.raw["promotion"]

    @property
    def decision(self) -> Mapping[str, Any]:
        return self.raw["decision"]

    @property
    def calibration(self) -> Mapping[str, Any]:
        return self.raw["calibration"]

    @property
    def explain(self) -> Mapping[str, Any]:
        return self.raw["explain"]

    @property
    def drift(self) -> Drift:
        return self.raw["drift"]

    @property
    def outcomes(self) -> Mapping[str, Any] | None:
        """The failure log and realized floor (``None``: outcomes are not measured)."""
        return self.raw.get("outcomes")

    @property
    def outcomes_dag_id(self) -> str:
        return f"{self.name}_outcomes"

    @property
    def validation(self) -> BatchValidation:
        return self.raw["validation"]

    @property
    def loading(self) -> Loading:
        return self.raw["loading"]

    @property
    def approval(self) -> Approval:
        return self.raw["approval"]

    @property
    def retention(self) -> Retention:
        """``keep_batches`` / ``keep_archived_versions`` (``None``: keep everything)."""
        return self.raw["retention"]

    @property
    def retries(self) -> Mapping[str, Any]:
        """Every task's ``attempts``, ``delay_seconds``, ``exponential_backoff``, ``max_delay_seconds``."""
        return self.raw["retries"]

    @property
    def notifications(self) -> Notifications:
        return self.raw["notifications"]

    @property
    def scoring(self) -> Mapping[str, Any]:
        return self.raw["scoring"]

    @property
    def scoring_source(self) -> Mapping[str, Any]:
        """What the scoring DAG scores: the scoring source, or ``{"kind": "timeseries"}`` (the latest
        snapshot of each asset, from the spec's own tables)."""
        return self.raw["scoring"].get("source") or {"kind": TIMESERIES}

    @property
    def serving(self) -> Mapping[str, Any]:
        return self.raw["serving"]

    @property
    def delivery(self) -> Mapping[str, Any]:
        return self.raw["delivery"]

    @property
    def training_dag_id(self) -> str:
        return f"{self.name}_training"

    @property
    def scoring_dag_id(self) -> str:
        return f"{self.name}_scoring"

    @property
    def promotion_pool(self) -> str:
        """Airflow pool (one slot) that serializes this model's promotions and rejections."""
        return f"mlflow_promotion_{self.name}"

    @property
    def scoring_experiment(self) -> str:
        return self.raw["scoring"]["experiment"]

    def to_dict(self) -> dict[str, Any]:
        """The whole spec as plain JSON values (what operators receive; :func:`from_dict` reverses it)."""
        return {"__path__": self.path, **copy.deepcopy(dict(self.raw))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        data = dict(data)
        path = data.pop("__path__", "<dict>")
        return build_spec(data, path=path)


def models_dir() -> Path:
    """Folder of the spec files: ``CMMS_MODELS_DIR``, default ``<project>/include/models``."""
    return Path(os.environ.get("CMMS_MODELS_DIR") or PROJECT_DIR / "include" / "models")


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return str(path)


def load_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """Read, validate and complete one spec file; :class:`SpecError` names the file and the field."""
    import yaml

    source = Path(path)
    shown = _display_path(source)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{shown}: cannot read the spec ({err.strerror})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{shown}: not valid YAML{where}: {getattr(err, 'problem', err)}") from err
    if not isinstance(data, dict):
        raise SpecError(f"{shown}: a spec is a mapping of fields, got {type(data).__name__}")
    spec = build_spec(data, path=shown)
    if source.stem != spec.name:
        raise SpecError(f"{shown}: name: {spec.name!r} must equal the file name {source.stem!r}")
    return spec


def load_specs(folder: str | os.PathLike[str] | None = None) -> tuple[list[ModelSpec], list[SpecError]]:
    """Every ``*.yaml`` spec of ``folder`` (default :func:`models_dir`): the good ones and the errors.

    One broken file never hides the others; two files with the same registered model are both refused.
    """
    root = Path(folder) if folder is not None else models_dir()
    specs: list[ModelSpec] = []
    errors: list[SpecError] = []
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            specs.append(load_spec(path))
        except SpecError as err:
            errors.append(err)
    by_model: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        by_model.setdefault(spec.registered_model, []).append(spec)
    for model, owners in by_model.items():
        if len(owners) > 1:
            for spec in owners:
                others = [o.path for o in owners if o is not spec]
                errors.append(SpecError(f"{spec.path}: registered_model: {model!r} is also used by {others}"))
                specs.remove(spec)
    return specs, errors


def build_spec(data: Mapping[str, Any], *, path: str = "<dict>") -> ModelSpec:
    """Validate a spec mapping against :data:`SPEC_SCHEMA` and the cross-field rules; fill defaults."""
    raw = copy.deepcopy(dict(data))
    problems = sorted(_describe(err) for err in _validator().iter_errors(raw))
    if problems:
        raise SpecError("; ".join(f"{path}: {problem}" for problem in problems))
    timeseries = "timeseries" in raw
    # A time-series spec scores its own tables: a scoring source (or a default one) means nothing.
    scoring_source_given = isinstance(raw.get("scoring"), dict) and "source" in raw["scoring"]
    _fill_defaults(raw, SPEC_SCHEMA)
    raw.setdefault("experiment", raw["name"])
    raw["scoring"].setdefault("experiment", f"{raw['experiment']}_scoring")
    if timeseries:
        if not scoring_source_given:
            raw["scoring"].pop("source", None)
        problems = _timeseries_problems(raw, scoring_source_given)
        if not problems:
            problems = _cross_field_problems(raw)
        features = None
    else:
        features = raw.setdefault("features", {})
        _fill_defaults(features, SPEC_SCHEMA["properties"]["features"])
        problems = _cross_field_problems(raw)
    if not problems:
        try:
            from cmms_pm.estimators import validate_hyperparameters

            raw["estimator"]["params"] = validate_hyperparameters(
                raw["estimator"]["kind"], raw["estimator"]["params"]
            )
        except SpecError as err:
            problems.append(f"estimator.params: {err}")
    if problems:
        raise SpecError("; ".join(f"{path}: {problem}" for problem in problems))
    if features is None:
        from cmms_pm.timeseries.config import TimeSeriesConfig, feature_spec_kwargs

        feature_spec = FeatureSpec(**feature_spec_kwargs(TimeSeriesConfig.from_section(raw["timeseries"])))
        return ModelSpec(name=raw["name"], path=path, raw=raw, features=feature_spec)
    feature_spec = FeatureSpec(
        numeric=tuple(features["numeric"]),
        integer=tuple(features["integer"]),
        categorical=tuple(features["categorical"]),
        infer=features["infer"],
        exclude=tuple(features["exclude"]),
        categories={k: tuple(v) for k, v in features["categories"].items()},
        ranges={k: (float(v[0]), float(v[1])) for k, v in features["ranges"].items()},
    )
    return ModelSpec(name=raw["name"], path=path, raw=raw, features=feature_spec)


@cache
def _validator() -> Any:
    import jsonschema

    jsonschema.Draft7Validator.check_schema(SPEC_SCHEMA)
    return jsonschema.Draft7Validator(SPEC_SCHEMA)


def _describe(err: Any) -> str:
    """``field.path: message``; for a ``oneOf`` (the source kinds), the branch whose ``kind`` matched."""
    import jsonschema

    if err.validator == "oneOf" and err.context:
        kind = err.instance.get("kind") if isinstance(err.instance, dict) else None
        same_kind = [e for e in err.context if kind is not None and not _is_kind_error(e)]
        branch = [e for e in same_kind if _branch_kind(err, e) == kind] or list(err.context)
        err = jsonschema.exceptions.best_match(branch)
    where = ".".join(str(part) for part in err.absolute_path) or "<spec>"
    return f"{where}: {err.message}"


def _is_kind_error(err: Any) -> bool:
    return list(err.relative_path)[-1:] == ["kind"]


def _branch_kind(parent: Any, err: Any) -> Any:
    index = err.relative_schema_path[0] if err.relative_schema_path else None
    try:
        return parent.validator_value[index]["properties"]["kind"]["const"]
    except (IndexError, KeyError, TypeError):
        return None


def _fill_defaults(instance: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Set every missing property that has a ``default`` in ``schema``, recursively (in place)."""
    for key, subschema in schema.get("properties", {}).items():
        if key not in instance and "default" in subschema:
            instance[key] = copy.deepcopy(subschema["default"])
        if isinstance(instance.get(key), dict) and "properties" in subschema:
            _fill_defaults(instance[key], subschema)
    for choice in schema.get("oneOf", []):
        kind = choice.get("properties", {}).get("kind", {}).get("const")
        if kind is not None and instance.get("kind") == kind:
            _fill_defaults(instance, choice)
    if "source" in instance and isinstance(instance["source"], dict):
        _fill_defaults(instance["source"], schema.get("properties", {}).get("source", {}))
    scoring = schema.get("properties", {}).get("scoring")
    if scoring and isinstance(instance.get("scoring"), dict):
        source = instance["scoring"].get("source")
        if isinstance(source, dict):
            _fill_defaults(source, scoring["properties"]["source"])


def _timeseries_problems(raw: Mapping[str, Any], scoring_source_given: bool) -> list[str]:
    """A time-series spec derives its source, target, features and ids: it may not also set them."""
    from cmms_pm.timeseries.config import TimeSeriesConfig

    problems = [
        f"{key}: a spec with a timeseries section derives it (remove {key}, or the timeseries section)"
        for key in ("source", "target", "features")
        if key in raw
    ]
    problems += [
        f"{key}: a time-series spec's ids are its entity and snapshot_time (remove {key})"
        for key in ("drop", "id_columns")
        if raw.get(key)
    ]
    if scoring_source_given:
        problems.append("scoring.source: a time-series spec scores the latest snapshot of its own tables")
    config = TimeSeriesConfig.from_section(raw["timeseries"])
    problems += config.problems()
    split = raw.get("split") or {}
    if split.get("strategy", "time") != "time":
        problems.append(f"split.strategy: a time-series spec splits by time, not {split['strategy']!r}")
    if split.get("time_column") not in (None, "snapshot_time"):
        problems.append("split.time_column: a time-series spec splits on its snapshot_time")
    if split.get("entity_column") not in (None, config.entity):
        problems.append(
            f"split.entity_column: only the entity {config.entity!r} can group a time-series split"
        )
    if "gap_hours" in split and split["gap_hours"] < config.horizon_hours:
        problems.append(
            f"split.gap_hours: {split['gap_hours']:g} is shorter than the label horizon "
            f"({config.horizon_hours:g} h): a training label would see the validation period"
        )
    return problems


def _split_problems(raw: Mapping[str, Any]) -> list[str]:
    """A flat spec's ``split``: a time split needs its time column, a group split its entity column."""
    split = raw.get("split") or {}
    strategy = split.get("strategy", "random")
    problems = []
    if strategy == "time" and not split.get("time_column"):
        problems.append("split.time_column: a time split needs the column that holds each row's time")
    if strategy == "group" and not split.get("entity_column"):
        problems.append("split.entity_column: a group split needs the column that names each row's entity")
    if strategy == "random" and set(split) - {"strategy", "validation", "holdout"}:
        extra = sorted(set(split) - {"strategy", "validation", "holdout"})
        problems.append(f"split: {extra} apply to time and group splits, not to strategy 'random'")
    if strategy == "group" and "gap_hours" in split:
        problems.append("split.gap_hours: applies to a time split")
    features = raw["features"]
    declared = {*features["categorical"], *features["numeric"], *features["integer"], raw["target"]["column"]}
    for key in ("time_column", "entity_column"):
        if split.get(key) in declared:
            problems.append(
                f"split.{key}: {split[key]!r} is a feature or the target; split columns never are"
            )
    return problems


def _retries_problems(retries: Mapping[str, Any]) -> list[str]:
    if retries["max_delay_seconds"] < retries["delay_seconds"]:
        return [
            f"retries.max_delay_seconds: {retries['max_delay_seconds']} is below "
            f"delay_seconds {retries['delay_seconds']}"
        ]
    return []


def _cross_field_problems(raw: Mapping[str, Any]) -> list[str]:
    """Rules JSON Schema cannot say: no column in two roles, declared-or-inferred features."""
    problems = []
    if "timeseries" in raw:
        # Its features, ids and source are derived (checked by _timeseries_problems); the model's
        # own sections are checked as for a flat spec (its ids: the entity and the snapshot time).
        return (
            _notification_problems(raw)
            + _tuning_problems(raw)
            + _decision_problems(raw["decision"])
            + _retries_problems(raw["retries"])
        )
    problems += _split_problems(raw)
    features = raw["features"]
    declared = [*features["categorical"], *features["numeric"], *features["integer"]]
    if not features["infer"] and not declared:
        problems.append("features: declare numeric/integer/categorical columns, or set infer: true")
    if features["infer"] and declared:
        problems.append("features: infer: true and declared columns exclude each other; choose one")
    seen: dict[str, str] = {}
    roles = [("target.column", [raw["target"]["column"]])]
    roles += [(f"features.{kind}", features[kind]) for kind in ("categorical", "numeric", "integer")]
    roles += [("drop", raw["drop"])]
    for role, columns in roles:
        for column in columns:
            if column in seen:
                problems.append(f"{role}: column {column!r} is already used as {seen[column]}")
            seen.setdefault(column, role)
    for column in raw["id_columns"]:
        if column not in raw["drop"]:
            problems.append(f"id_columns: {column!r} must also be listed in drop (ids are never features)")
    for key in ("categories", "ranges"):
        for column in features[key]:
            expected = (
                features["categorical"]
                if key == "categories"
                else [*features["numeric"], *features["integer"]]
            )
            if not features["infer"] and column not in expected:
                kind = "categorical" if key == "categories" else "numeric/integer"
                problems.append(f"features.{key}: {column!r} is not a declared {kind} feature")
    for column, (low, high) in features["ranges"].items():
        if low > high:
            problems.append(f"features.ranges.{column}: low {low} is above high {high}")
    negative = raw["target"].get("negative")
    if negative is not None and str(negative) == str(raw["target"]["positive"]):
        problems.append("target.negative: must differ from target.positive")
    problems += _notification_problems(raw)
    problems += _retries_problems(raw["retries"])
    source = raw["source"]
    if source["kind"] == "sql" and "table" in source and "timestamp_column" not in source:
        problems.append("source.timestamp_column: a table source needs it to select the run's data interval")
    problems.extend(_tuning_problems(raw))
    problems += _delivery_problems(raw)
    problems += _leakage_problems(raw)
    problems += _decision_problems(raw["decision"])
    problems += _outcomes_problems(raw)
    return problems


def _outcomes_problems(raw: Mapping[str, Any]) -> list[str]:
    """Outcomes match failures to predictions by asset: the predictions need an id column; a SQL
    table source selects by the log's time column unless it names its own."""
    outcomes = raw.get("outcomes")
    if not outcomes:
        return []
    problems = []
    if not raw["id_columns"]:
        problems.append(
            "outcomes: failures are matched to predictions per asset, named by id_columns: list one"
        )
    if outcomes["time_column"] == outcomes["entity_column"]:
        problems.append("outcomes.time_column: must differ from outcomes.entity_column")
    return problems


def _tuning_problems(raw: Mapping[str, Any]) -> list[str]:
    """A search space that fits the estimator: known tunable names, non-empty ranges within each
    hyperparameter's bounds, log ranges above 0, valid choices; n_trials within max_trials."""
    tuning = raw.get("tuning")
    if not tuning:
        return []
    from cmms_pm.estimators import UNTUNABLE, estimator, validate_hyperparameters

    kind = raw["estimator"]["kind"]
    est = estimator(kind)
    problems = []
    if tuning["n_trials"] > tuning["max_trials"]:
        problems.append(
            f"tuning.n_trials: {tuning['n_trials']} is above tuning.max_trials {tuning['max_trials']}"
        )
    for name, entry in tuning["space"].items():
        where = f"tuning.space.{name}"
        if name not in est.hyperparameters or name in UNTUNABLE:
            why = (
                "is a setting of the run, never tuned"
                if name in UNTUNABLE
                else f"is not a hyperparameter of {kind}"
            )
            problems.append(f"{where}: {name!r} {why} (tunable: {sorted(est.tunable)})")
            continue
        schema = est.hyperparameters[name]
        if "choices" in entry:
            if set(entry) != {"choices"}:
                problems.append(f"{where}: give either choices or a low/high range, not both")
            for choice in entry["choices"]:
                try:
                    validate_hyperparameters(kind, {name: choice})
                except SpecError as err:
                    problems.append(f"{where}: choice {choice!r} is invalid: {err}")
            continue
        if "enum" in schema or schema.get("type") not in ("integer", "number"):
            problems.append(f"{where}: {name} takes one of {schema.get('enum')}: give choices, not a range")
            continue
        if "low" not in entry or "high" not in entry:
            problems.append(f"{where}: a range needs low and high (or give choices)")
            continue
        low, high = entry["low"], entry["high"]
        if low >= high:
            problems.append(f"{where}: empty range: low {low} must be below high {high}")
        if entry.get("log") and low <= 0:
            problems.append(f"{where}: a log range must lie above 0 (low is {low})")
        if entry.get("log") and "step" in entry:
            problems.append(f"{where}: log and step exclude each other")
        if schema["type"] == "integer" and not all(
            float(v).is_integer() for v in (low, high, entry.get("step", 1))
        ):
            problems.append(f"{where}: {name} is an integer: low, high and step must be whole numbers")
        for bound in (low, high):
            try:
                validate_hyperparameters(kind, {name: int(bound) if schema["type"] == "integer" else bound})
            except (SpecError, ValueError, OverflowError) as err:
                problems.append(f"{where}: {bound} is outside the hyperparameter's bounds: {err}")
    return problems


def _leakage_problems(raw: Mapping[str, Any]) -> list[str]:
    """``leakage.accept`` names feature columns: declared ones, or (inferring) none dropped or excluded."""
    features = raw["features"]
    declared = {*features["categorical"], *features["numeric"], *features["integer"]}
    problems = []
    for column in raw["leakage"]["accept"]:
        if column == raw["target"]["column"]:
            problems.append(f"leakage.accept: {column!r} is the target column, never a feature")
        elif column in raw["drop"] or column in features["exclude"]:
            problems.append(f"leakage.accept: {column!r} is dropped or excluded, so never a feature")
        elif not features["infer"] and column not in declared:
            problems.append(f"leakage.accept: {column!r} is not a declared feature")
    return problems


def _notification_problems(raw: Mapping[str, Any]) -> list[str]:
    notifications = raw["notifications"]
    return [
        f"notifications.{key}: set, but notifications.email_to names no recipient"
        for key in ("email_conn_id", "email_from")
        if notifications[key] and not notifications["email_to"]
    ]


def _decision_problems(decision: Mapping[str, Any]) -> list[str]:
    """A strategy without its setting, or a setting its strategy does not read."""
    needs = {"precision_floor": "min_precision", "alert_budget": "alert_budget"}
    problems = []
    strategy = decision["strategy"]
    for other, key in needs.items():
        if strategy == other and key not in decision:
            problems.append(f"decision.{key}: the {other} strategy needs it")
        elif strategy != other and key in decision:
            problems.append(f"decision.{key}: set, but decision.strategy is {strategy!r}, which ignores it")
    return problems


def _delivery_problems(raw: Mapping[str, Any]) -> list[str]:
    """Delivered scores name their asset by the spec's id columns: a delivery needs at least one."""
    configured = [key for key in ("table", "webhook") if raw["delivery"].get(key)]
    if configured and not raw["id_columns"]:
        return [f"delivery.{configured[0]}: scores are delivered per asset, named by id_columns: list one"]
    return []


def spec_for_model(specs: list[ModelSpec], registered_model: str) -> ModelSpec | None:
    """The spec whose registered model is ``registered_model``, if any."""
    return next((spec for spec in specs if spec.registered_model == registered_model), None)


def safe_path_component(value: str) -> str:
    """``value`` made safe as one path component (run ids, model names in data-root paths)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", value)


#: The one-slot pool that serializes manual promotions (``model_promotion``, any model).
MANUAL_PROMOTION_POOL = "mlflow_promotion"


def pools(specs: list[ModelSpec]) -> dict[str, dict[str, Any]]:
    """Airflow pools the DAGs need (``airflow pools import`` format): one promotion slot per model."""
    found = {
        MANUAL_PROMOTION_POOL: {
            "slots": 1,
            "description": "Serializes manual MLflow promotions and rollbacks (model_promotion)",
            "include_deferred": False,
        }
    }
    for spec in specs:
        found[spec.promotion_pool] = {
            "slots": 1,
            "description": f"Serializes promotions and rejections of {spec.registered_model!r}",
            "include_deferred": False,
        }
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m cmms_pm.spec check`` (validate every spec) | ``pools`` (print the pools as JSON)."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m cmms_pm.spec", description=main.__doc__)
    parser.add_argument("command", choices=("check", "pools"))
    parser.add_argument("--models-dir", default=None, help="default: $CMMS_MODELS_DIR or include/models")
    args = parser.parse_args(argv)
    specs, errors = load_specs(args.models_dir)
    if args.command == "pools":
        print(json.dumps(pools(specs), indent=2, sort_keys=True))
    else:
        for spec in specs:
            dags = f"{spec.training_dag_id}, {spec.scoring_dag_id}"
            print(f"ok     {spec.path}: {dags} -> {spec.registered_model}")
        for error in errors:
            print(f"error  {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
