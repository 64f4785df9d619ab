"""The promotion decision table: threshold, champion comparison, and the allow_promotion switch."""

from __future__ import annotations

import pytest

from cmms_pm.exceptions import DataValidationError
from cmms_pm.policy import Decision, decide_promotion

BASE = {"threshold": 0.80, "min_improvement": 0.0, "allow_promotion": True}


@pytest.mark.parametrize(
    ("case", "promote", "reason"),
    [
        pytest.param(
            {"challenger_score": 0.92, "champion_score": 0.90},
            True,
            "challenger F1 0.9200 ≥ champion F1 0.9000 + 0.0000",
            id="better-challenger-is-promoted",
        ),
        pytest.param(
            {"challenger_score": 0.90, "champion_score": 0.90},
            True,
            "challenger F1 0.9000 ≥ champion F1 0.9000 + 0.0000",
            id="equal-challenger-is-promoted-without-min-improvement",
        ),
        pytest.param(
            {"challenger_score": 0.85, "champion_score": 0.90},
            False,
            "challenger F1 0.8500 does not beat champion F1 0.9000 + min improvement 0.0000",
            id="worse-challenger-is-not-promoted",
        ),
        pytest.param(
            {"challenger_score": 0.91, "champion_score": None},
            True,
            "no champion yet and challenger F1 0.9100 meets threshold 0.8000",
            id="first-model-meeting-threshold-is-promoted",
        ),
        pytest.param(
            {"challenger_score": 0.8123, "champion_score": None, "threshold": 0.85},
            False,
            "challenger F1 0.8123 is below the threshold 0.8500",
            id="first-model-below-threshold-is-not-promoted",
        ),
        pytest.param(
            {"challenger_score": 0.79, "champion_score": 0.70},
            False,
            "challenger F1 0.7900 is below the threshold 0.8000",
            id="below-threshold-loses-even-against-a-weaker-champion",
        ),
        pytest.param(
            {"challenger_score": 0.95, "champion_score": 0.90, "allow_promotion": False},
            False,
            "promotion disabled by parameter allow_promotion=false (challenger would have qualified: "
            "challenger F1 0.9500 ≥ champion F1 0.9000 + 0.0000)",
            id="disabled-promotion-says-the-challenger-would-have-qualified",
        ),
        pytest.param(
            {"challenger_score": 0.85, "champion_score": 0.90, "allow_promotion": False},
            False,
            "challenger F1 0.8500 does not beat champion F1 0.9000 + min improvement 0.0000",
            id="disabled-promotion-reports-the-real-failure-first",
        ),
        pytest.param(
            {"challenger_score": 0.91, "champion_score": 0.90, "min_improvement": 0.02},
            False,
            "challenger F1 0.9100 does not beat champion F1 0.9000 + min improvement 0.0200",
            id="min-improvement-not-met-is-not-promoted",
        ),
        pytest.param(
            {"challenger_score": 0.93, "champion_score": 0.90, "min_improvement": 0.02},
            True,
            "challenger F1 0.9300 ≥ champion F1 0.9000 + 0.0200",
            id="min-improvement-met-is-promoted",
        ),
    ],
)
def test_promotion_decision_table(case, promote, reason):
    decision = decide_promotion(**{**BASE, **case})
    assert decision == Decision(promote=promote, reason=reason)


def test_float_noise_does_not_block_an_exact_tie_with_the_bar():
    # 0.7 + 0.1 == 0.7999999999999999 and 0.1 + 0.2 == 0.30000000000000004 in binary floating point.
    assert decide_promotion(
        challenger_score=0.7 + 0.1,
        champion_score=None,
        threshold=0.8,
        min_improvement=0.0,
        allow_promotion=True,
    ).promote
    assert decide_promotion(
        challenger_score=0.3, champion_score=0.1, threshold=0.0, min_improvement=0.2, allow_promotion=True
    ).promote


def test_decision_as_dict_is_json_ready():
    decision = decide_promotion(challenger_score=0.9, champion_score=None, **BASE)
    assert decision.as_dict() == {"promote": True, "reason": decision.reason}


def test_decision_is_immutable():
    decision = Decision(promote=True, reason="x")
    with pytest.raises(AttributeError):
        decision.promote = False  # type: ignore[misc]


@pytest.mark.parametrize("field", ["challenger_score", "champion_score", "threshold"])
def test_nan_inputs_are_rejected_rather_than_silently_compared(field):
    values = {"challenger_score": 0.9, "champion_score": 0.8, **BASE, field: float("nan")}
    with pytest.raises(DataValidationError, match=f"{field} must be a finite number"):
        decide_promotion(**values)


NEWER = "2026-03-05T02:00:00+00:00"
OLDER = "2026-03-02T02:00:00+00:00"


def test_a_backfill_on_older_data_never_replaces_a_newer_champion():
    decision = decide_promotion(
        challenger_score=0.99, champion_score=0.90, challenger_data_end=OLDER, champion_data_end=NEWER, **BASE
    )
    assert not decision.promote
    assert f"data ending {OLDER}, before the champion's {NEWER}" in decision.reason
    assert "promote_older_data=true" in decision.reason


def test_older_data_may_replace_the_champion_when_explicitly_allowed():
    decision = decide_promotion(
        challenger_score=0.99,
        champion_score=0.90,
        challenger_data_end=OLDER,
        champion_data_end=NEWER,
        allow_older_data=True,
        **BASE,
    )
    assert decision.promote and "allowed by promote_older_data=true" in decision.reason


@pytest.mark.parametrize(("challenger_end", "champion_end"), [(NEWER, OLDER), (NEWER, NEWER), (None, NEWER)])
def test_newer_or_same_or_unknown_data_is_judged_on_f1_alone(challenger_end, champion_end):
    decision = decide_promotion(
        challenger_score=0.95,
        champion_score=0.90,
        challenger_data_end=challenger_end,
        champion_data_end=champion_end,
        **BASE,
    )
    assert decision.promote


def test_blocking_drift_rejects_a_qualified_challenger_and_says_why():
    decision = decide_promotion(
        **BASE, challenger_score=0.95, champion_score=0.90, drift_status="block",
        drift_reason="drift above PSI 0.25 in 1 feature: 'rpm' (0.41); policy: block",
    )  # fmt: skip
    assert decision.promote is False
    assert decision.reason.startswith("drift gate: drift above PSI 0.25 in 1 feature: 'rpm' (0.41)")
    assert "would have qualified" in decision.reason


def test_warning_drift_promotes_and_notes_the_drift():
    decision = decide_promotion(
        **BASE, challenger_score=0.95, champion_score=0.90, drift_status="warn", drift_reason="'rpm' (0.41)"
    )
    assert decision.promote is True
    assert decision.reason.endswith("(drift warning: 'rpm' (0.41))")


def test_the_metric_named_by_the_spec_appears_in_the_reason():
    decision = decide_promotion(**BASE, challenger_score=0.7, champion_score=None, metric="roc_auc")
    assert decision.reason == "challenger ROC-AUC 0.7000 is below the threshold 0.8000"
