"""The model API's request bodies and path parameters (pydantic), shared by its routes and its
authorization (a training request is authorized by the pipeline its body names)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from cmms_mlflow.www.model_overview import PLOT_ID_PATTERN
from cmms_pm.spec import MODEL_NAME_REGEX, SPEC_NAME_REGEX

ModelName = Annotated[str, Path(pattern=MODEL_NAME_REGEX, description="Registered model name")]
Version = Annotated[int, Path(gt=0, le=2_147_483_647, description="Model version (a positive integer)")]
PlotId = Annotated[str, Path(pattern=f"^{PLOT_ID_PATTERN}$", description="A plot of the run, e.g. 'drift'")]


class TrainRequest(BaseModel):
    """The seed's training request. Every value is checked against the model's trigger form."""

    model_config = ConfigDict(extra="forbid")

    modelName: str | None = Field(
        default=None, max_length=100, description="Registered model; default: the pipeline's own."
    )
    pipeline: str | None = Field(
        default=None,
        pattern=SPEC_NAME_REGEX,
        description="Model spec whose training DAG runs; default: the spec of modelName.",
    )
    datasetVersion: str | None = Field(
        default=None,
        max_length=1000,
        description="The data to train on: the spec's source or a .csv/.parquet path (data_source).",
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters of the spec's (or the chosen) estimator."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Other training parameters of the trigger form (thresholds, ...)."
    )


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["Staging", "Production", "Archived"]
    reason: str = Field(min_length=3, max_length=500)
    expectedChampion: int | None = Field(
        default=None,
        gt=0,
        description="Optional compare-and-set: 409 unless this version is the champion (null: none).",
    )
    overrideApproval: bool = Field(
        default=False,
        description="An approver promotes a version whose approval was rejected or timed out; "
        "the reason is recorded as the override's (409 without it, 403 for anyone else).",
    )


# --- answers -------------------------------------------------------------------------------------
# Every route declares its answer's model (FastAPI ``response_model``), so the OpenAPI schema types
# each answer. The routes serve them with ``response_model_exclude_unset``: an answer holds exactly
# the keys its read model produced, and a key a producer adds later (``extra="allow"``) is served
# before it is declared here, never dropped.


class Answer(BaseModel):
    """An answer of the model API (camelCase keys, as the seed's backend reads them)."""

    model_config = ConfigDict(extra="allow")


class Links(Answer):
    """Addresses on this Airflow and on the MLflow UI (None: not known)."""

    mlflowModel: str | None = None
    mlflowVersion: str | None = None
    mlflowRun: str | None = None
    airflowRun: str | None = None
    requiredActions: str | None = None


class ProductionModel(Answer):
    """``GET /models/{name}/production``: the champion."""

    name: str
    version: str
    runId: str | None = None
    stage: str
    aliases: list[str] = []
    modelUri: str
    metrics: dict[str, float] = {}
    validation: dict[str, str] = {}
    dataVersion: str | None = None
    promotedAt: str | None = None
    promotedBy: str | None = None
    promotionReason: str | None = None
    replacedVersion: str | None = None
    airflowRunUrl: str | None = None
    mlflowUrl: str | None = None
    warnings: list[str] = []


class AirflowRun(Answer):
    """The Airflow task that made a change (None for a change made through the model API)."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None


class HistoryEvent(Answer):
    """One entry of the model's append-only history, as stored (``cmms_mlflow.records.HistoryEvent``)."""

    seq: int
    key: str = ""
    type: str
    model: str | None = None
    version: str | None = None
    versions: list[str] | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    actor: str = ""
    at: str | None = None
    reason: str = ""
    changed: bool = True
    airflow: AirflowRun | None = None
    repairs: list[str] = []
    recorded_at: str | None = None
    status: str | None = None
    settled: str | None = None
    override: dict[str, Any] | None = None


class ModelHistory(Answer):
    """``GET /models/{name}/history``: a page of events, newest first."""

    name: str
    events: list[HistoryEvent]
    nextPageToken: str | None = None


class ModelPerformance(Answer):
    """``GET /models/{name}/performance``: each version's realized outcomes, as the outcomes DAG
    stored them (``cmms_mlflow.tracking.realized_outcomes``)."""

    name: str
    versions: list[dict[str, Any]]


class TrainResponse(Answer):
    """``POST /models/train``: the DAG run it created."""

    dagId: str
    dagRunId: str
    modelName: str
    conf: dict[str, Any]
    statusUrl: str


class StageChange(Answer):
    """``POST /models/{name}/versions/{v}/promote``: what the guarded promotion did."""

    name: str
    version: str
    stage: str
    previous_stage: str | None = None
    champion_before: str | None = None
    actor: str
    at: str
    reason: str
    kind: str
    replaced: str | None = None
    unchanged: bool
    repairs: list[Any] = []
    override: dict[str, Any] | None = None


class Drift(Answer):
    """A version's drift as validate_data measured it against the champion's data."""

    status: str
    maxPsi: float | None = None
    threshold: float | None = None
    action: str | None = None
    features: list[str] = []
    version: str | None = None


class Tuning(Answer):
    """A tuned version's study in brief."""

    study: str | None = None
    trials: int
    metric: str = ""
    bestValue: float | None = None
    bestSlot: str | None = None
    states: str | None = None


class ApprovalOverride(Answer):
    of: str
    by: str | None = None
    reason: str = ""


class VersionView(Answer):
    """One version as the Models page shows it."""

    version: str
    stage: str | None = None
    aliases: list[str] = []
    runId: str | None = None
    createdAt: str | None = None
    holdout: dict[str, float | None] = {}
    decisionThreshold: float | None = None
    validationMetrics: dict[str, float] = {}
    championF1AtValidation: float | None = None
    championVersionAtValidation: str | None = None
    status: str | None = None
    reason: str = ""
    dataVersion: str | None = None
    dataDigest: str | None = None
    estimator: str | None = None
    promotedAt: str | None = None
    promotedBy: str | None = None
    promotionReason: str | None = None
    approvalStatus: str | None = None
    approvalOverride: ApprovalOverride | None = None
    drift: Drift | None = None
    artifacts: str = "present"
    prunedAt: str | None = None
    prunedBy: str | None = None
    tuning: Tuning | None = None
    links: Links | None = None


class Decision(Answer):
    """One history event as the page shows it."""

    seq: int | None = None
    type: str | None = None
    decision: str
    version: str | None = None
    versions: list[str] = []
    fromStage: str | None = None
    toStage: str | None = None
    championBefore: str | None = None
    championAfter: str | None = None
    changed: bool = True
    by: str = ""
    at: str | None = None
    recordedAt: str | None = None
    reason: str = ""
    airflow: AirflowRun | None = None
    status: str = "done"
    override: dict[str, Any] | None = None
    links: Links | None = None


class HitlRequest(Answer):
    """Airflow's record of an approval request (the approval task's human-in-the-loop details)."""

    taskState: str | None = None
    assigned: list[str] = []
    answered: bool = False
    respondedBy: str | None = None
    respondedAt: str | None = None
    chosen: list[str] = []


class PendingApproval(Answer):
    """A version waiting for a person's answer, and Airflow's side of the request."""

    version: str
    stage: str | None = None
    requestedAt: str | None = None
    requestedBy: str | None = None
    timeoutHours: float | None = None
    expiresAt: str | None = None
    approvers: list[str] = []
    reason: str = ""
    holdoutF1: float | None = None
    championF1: float | None = None
    dagId: str | None = None
    runId: str | None = None
    taskId: str
    mapIndex: int
    links: Links | None = None
    airflow: HitlRequest | None = None
    canAnswer: bool = False


class SpecView(Answer):
    """The model's spec in brief."""

    name: str
    description: str = ""
    trainingDagId: str
    scoringDagId: str
    trainingDagUrl: str | None = None
    scoringDagUrl: str | None = None
    promotionMetric: str
    threshold: float
    approvers: list[str] = []


class DagRunView(Answer):
    """One of the latest runs of the model's training DAG."""

    runId: str
    state: str
    runAfter: str | None = None
    runType: str
    url: str | None = None


class Permissions(Answer):
    """Which actions the page may offer this user (each as its route would decide)."""

    promote: bool
    rollback: bool
    override: bool
    train: bool
    approve: bool


class ModelRow(Answer):
    """``GET /models/{name}`` and each row of ``GET /models``: one registered model."""

    name: str
    registered: bool
    versions: int
    champion: VersionView | None = None
    challenger: VersionView | None = None
    lastCandidate: VersionView | None = None
    previousChampion: str | None = None
    decisions: list[Decision] = []
    drift: Drift | None = None
    pendingApprovals: list[PendingApproval] = []
    links: Links | None = None
    spec: SpecView | None = None
    trainingRuns: list[DagRunView] = []
    permissions: Permissions
    promotionDagUrl: str | None = None


class ModelList(Answer):
    """``GET /models``: every model whose training DAG you may read."""

    models: list[ModelRow]
    mlflowUiUrl: str | None = None


class Outcomes(Answer):
    """A version's realized outcomes for its page: the window and the newest days."""

    window: Any = None
    windowDays: int | None = None
    knownUntil: str | None = None
    pending: Any = None
    days: list[dict[str, Any]] = []


class VersionDetail(VersionView):
    """``GET /models/{name}/versions/{v}``: one version, its decision record, plots, history."""

    name: str
    description: str = ""
    decisionRecord: dict[str, Any] | None = None
    history: list[Decision] = []
    plots: list[str] = []
    modelCard: str | None = None
    champion: str | None = None
    previousChampion: str | None = None
    outcomes: Outcomes | None = None
    permissions: Permissions
