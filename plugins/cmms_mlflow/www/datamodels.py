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
