"""The champion/challenger promotion rule, as a pure function with a human-readable reason."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime

from cmms_pm.exceptions import DataValidationError

_TOLERANCE = 1e-12
"""Absorbs float noise so an F1 that equals the bar after arithmetic still meets it."""


@dataclass(frozen=True)
class Decision:
    """Whether to promote the challenger, and a sentence saying why (shown in logs and the summary)."""

    promote: bool
    reason: str

    def as_dict(self) -> dict[str, bool | str]:
        return asdict(self)


def decide_promotion(
    *,
    challenger_score: float,
    champion_score: float | None,
    threshold: float,
    min_improvement: float,
    allow_promotion: bool,
    metric: str = "f1",
    challenger_data_end: str | None = None,
    champion_data_end: str | None = None,
    allow_older_data: bool = False,
    drift_status: str = "ok",
    drift_reason: str = "",
) -> Decision:
    """Promote iff allowed, the challenger meets the threshold and beats the champion by the margin.

    Gates are checked threshold → champion → data freshness → drift → ``allow_promotion`` so a
    disabled run still reports whether the challenger would have qualified. Ties with
    ``min_improvement=0`` promote. A challenger whose data interval ends before the champion's
    (a backfill of an older day) never replaces it unless ``allow_older_data``. Drift above the
    spec's threshold blocks when the spec says ``block`` (``drift_status="block"``) and is noted in
    the reason when it only warns.
    """
    _require_finite(
        challenger_score=challenger_score,
        threshold=threshold,
        min_improvement=min_improvement,
        champion_score=champion_score,
    )
    from cmms_pm.params import metric_title

    name = metric_title(metric)
    challenger = f"challenger {name} {challenger_score:.4f}"
    if challenger_score < threshold - _TOLERANCE:
        return Decision(False, f"{challenger} is below the threshold {threshold:.4f}")
    if champion_score is None:
        qualified = f"no champion yet and {challenger} meets threshold {threshold:.4f}"
    elif challenger_score < champion_score + min_improvement - _TOLERANCE:
        return Decision(
            False,
            f"{challenger} does not beat champion {name} {champion_score:.4f} "
            f"+ min improvement {min_improvement:.4f}",
        )
    else:
        qualified = f"{challenger} ≥ champion {name} {champion_score:.4f} + {min_improvement:.4f}"
    if _older(challenger_data_end, champion_data_end):
        if not allow_older_data:
            return Decision(
                False,
                f"challenger trained on data ending {challenger_data_end}, before the champion's "
                f"{champion_data_end}: a run on older data (a backfill) does not replace a champion "
                "trained on newer data unless promote_older_data=true",
            )
        qualified += " (older data than the champion's, allowed by promote_older_data=true)"
    if drift_status == "block":
        return Decision(False, f"drift gate: {drift_reason} (challenger would have qualified: {qualified})")
    if drift_status == "warn":
        qualified += f" (drift warning: {drift_reason})"
    if not allow_promotion:
        return Decision(
            False,
            "promotion disabled by parameter allow_promotion=false "
            f"(challenger would have qualified: {qualified})",
        )
    return Decision(True, qualified)


def _older(challenger_end: str | None, champion_end: str | None) -> bool:
    if not challenger_end or not champion_end:
        return False
    return datetime.fromisoformat(challenger_end) < datetime.fromisoformat(champion_end)


def _require_finite(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise DataValidationError(f"{name} must be a finite number, got {value!r}")
