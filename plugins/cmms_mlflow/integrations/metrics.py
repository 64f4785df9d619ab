"""The pipeline's own figures, through Airflow's metrics (StatsD or OpenTelemetry, as configured).

Names (after Airflow's ``[metrics] statsd_prefix``, default ``airflow``; ``<model>`` is the
registered model name with ``.`` turned into ``_``):

===========================================  =======  ==========================================
``cmms.<model>.holdout_f1.challenger``       gauge    challenger F1 on the holdout (validate_model)
``cmms.<model>.holdout_f1.champion``         gauge    champion F1 on the same holdout (if any)
``cmms.<model>.drift.max_psi``               gauge    highest PSI of the batch vs. the champion's data
``cmms.<model>.drift.features_drifted``      gauge    features above the spec's PSI threshold
``cmms.<model>.decision.promoted``           counter  +1 per promotion by the training DAG
``cmms.<model>.decision.rejected``           counter  +1 per rejected challenger
``cmms.<model>.decision.manual``             counter  +1 per stage change by ``model_promotion``
``cmms.<model>.decision.rollback``           counter  +1 per rollback by ``model_promotion``
``cmms.<model>.scoring.rows_scored``         counter  rows scored by the scoring DAG
``cmms.<model>.scoring.rows_at_risk``        counter  rows at or above the risk threshold
``cmms.<model>.scoring.rows_flagged``        counter  rows flagged by the champion's data contract
===========================================  =======  ==========================================

Task processes send them with the task SDK's ``Stats`` (initialized by the task runner from the
``[metrics]`` settings); with metrics off they go nowhere. A metric never fails a task.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "cmms"


def metric_name(model: str, *parts: str) -> str:
    """``cmms.<model>.<parts...>`` with the model name made a single StatsD path segment."""
    segment = re.sub(r"[^A-Za-z0-9_-]", "_", model)
    return ".".join((PREFIX, segment, *parts))


def _gauge(name: str, value: float) -> None:
    try:
        from airflow.sdk.observability.stats import Stats

        Stats.gauge(name, value)
    except Exception:  # a metric must never fail the pipeline
        log.warning("Could not send metric %s", name, exc_info=True)


def _incr(name: str, count: int = 1) -> None:
    try:
        from airflow.sdk.observability.stats import Stats

        Stats.incr(name, count)
    except Exception:
        log.warning("Could not send metric %s", name, exc_info=True)


def holdout_f1(model: str, challenger: float | None, champion: float | None) -> None:
    if challenger is not None:
        _gauge(metric_name(model, "holdout_f1", "challenger"), float(challenger))
    if champion is not None:
        _gauge(metric_name(model, "holdout_f1", "champion"), float(champion))


def drift(model: str, max_psi: float, features_drifted: int) -> None:
    _gauge(metric_name(model, "drift", "max_psi"), float(max_psi))
    _gauge(metric_name(model, "drift", "features_drifted"), int(features_drifted))


def decision(model: str, kind: str) -> None:
    """``kind``: ``promoted``, ``rejected``, ``manual`` or ``rollback``."""
    _incr(metric_name(model, "decision", kind))


def scoring(model: str, *, scored: int, at_risk: int, flagged: int) -> None:
    _incr(metric_name(model, "scoring", "rows_scored"), int(scored))
    _incr(metric_name(model, "scoring", "rows_at_risk"), int(at_risk))
    _incr(metric_name(model, "scoring", "rows_flagged"), int(flagged))


def outcomes(model: str, window: Mapping[str, Any] | None) -> None:
    """The champion's realized figures over the spec's window (nothing when nothing has matured)."""
    if not window:
        return
    for key in ("f1", "recall", "precision", "failures_missed"):
        if window.get(key) is not None:
            _gauge(metric_name(model, "outcomes", key), float(window[key]))


def retrain_requested(model: str) -> None:
    _incr(metric_name(model, "outcomes", "retrain_requested"))
