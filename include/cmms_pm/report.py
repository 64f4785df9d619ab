"""A plain-text summary of a training-to-promotion run, for the task log and notifications."""

from __future__ import annotations

from typing import Any

from cmms_pm.exceptions import DataValidationError

_REQUIRED = (
    "model_name",
    "version",
    "stage",
    "aliases",
    "challenger_f1",
    "champion_f1",
    "champion_version",
    "decision",
    "reason",
    "run_id",
    "data_version",
)
_OPTIONAL_LINKS = (
    ("thresholds", "alert thresholds"),
    ("policy", "policy"),
    ("drift", "drift"),
    ("periods", "periods"),
    ("tracking_uri", "tracking URI"),
    ("mlflow_ui_url", "MLflow UI"),
    ("airflow_ui_url", "Airflow UI"),
)


def _f1(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_summary(summary: dict[str, Any]) -> str:
    """Render the run summary as aligned ``label: value`` lines; absent optional links are omitted."""
    missing = [key for key in _REQUIRED if key not in summary]
    if missing:
        raise DataValidationError(f"summary is missing keys {missing}")
    champion = _f1(summary["champion_f1"])
    if summary["champion_version"] is not None:
        champion += f" (version {summary['champion_version']})"
    aliases = ", ".join(str(alias) for alias in summary["aliases"]) or "(none)"
    rows = [
        ("model", f"{summary['model_name']} version {summary['version']}"),
        ("stage", str(summary["stage"])),
        ("aliases", aliases),
        ("decision", str(summary["decision"]).upper()),
        ("reason", str(summary["reason"])),
        ("challenger F1", _f1(summary["challenger_f1"])),
        ("champion F1", champion),
        ("run id", str(summary["run_id"])),
        ("data version", str(summary["data_version"])),
    ]
    rows += [(label, str(summary[key])) for key, label in _OPTIONAL_LINKS if summary.get(key)]
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"Model {summary['model_name']!s}: {str(summary['decision']).lower()}"]
    lines += [f"  {label + ':':<{width}} {value}" for label, value in rows]
    return "\n".join(lines)
