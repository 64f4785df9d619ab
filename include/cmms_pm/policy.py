"""The champion/challenger promotion rule, as a pure function with a human-readable reason."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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
) -> Decision:
    """Promote iff allowed, the challenger meets the F1 threshold and beats the champion by the margin.

    Gates are checked threshold → champion → ``allow_promotion`` so a disabled run still reports
    whether the challenger would have qualified. Ties with ``min_improvement=0`` promote.
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
    if not allow_promotion:
        return Decision(
            False,
            "promotion disabled by parameter allow_promotion=false "
            f"(challenger would have qualified: {qualified})",
        )
    return Decision(True, qualified)


def _require_finite(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise DataValidationError(f"{name} must be a finite number, got {value!r}")
