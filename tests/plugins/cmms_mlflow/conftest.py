"""Shared fixtures of the plugin tests."""

from __future__ import annotations

import pytest

INTERVAL = ("2026-03-31T02:00:00+00:00", "2026-04-01T02:00:00+00:00")


@pytest.fixture(scope="session")
def small_batch(tmp_path_factory) -> dict:
    """Manifest of a written 2 000-row synthetic batch (train/validation/holdout Parquet)."""
    from cmms_pm.batch import prepare_batch

    return prepare_batch(
        source="synthetic",
        n_samples=2000,
        target_column="failure_within_7d",
        interval_start=INTERVAL[0],
        interval_end=INTERVAL[1],
        out_uri=str(tmp_path_factory.mktemp("small-batch")),
    )
