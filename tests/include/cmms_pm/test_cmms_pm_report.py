"""The human-readable run summary shows the key facts and omits what is not known."""

from __future__ import annotations

import pytest

from cmms_pm.exceptions import DataValidationError
from cmms_pm.report import format_summary

SUMMARY = {
    "model_name": "predictive_maintenance_rf",
    "version": "3",
    "stage": "Production",
    "aliases": ["champion", "prod"],
    "challenger_f1": 0.91234,
    "champion_f1": 0.9,
    "champion_version": "2",
    "decision": "promoted",
    "reason": "challenger F1 0.9123 ≥ champion F1 0.9000 + 0.0000",
    "run_id": "0123abcd",
    "data_version": "2024-06-01/2024-06-02",
}


def test_summary_contains_the_key_facts():
    text = format_summary(
        {**SUMMARY, "tracking_uri": "http://mlflow:5000", "mlflow_ui_url": "http://mlflow:5000/#/models"}
    )
    for fact in (
        "predictive_maintenance_rf",
        "version 3",
        "Production",
        "champion, prod",
        "PROMOTED",
        SUMMARY["reason"],
        "0.9123",
        "0.9000 (version 2)",
        "0123abcd",
        "2024-06-01/2024-06-02",
        "http://mlflow:5000",
        "http://mlflow:5000/#/models",
    ):
        assert fact in text, fact
    assert len(text.splitlines()) > 5


def test_missing_optional_links_are_omitted():
    text = format_summary(SUMMARY)
    assert "tracking URI" not in text
    assert "MLflow UI" not in text
    assert "Airflow UI" not in text


def test_missing_champion_shows_not_available():
    text = format_summary({**SUMMARY, "champion_f1": None, "champion_version": None, "aliases": []})
    champion_line = next(line for line in text.splitlines() if line.strip().startswith("champion F1:"))
    assert champion_line.strip().endswith("n/a")
    assert "(none)" in text


def test_summary_without_required_keys_names_them():
    incomplete = {key: value for key, value in SUMMARY.items() if key not in ("run_id", "decision")}
    with pytest.raises(DataValidationError, match=r"missing keys \['decision', 'run_id'\]"):
        format_summary(incomplete)
