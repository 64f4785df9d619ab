"""Batch scoring: the rows to score (the synthetic fleet's latest readings, or the user's), their
failure risk and contract flags, and a short summary.

Pure domain code (no Airflow, no MLflow): the caller loads the model and decides where files go.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cmms_pm.schema import FEATURES

DEFAULT_FLEET_SIZE = 500
RISK_THRESHOLD = 0.5
TOP_AT_RISK = 10


def latest_telemetry(as_of: str, n_units: int = DEFAULT_FLEET_SIZE) -> pd.DataFrame:
    """The latest reading of each of ``n_units`` units (``equipment_id`` + FEATURES) as of ``as_of``.

    Synthetic and seeded by ``as_of``, like the training batches: the same time gives the same fleet.
    """
    from cmms_pm.data import generate_telemetry, interval_seed

    frame = generate_telemetry(n_units, interval_seed(as_of, as_of))[FEATURES]
    frame.insert(0, "equipment_id", [f"EQ-{i:05d}" for i in range(1, n_units + 1)])
    return frame


def score_frame(
    model: Any,
    frame: pd.DataFrame,
    *,
    id_columns: Sequence[str],
    flags: pd.DataFrame | None,
    model_name: str,
    model_version: str,
    scored_at: str,
    threshold: float = RISK_THRESHOLD,
    explain: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per input row: its ids, failure probability, at-risk flag, contract flags, who scored when.

    Rows that break the champion's data contract (``flags`` from ``cmms_pm.contract.flag_rows``) are
    scored too, but never silently: ``contract_ok`` is False and ``contract_issues`` says why.
    ``threshold`` is the one the rows were flagged at (``decision_threshold`` column); ``explain``
    (the spec's section) adds the reason columns (:func:`reason_columns`).
    """
    from cmms_pm.training import positive_proba

    proba = positive_proba(model, frame).astype("float64")
    ids = [column for column in id_columns if column in frame.columns]
    out = pd.DataFrame({column: _by_position(frame[column]) for column in ids})
    out["failure_probability"] = proba
    out["at_risk"] = proba >= threshold
    if flags is not None:
        issues = flags["contract_issues"].astype("str")
        out["contract_ok"] = (issues == "").to_numpy()
        out["contract_issues"] = issues.array
    else:
        out["contract_ok"] = True
        out["contract_issues"] = ""
    out["model_name"] = model_name
    out["model_version"] = str(model_version)
    out["scored_at"] = pd.Timestamp(scored_at)
    out["decision_threshold"] = float(threshold)
    if explain and int(explain.get("reasons", 0)) > 0:
        reasons = reason_columns(model, frame, proba, out["at_risk"].to_numpy(), **explain)
        out = pd.concat([out, reasons.set_axis(out.index)], axis=1)
    return out


def reason_columns(
    model: Any,
    frame: pd.DataFrame,
    proba: Any,
    at_risk: Any,
    *,
    reasons: int = 3,
    scope: str = "at_risk",
    max_rows: int = 1_000,
    method: str = "exact",
) -> pd.DataFrame:
    """``reason_1`` … ``reason_k`` (feature names) and ``reason_1_contribution`` … (floats), one row
    per row of ``frame``: each row's features that pushed its risk up most (``cmms_pm.explain``).

    Flat columns, so the Parquet file and a SQL table read them without JSON. Only the rows of
    ``scope`` (``at_risk``, or ``all``) are explained, the riskiest ``max_rows`` of them at most
    (exact Tree SHAP on a 100-tree forest costs ~5-15 ms a row; ``method: approximate`` is ~100x
    faster, see ``cmms_pm.explain.contributions``); ``reasons_explained`` says which rows were.
    Contributions are on the classifier's own output before calibration.
    """
    import numpy as np

    from cmms_pm.explain import contributions, reasons_from

    p = np.asarray(proba, dtype=float)
    candidates = np.flatnonzero(np.asarray(at_risk, dtype=bool)) if scope == "at_risk" else np.arange(len(p))
    if len(candidates) > max_rows:
        candidates = candidates[np.argsort(-p[candidates], kind="stable")[:max_rows]]
    candidates = np.sort(candidates)
    names = np.full((len(p), reasons), None, dtype=object)
    values = np.full((len(p), reasons), np.nan)
    if len(candidates):
        explained, _ = contributions(model, frame.iloc[candidates], approximate=method == "approximate")
        for row, row_reasons in zip(candidates, reasons_from(explained, reasons), strict=True):
            for i, reason in enumerate(row_reasons):
                names[row, i] = reason["feature"]
                values[row, i] = reason["contribution"]
    columns: dict[str, Any] = {}
    for i in range(reasons):
        columns[f"reason_{i + 1}"] = pd.array(names[:, i], dtype="str")
        columns[f"reason_{i + 1}_contribution"] = values[:, i]
    flags = np.zeros(len(p), dtype=bool)
    flags[candidates] = True
    columns["reasons_explained"] = flags
    return pd.DataFrame(columns)


def _by_position(series: pd.Series) -> Any:
    """A column's values without its index: text as the Arrow array it is (``to_numpy`` would make a
    million Python strings that the output frame turns back into Arrow), anything else as before."""
    if isinstance(series.dtype, pd.StringDtype):
        return series.array
    return series.to_numpy()


def summarize(
    predictions: pd.DataFrame,
    *,
    threshold: float = RISK_THRESHOLD,
    id_columns: Sequence[str] = (),
    flags: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Rows scored, at risk and flagged by the contract (per reason), the riskiest rows, as JSON values."""
    at_risk = int(predictions["at_risk"].sum())
    top = predictions.nlargest(TOP_AT_RISK, "failure_probability")
    ids = [c for c in id_columns if c in predictions.columns]
    flagged = {
        reason: int(flags[reason].sum())
        for reason in ("unseen_category", "missing_value", "out_of_range", "stale_telemetry")
        if flags is not None and reason in flags.columns
    }
    if "contract_issues" in predictions.columns:
        unscored = int((predictions["contract_issues"] == "missing_telemetry").sum())
        if unscored:
            flagged["missing_telemetry"] = unscored
    return {
        "units": int(len(predictions)),
        "at_risk": at_risk,
        "at_risk_rate": float(at_risk / len(predictions)) if len(predictions) else 0.0,
        "threshold": float(threshold),
        "flagged": int((~predictions["contract_ok"]).sum()),
        "flagged_by_reason": flagged,
        "riskiest": [
            {
                **{column: str(row[column]) for column in ids},
                "failure_probability": round(float(row["failure_probability"]), 4),
                "contract_ok": bool(row["contract_ok"]),
            }
            for _, row in top.iterrows()
        ],
        "model_name": str(predictions["model_name"].iloc[0]) if len(predictions) else "",
        "model_version": str(predictions["model_version"].iloc[0]) if len(predictions) else "",
    }


# --- time-series specs: each asset's latest snapshot ---------------------------------------------


def flag_telemetry(
    flags: pd.DataFrame | None, frame: pd.DataFrame, *, stale_after_hours: float
) -> pd.DataFrame:
    """The contract flags of ``frame``'s rows with stale telemetry added: a ``stale_telemetry`` column
    and ``stale_telemetry:<age>h`` in ``contract_issues`` (a stale row is scored, never silently)."""
    from cmms_pm.timeseries.scoring import STALE, telemetry_flags

    stale, notes = telemetry_flags(frame, stale_after_hours=stale_after_hours)
    out = flags.copy() if flags is not None else pd.DataFrame({"contract_issues": [""] * len(frame)})
    earlier = out["contract_issues"].astype("str").tolist()
    out["contract_issues"] = ["; ".join(p for p in pair if p) for pair in zip(earlier, notes, strict=True)]
    out[STALE] = stale
    return out


def add_snapshot_columns(
    predictions: pd.DataFrame,
    frame: pd.DataFrame,
    *,
    missing: Sequence[str],
    entity: str,
    snapshot_time: str,
    model_name: str,
    model_version: str,
    scored_at: str,
) -> pd.DataFrame:
    """``telemetry_age_hours`` beside each prediction, then one unscored row per asset without
    telemetry (``failure_probability`` empty, ``contract_issues`` ``missing_telemetry``)."""
    from cmms_pm.timeseries.config import SNAPSHOT_TIME, TELEMETRY_AGE
    from cmms_pm.timeseries.scoring import MISSING

    out = predictions.assign(**{TELEMETRY_AGE: frame[TELEMETRY_AGE].to_numpy(dtype="float64")})
    if not missing:
        return out
    blank = pd.DataFrame(
        {
            entity: pd.array(list(missing), dtype="str"),
            SNAPSHOT_TIME: pd.Timestamp(snapshot_time),
            "failure_probability": float("nan"),
            "at_risk": False,
            "contract_ok": False,
            "contract_issues": MISSING,
            TELEMETRY_AGE: float("nan"),
            "model_name": model_name,
            "model_version": str(model_version),
            "scored_at": pd.Timestamp(scored_at),
        }
    )
    if not len(out):
        return blank
    return pd.concat([out, blank], ignore_index=True)
