"""Shared, session-scoped data for the ``cmms_pm`` tests: generating and fitting once keeps the suite fast."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from cmms_pm.data import generate_telemetry, split_frame
from cmms_pm.spec import ModelSpec
from cmms_pm.training import fit_model

SEED = 20240601


@pytest.fixture(scope="session")
def telemetry() -> pd.DataFrame:
    """5 000 synthetic rows: the size the quality bar is set for."""
    return generate_telemetry(5_000, SEED)


@pytest.fixture(scope="session")
def splits(telemetry: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return split_frame(telemetry, SEED)


@pytest.fixture(scope="session")
def fit(shipped_spec: ModelSpec):
    """``fit(train, estimator=..., **hyperparameters)`` with the shipped spec's features."""

    def _fit(train: pd.DataFrame, estimator: str = "random_forest", **hyperparameters) -> Pipeline:
        return fit_model(
            train,
            features=shipped_spec.features,
            target=shipped_spec.target,
            estimator=estimator,
            hyperparameters=hyperparameters,
        )

    return _fit


@pytest.fixture(scope="session")
def default_model(splits: dict[str, pd.DataFrame], fit) -> Pipeline:
    return fit(splits["train"])


@pytest.fixture
def valid_frame(telemetry: pd.DataFrame) -> pd.DataFrame:
    """A fresh copy of a small valid frame that a test may corrupt."""
    return telemetry.head(400).copy()
