"""The records that travel between tasks (through XCom) and between the plugin's modules.

They are JSON-able dicts, typed here once so every producer and consumer agrees on the keys (an
operator declares the ones it receives as class attributes: what ``execute`` sees once Airflow has
resolved the XComArg it was given at parse time). What a registry write did is the planner's
:class:`cmms_pm.registry_plan.Outcome`; the manifest of a batch is :class:`cmms_pm.batch.Manifest`.
``Stage`` names the registry stages (a ``StrEnum``: its members compare equal to MLflow's strings).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict

from cmms_pm.registry_plan import Outcome


class Stage(StrEnum):
    """Model-registry stages, the workflow the seed README teaches (aliases mirror two of them)."""

    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"


class TrainingResult(TypedDict):
    """What ``train_model`` returns: the MLflow run and the logged model."""

    run_id: str
    experiment_id: str
    model_uri: str
    metrics: dict[str, float]  # on the validation split at the chosen threshold
    threshold: float  # the decision threshold (version tag ``decision_threshold``)


class RegisteredVersion(TypedDict):
    """What ``register_model`` returns."""

    name: str
    version: str
    run_id: str


class DecisionRecord(TypedDict):
    """The challenger-vs-champion decision ``validate_model`` writes (``validation/decision.json``)."""

    model_name: str
    challenger_version: str
    challenger_run_id: str
    challenger_uri: str
    challenger_metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    challenger_data_end: str | None
    champion_data_end: str | None
    holdout_uri: str
    holdout_sha256: NotRequired[str | None]
    holdout_rows: int
    target: str
    thresholds: dict[str, Any]  # metric, threshold, min_improvement, allow_promotion, allow_older_data
    drift: dict[str, str]  # status, reason (from validate_data)
    decision: str  # "promote" | "reject"
    reason: str
    split: NotRequired[dict[str, Any]]  # the batch's split record (periods of a time split), when not random


class PromotionOutcome(Outcome, total=False):
    """What ``promote_model`` / ``reject_model`` return: the registry write's outcome and the decision
    (a promotion re-validated against a newer champion may have become a rejection)."""

    decision: str  # "promote" | "reject"
    reason: str
    revalidated: bool
    validation_reason: str  # a superseded rerun: the validation's own reason (``reason`` says why not)


class StageChange(TypedDict):
    """What a person's stage change returns (``promotion.change_stage``: the model-promotion DAG's
    ``change_stage`` step, the API's promote route): who moved which version where, and what it did."""

    name: str
    version: str
    stage: str
    previous_stage: str | None
    champion_before: str | None
    actor: str
    at: str
    reason: str
    kind: str  # "manual" | "rollback" | "approval"
    replaced: str | None
    unchanged: bool
    repairs: list[str]
    override: dict[str, Any] | None  # the rejected or timed-out approval it overrode (of, by, reason)


class ResolvedVersion(TypedDict):
    """What ``resolve_version`` returns (the model-promotion DAG): the version to move and the
    champion seen then, which the stage change compares and sets against."""

    version: str
    requested: str  # the version number asked for, or "previous" (a rollback)
    champion: str | None


class DataReport(TypedDict, total=False):
    """What ``validate_data`` returns: the batch checked against the spec and the champion's contract
    (``{}`` stands for no report: the operators that take one may be given none)."""

    rows: int
    splits: dict[str, Any]
    champion_version: str | None
    contract_check: dict[str, Any] | None  # cmms_pm.contract.ContractCheck.to_dict()
    drift: dict[str, Any] | None  # cmms_pm.drift.DriftReport.to_dict()
    drift_status: str  # "ok" | "warn" | "block" | "none" (no champion contract to compare with)
    drift_reason: str
    notes: list[str]
    leakage: dict[str, Any]  # cmms_pm.leakage.guard_record(): findings, accepted, excluded, notes


class AirflowRunRef(TypedDict, total=False):
    """The Airflow task that made a change (absent for a change made through the model API)."""

    dag_id: str
    run_id: str
    task_id: str


class HistoryEvent(TypedDict):
    """One entry of a registered model's append-only history (``cmms_mlflow.registry.history``).

    ``type``: promotion | rejection | rollback | stage_change | staging | approval | repair | prune
    (retention removed the artifacts of ``versions``).
    ``champion_before``/``champion_after`` are the "from → to" versions of the champion;
    ``version`` moved ``from_stage`` → ``to_stage``. ``changed`` is false when the request found
    its effect already in place (a retry, or promoting the champion again). ``repairs`` lists what
    a repair fixed. ``seq`` orders events (1, 2, …); ``recorded_at`` is when it was written.
    ``status``: ``pending`` (recorded before its writes, not completed yet), ``done``, or
    ``not_applied`` (its writer died before its writes took effect); ``settled`` says who completed
    it when it was not its writer. ``override``: the rejected or timed-out approval a promotion
    overrode (``of``, ``by``, ``reason``), else None.
    """

    seq: int
    key: str
    type: str
    model: str
    version: str | None
    versions: list[str] | None
    from_stage: str | None
    to_stage: str | None
    champion_before: str | None
    champion_after: str | None
    actor: str
    at: str
    reason: str
    changed: bool
    airflow: AirflowRunRef | None
    repairs: list[str]
    recorded_at: str
    status: NotRequired[str]
    settled: NotRequired[str]
    override: NotRequired[dict[str, Any] | None]
