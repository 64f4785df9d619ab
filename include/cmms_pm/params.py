"""A model's trigger form and run configuration, both derived from its spec.

:func:`training_params` turns a :class:`~cmms_pm.spec.ModelSpec` into the keyword arguments of
Airflow ``Param``s (JSON Schema + the form's ``title``/``section``/``description``): the DAG's
form, the REST API's conf validation and the model API's training request all use them, so an
invalid value is refused before a run exists, the same way everywhere. :func:`run_config` turns
the validated params of one run back into what the tasks do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cmms_pm.spec import COLUMN_NAME_PATTERN, ESTIMATOR_KINDS, MODEL_NAME_PATTERN, TIMESERIES, ModelSpec

SYNTHETIC = "synthetic"
SQL = "sql"
#: A file path or ``s3://`` URI ending in a supported suffix, one line, no query or fragment. The
#: allow-list of folders is checked when the run reads it (``cmms_pm.sources``).
FILE_SOURCE_PATTERN = r"(?![\s\S]*[\n\r])[^?#\s][^?#]{0,999}\.(csv|parquet|pq)"
#: A scoring run's ``snapshot_at``: an ISO 8601 date and time, optionally with its UTC offset.
SNAPSHOT_AT_PATTERN = (
    r"^(?![\s\S]*\n)\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$"
)
#: Hyperparameters of another estimator than the spec's, as a JSON object (checked at run start).
OTHER_HYPERPARAMETERS = "hyperparameters"

_METRIC_TITLES = {
    "f1": "F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "precision": "precision",
    "recall": "recall",
    "accuracy": "accuracy",
}


def metric_title(metric: str) -> str:
    return _METRIC_TITLES.get(metric, metric)


def threshold_param(spec: ModelSpec) -> str:
    """Name of the promotion threshold parameter: ``f1_threshold`` for an F1 policy, and so on."""
    return f"{spec.promotion['metric']}_threshold"


def data_source_default(spec: ModelSpec) -> str:
    source = spec.source
    if source["kind"] == "file":
        return source["path"]
    if source["kind"] == TIMESERIES:
        return TIMESERIES
    return SYNTHETIC if source["kind"] == "synthetic" else SQL


def _model_name_param(spec: ModelSpec, description: str, section: str, *, own_only: bool = False) -> dict:
    """The ``model_name`` field; ``own_only``: the spec's registered model is its only value (a spec
    owns its model: a run of its DAG writes to no other)."""
    return {
        "default": spec.registered_model,
        "type": "string",
        "pattern": MODEL_NAME_PATTERN,
        **({"enum": [spec.registered_model]} if own_only else {}),
        "title": "Registered model name",
        "description": description,
        "section": section,
    }


def training_params(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """``{name: Param kwargs}`` of ``spec``'s training DAG, defaults and bounds from the spec."""
    from cmms_pm.estimators import all_hyperparameters_schema, estimator

    chosen = estimator(spec.estimator)
    metric = metric_title(spec.promotion["metric"])
    kinds = [data_source_default(spec)] if spec.source["kind"] != "file" else []
    params: dict[str, dict[str, Any]] = {
        "model_name": _model_name_param(
            spec,
            "MLflow registered model that receives the new version: the spec's own (a spec's runs write "
            "to no other model).",
            "Model",
            own_only=True,
        ),
        "experiment_name": {
            "default": spec.experiment,
            "type": "string",
            "pattern": r"^(?![\s\S]*\n)\S.{0,199}$",
            "title": "MLflow experiment",
            "description": "Experiment that holds the training run (created if missing).",
            "section": "Model",
        },
        "estimator": {
            "default": spec.estimator,
            "type": "string",
            # A tuned spec's search space names this estimator's hyperparameters: no other one.
            "enum": [spec.estimator] if spec.tuning else list(ESTIMATOR_KINDS),
            "title": "Estimator",
            "description": f"The spec's choice is {spec.estimator!r} ({chosen.title}); another one "
            f"trains with its own defaults plus the '{OTHER_HYPERPARAMETERS}' object below.",
            "section": "Hyperparameters",
        },
    }
    for name, schema in chosen.hyperparameters.items():
        params[name] = {
            **{k: v for k, v in schema.items() if k not in ("default", "title")},
            "default": spec.estimator_params[name],
            "title": schema.get("title", name.replace("_", " ").capitalize()),
            "description": f"{chosen.title} {name} (used when the estimator is {spec.estimator!r}).",
            "section": "Hyperparameters",
        }
    params[OTHER_HYPERPARAMETERS] = {
        "default": {},
        **all_hyperparameters_schema(),
        "title": "Hyperparameters of another estimator",
        "description": 'JSON object, e.g. {"learning_rate": 0.05}; applies when the estimator above differs '
        "from the spec's. Names are checked against the chosen estimator when the run starts.",
        "section": "Hyperparameters",
    }
    params.update(tuning_params(spec))
    if spec.source["kind"] == "synthetic":
        params["n_samples"] = {
            "default": spec.source["n_samples"],
            "type": "integer",
            "minimum": 1000,
            "maximum": 50_000_000,
            "title": "Synthetic samples",
            "description": "Rows of synthetic telemetry to generate (ignored for a file source).",
            "section": "Data",
        }
    params["data_source"] = {
        "default": data_source_default(spec),
        "type": "string",
        "pattern": f"^({'|'.join(kinds + ([] if spec.timeseries else [FILE_SOURCE_PATTERN]))})$",
        "title": "Data source",
        "description": (
            "'timeseries': the spec's telemetry and event logs, as of the run's data interval end."
            if spec.timeseries
            else "".join(f"{kind!r}, or " for kind in kinds)
            + "the path of a .csv or .parquet file under an allowed data folder (relative to the data "
            "root, or s3:// through the spec's AWS connection)."
        ),
        "section": "Data",
    }
    params["target_column"] = {
        "default": spec.target,
        "type": "string",
        # A time-series label is built from the failures log: its name follows from the spec.
        **({"enum": [spec.target]} if spec.timeseries else {"pattern": COLUMN_NAME_PATTERN}),
        "title": "Target column",
        "description": f"Label column; {spec.positive_label!r} is a failure (the positive class).",
        "section": "Data",
    }
    params["accept_schema_change"] = {
        "default": False,
        "type": "boolean",
        "title": "Accept a schema change",
        "description": "Train even if the batch's columns differ from the champion's training data "
        "(added, removed or retyped columns); off, such a batch fails validate_data.",
        "section": "Data",
    }
    params[threshold_param(spec)] = {
        "default": spec.promotion["threshold"],
        "type": "number",
        "minimum": 0.0,
        "maximum": 1.0,
        "title": f"{metric} threshold",
        "description": f"Minimum holdout {metric} for promotion to Production.",
        "section": "Promotion",
    }
    params["min_improvement"] = {
        "default": spec.promotion["min_improvement"],
        "type": "number",
        "minimum": -1.0,
        "maximum": 1.0,
        "title": "Minimum improvement over the champion",
        "description": f"The challenger's holdout {metric} must reach the champion's + this value.",
        "section": "Promotion",
    }
    params["promote_older_data"] = {
        "default": spec.promotion["promote_older_data"],
        "type": "boolean",
        "title": "Allow promotion of a model trained on older data",
        "description": "Off (default): a run whose data interval ends before the champion's (a backfill) "
        "never replaces it, whatever its score.",
        "section": "Promotion",
    }
    params["allow_promotion"] = {
        "default": spec.promotion["allow_promotion"],
        "type": "boolean",
        "title": "Allow promotion",
        "description": "If off, the run validates and reports but never changes Production.",
        "section": "Promotion",
    }
    required = bool(spec.approval["required"])
    params["require_approval"] = {
        "default": required,
        "type": "boolean",
        # A spec that requires approval cannot be switched off by whoever triggers a run.
        **({"enum": [True]} if required else {}),
        "title": "Require human approval",
        "description": "On: a version that passes validation waits for a person to approve it in "
        "Airflow (Required actions) before it goes to Production."
        + (" This model's spec requires it." if required else ""),
        "section": "Approval",
    }
    params["approval_timeout_hours"] = {
        "default": spec.approval["timeout_hours"],
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 8760,
        "title": "Approval timeout (hours)",
        "description": "No answer within this time: the version is not promoted; it is archived with "
        "the reason 'approval timed out'.",
        "section": "Approval",
    }
    return params


def tuning_params(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """The tuning field of the trigger form (``n_trials``, within the spec's cap); none untuned."""
    tuning = spec.tuning
    if not tuning:
        return {}
    tuned = ", ".join(sorted(tuning["space"]))
    return {
        "n_trials": {
            "default": tuning["n_trials"],
            "type": "integer",
            "minimum": 1,
            "maximum": tuning["max_trials"],
            "title": "Tuning trials",
            "description": f"Optuna trials searching {tuned} on the validation {tuning['metric']} (at most "
            f"{tuning['max_trials']}, the spec's cap); the best trial's values train the model and replace "
            "the form's values of those hyperparameters.",
            "section": "Tuning",
        }
    }


def approval_required(spec: ModelSpec, params: Mapping[str, Any]) -> bool:
    """Whether a run must wait for a person before Production: the spec says so, or the run asks.

    A run can add the approval step, never remove one its spec requires.
    """
    return bool(spec.approval["required"]) or bool(params.get("require_approval", False))


def scoring_params(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """``{name: Param kwargs}`` of ``spec``'s scoring DAG."""
    source = spec.scoring_source
    params: dict[str, dict[str, Any]] = {
        "model_name": _model_name_param(
            spec, "Model whose champion scores (a run triggered by a promotion scores that model).", "Scoring"
        )
    }
    if source["kind"] == "synthetic":
        params["n_units"] = {
            "default": source.get("n_units", 500),
            "type": "integer",
            "minimum": 1,
            "maximum": 50_000_000,
            "title": "Fleet size",
            "description": "Units in the (synthetic) fleet snapshot.",
            "section": "Scoring",
        }
    params["risk_threshold"] = {
        "default": spec.scoring["risk_threshold"],
        "type": ["null", "number"],
        "minimum": 0.0,
        "maximum": 1.0,
        "title": "Risk threshold (override)",
        "description": "Empty: each champion alerts at its own decision threshold (chosen on its validation "
        "data). A number overrides it for this run: a row is at risk from this failure probability.",
        "section": "Scoring",
    }
    if spec.timeseries is not None:
        params["snapshot_at"] = {
            "default": None,
            "type": ["null", "string"],
            "pattern": SNAPSHOT_AT_PATTERN,
            "title": "Score as of",
            "description": "ISO 8601 time (UTC unless it says otherwise) whose latest snapshot is scored, "
            "reading only data stamped up to it; empty: the run's time.",
            "section": "Scoring",
        }
    return params


def conf_schema(params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """JSON Schema of a whole run conf (unknown keys refused, so a typo is not silently dropped)."""
    return {"type": "object", "properties": dict(params), "additionalProperties": False}


def validate_conf(params: Mapping[str, Mapping[str, Any]], conf: Mapping[str, Any]) -> dict[str, Any]:
    """The full conf (defaults filled in), or ``InvalidParamsError`` naming every problem."""
    import jsonschema

    from cmms_pm.exceptions import InvalidParamsError

    validator = jsonschema.Draft7Validator(conf_schema(params))
    problems = sorted(
        f"{'.'.join(map(str, err.absolute_path)) or '<conf>'}: {err.message}"
        for err in validator.iter_errors(conf)
    )
    if problems:
        raise InvalidParamsError(problems)
    return {name: spec["default"] for name, spec in params.items()} | dict(conf)


@dataclass(frozen=True)
class RunConfig:
    """What one training run does: the spec, overridden by the run's validated params."""

    spec: ModelSpec
    model_name: str
    experiment: str
    estimator: str
    hyperparameters: Mapping[str, Any]
    data_source: str
    n_samples: int | None
    target: str
    metric: str
    threshold: float
    min_improvement: float
    promote_older_data: bool
    allow_promotion: bool
    accept_schema_change: bool
    require_approval: bool = False
    approval_timeout_hours: float = 24.0
    notes: tuple[str, ...] = field(default=())
    #: Tuning trials of this run (``None``: the spec does not tune).
    n_trials: int | None = None

    @property
    def thresholds(self) -> dict[str, Any]:
        """The promotion settings as recorded in the decision record."""
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "min_improvement": self.min_improvement,
            "allow_promotion": self.allow_promotion,
            "allow_older_data": self.promote_older_data,
        }


def check_own_model(spec: ModelSpec, model_name: Any) -> None:
    """``InvalidParamsError`` unless ``model_name`` is ``spec``'s registered model: the second line of
    defence (the form refuses any other before a run exists) for a run whose conf was never validated
    against this form (a run created before it, a cleared old run)."""
    from cmms_pm.exceptions import InvalidParamsError

    if model_name != spec.registered_model:
        raise InvalidParamsError(
            [
                f"model_name: {model_name!r} is not spec {spec.name!r}'s registered model "
                f"{spec.registered_model!r}; a spec's runs write only to the model it owns"
            ]
        )


def run_config(spec: ModelSpec, params: Mapping[str, Any]) -> RunConfig:
    """Resolve a run's params (as Airflow validated them) against the spec; ``InvalidParamsError`` if
    the estimator's hyperparameters do not fit it (the one check a form cannot make up front) or the
    run names another model than the spec's own."""
    from cmms_pm.estimators import estimator, validate_hyperparameters
    from cmms_pm.exceptions import InvalidParamsError, SpecError

    values = {name: p["default"] for name, p in training_params(spec).items()} | dict(params)
    check_own_model(spec, values["model_name"])
    kind = values["estimator"]
    notes = []
    if kind == spec.estimator:
        chosen = {name: values[name] for name in estimator(kind).hyperparameters}
    else:
        chosen = {}
        notes.append(f"estimator {kind!r} overrides the spec's {spec.estimator!r}: its defaults apply")
    try:
        hyperparameters = validate_hyperparameters(kind, {**chosen, **(values[OTHER_HYPERPARAMETERS] or {})})
    except SpecError as err:
        raise InvalidParamsError([f"{OTHER_HYPERPARAMETERS}: {err}"]) from err
    metric = spec.promotion["metric"]
    return RunConfig(
        spec=spec,
        model_name=values["model_name"],
        experiment=values["experiment_name"],
        estimator=kind,
        hyperparameters=hyperparameters,
        data_source=values["data_source"],
        n_samples=values.get("n_samples"),
        target=values["target_column"],
        metric=metric,
        threshold=float(values[threshold_param(spec)]),
        min_improvement=float(values["min_improvement"]),
        promote_older_data=bool(values["promote_older_data"]),
        allow_promotion=bool(values["allow_promotion"]),
        accept_schema_change=bool(values["accept_schema_change"]),
        require_approval=approval_required(spec, values),
        approval_timeout_hours=float(values["approval_timeout_hours"]),
        notes=tuple(notes),
        n_trials=int(values["n_trials"]) if spec.tuning else None,
    )
