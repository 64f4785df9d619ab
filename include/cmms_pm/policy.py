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
    challenger_f1: float,
    champion_f1: float | None,
    f1_threshold: float,
    min_improvement: float,
    allow_promotion: bool,
    challenger_data_end: str | None = None,
    champion_data_end: str | None = None,
    allow_older_data: bool = False,
) -> Decision:
    """Promote iff allowed, the challenger meets the F1 threshold and beats the champion by the margin.

    Gates are checked threshold → champion → data freshness → ``allow_promotion`` so a disabled
    run still reports whether the challenger would have qualified. Ties with
    ``min_improvement=0`` promote. A challenger whose data interval ends before the champion's
    (a backfill of an older day) never replaces it unless ``allow_older_data``.
    """
    _require_finite(
        challenger_f1=challenger_f1,
        f1_threshold=f1_threshold,
        min_improvement=min_improvement,
        champion_f1=champion_f1,
    )
    challenger = f"challenger F1 {challenger_f1:.4f}"
    if challenger_f1 < f1_threshold - _TOLERANCE:
        return Decision(False, f"{challenger} is below the threshold {f1_threshold:.4f}")
    if champion_f1 is None:
        qualified = f"no champion yet and {challenger} meets threshold {f1_threshold:.4f}"
    elif challenger_f1 < champion_f1 + min_improvement - _TOLERANCE:
        return Decision(
            False,
            f"{challenger} does not beat champion F1 {champion_f1:.4f} "
            f"+ min improvement {min_improvement:.4f}",
        )
    else:
        qualified = f"{challenger} ≥ champion F1 {champion_f1:.4f} + {min_improvement:.4f}"
    if _older(challenger_data_end, champion_data_end):
        if not allow_older_data:
            return Decision(
                False,
                f"challenger trained on data ending {challenger_data_end}, before the champion's "
                f"{champion_data_end}: a run on older data (a backfill) does not replace a champion "
                "trained on newer data unless promote_older_data=true",
            )
        qualified += " (older data than the champion's, allowed by promote_older_data=true)"
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
