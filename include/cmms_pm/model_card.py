"""The model card of a version: what it is for, what it learned from, how good it is, where it fails.

A card is rendered (Markdown) from its **facts**, a JSON-able dict each pipeline step fills in:
training writes the model, data, split, features, calibration and threshold; validation adds the
holdout metrics at the version's threshold with bootstrap confidence intervals and per-slice
metrics; the report step adds who approved or promoted it and why. Each step stores the facts
(``model_card.json``) and the rendered card (``model_card.md``) among the run's artifacts, so the
card always says what is known at that step; :func:`render` is pure and the same facts give the
same text.

Column names and category values are user data: in the card they are code spans with backticks
and table pipes escaped, and the Models page shows the card as plain text (never as HTML).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cmms_pm.thresholds import metrics_at

#: Bootstrap resamples for the confidence intervals, and their level.
BOOTSTRAP_REPS = 2000
CI_LEVEL = 0.95
#: Fewer failures than this in a split or a slice is called out as a limitation.
FEW_POSITIVES = 50
FEW_SLICE_POSITIVES = 10
#: Categories shown per sliced feature (the largest by rows); the rest are one "other" row.
MAX_SLICES = 12
INTERVAL_METRICS = ("precision", "recall", "f1", "expected_cost")


def interval_metrics(
    y_true: Any,
    proba: Any,
    threshold: float,
    costs: Mapping[str, float],
    *,
    seed: int,
    reps: int = BOOTSTRAP_REPS,
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and expected cost at ``threshold`` with percentile bootstrap intervals.

    These metrics depend on the rows only through the 2x2 table of (label, alert) counts, so
    resampling rows with replacement is drawing the four counts from a multinomial with the
    observed shares: the same intervals as a row bootstrap, in time independent of the rows.
    """
    y = np.asarray(y_true).astype(int)
    alert = np.asarray(proba, dtype=float) >= threshold
    n = len(y)
    cells = np.array(
        [
            (alert & (y == 1)).sum(),
            (alert & (y == 0)).sum(),
            (~alert & (y == 1)).sum(),
            (~alert & (y == 0)).sum(),
        ],
        dtype=float,
    )
    point = metrics_at(y, proba, threshold, costs)
    draws = np.random.default_rng(seed).multinomial(n, cells / max(n, 1), size=reps).astype(float)
    tp, fp, fn = draws[:, 0], draws[:, 1], draws[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        sampled = {
            "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
            "recall": np.where(tp + fn > 0, tp / (tp + fn), 0.0),
            "f1": np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
            "expected_cost": (costs["missed_failure"] * fn + costs["needless_inspection"] * fp) / max(n, 1),
        }
    tail = (1 - CI_LEVEL) / 2 * 100
    return {
        name: {
            "value": float(point[name]),
            "low": float(np.percentile(sampled[name], tail)),
            "high": float(np.percentile(sampled[name], 100 - tail)),
        }
        for name in INTERVAL_METRICS
    }


def slice_metrics(
    frame: Any, y_true: Any, proba: Any, threshold: float, columns: Sequence[str], costs: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Rows, failures, alerts, precision, recall and F1 per value of each of ``columns`` (the spec's
    categorical features: equipment type, asset model, ...), the largest ``MAX_SLICES`` values each."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    out: list[dict[str, Any]] = []
    for column in columns:
        if column not in frame.columns:
            continue
        values = frame[column].astype("string").fillna("(missing)").to_numpy(dtype=object)
        kinds, counts = np.unique(values, return_counts=True)
        ranked = [
            str(v) for v, _ in sorted(zip(kinds, counts, strict=True), key=lambda vc: (-vc[1], str(vc[0])))
        ]
        shown, rest = ranked[:MAX_SLICES], ranked[MAX_SLICES:]
        groups = [(value, values == value) for value in shown]
        if rest:
            groups.append((f"(other {len(rest)} values)", np.isin(values, rest)))
        for value, mask in groups:
            at = metrics_at(y[mask], p[mask], threshold, costs)
            out.append({
                "feature": str(column),
                "value": value,
                "rows": int(mask.sum()),
                "positives": int(y[mask].sum()),
                "alerts": int(at["alerts"]),
                "precision": at["precision"],
                "recall": at["recall"],
                "f1": at["f1"],
            })  # fmt: skip
    return out


# --- rendering ---------------------------------------------------------------------------------


def code(value: Any) -> str:
    """``value`` as an inline code span that no backtick, pipe or newline in it can break."""
    one_line = text(value)
    longest = max((len(run) for run in re.findall(r"`+", one_line)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") or not one_line else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"


def text(value: Any) -> str:
    """Free text on one line for a table cell or a bullet (pipes escaped)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return text(value)


def _interval(metric: Mapping[str, float]) -> str:
    return f"{_num(metric['value'])} ({_num(metric['low'])} – {_num(metric['high'])})"


def render(facts: Mapping[str, Any]) -> str:
    """The card as Markdown."""
    lines: list[str] = []
    name = facts.get("model_name") or facts.get("spec") or "model"
    version = facts.get("version")
    lines.append(f"# Model card: {code(name)}" + (f" version {text(version)}" if version else ""))
    lines.append("")
    lines.append(
        f"_Written by the `{text(facts.get('updated_by', 'train_model'))}` step at "
        f"{text(facts.get('updated_at', '?'))}._"
    )
    lines += _intended_use(facts)
    lines += _data(facts)
    lines += _features(facts)
    lines += _decision(facts)
    lines += _holdout(facts)
    lines += _limitations(facts)
    lines += _approval(facts)
    return "\n".join(lines).rstrip() + "\n"


def _intended_use(facts: Mapping[str, Any]) -> list[str]:
    target = facts.get("target") or {}
    lines = ["", "## Intended use", ""]
    if facts.get("description"):
        lines.append(text(facts["description"]))
        lines.append("")
    lines.append(
        f"Predicts {code(target.get('column', '?'))} = {code(target.get('positive', '?'))} (a failure) "
        "per row of the scoring input and raises an alert at or above the decision threshold below. It ranks "
        "assets for inspection; it does not replace a technician's judgement or a safety system."
    )
    lines.append(
        f"Estimator: {text(facts.get('estimator_title') or facts.get('estimator', '?'))} "
        f"({code(facts.get('estimator', '?'))}), spec {code(facts.get('spec', '?'))}."
    )
    return lines


def _data(facts: Mapping[str, Any]) -> list[str]:
    data = facts.get("data") or {}
    lines = ["", "## Data", ""]
    lines.append(
        f"- Source: {code(data.get('source', '?'))}; data version {code(data.get('data_version', '?'))}"
    )
    lines.append(
        f"- Period: {text(data.get('period_start', '?'))} to {text(data.get('period_end', '?'))}"
        + (
            f" (rows stamped {text(data['time_min'])} to {text(data['time_max'])})"
            if data.get("time_min")
            else ""
        )
    )
    lines.append(
        f"- Rows: {data.get('rows', '?')}, failures: {data.get('positives', '?')} "
        f"({_num(data.get('positive_rate'), 4)} of the rows); "
        f"digest {code(str(data.get('digest', '?'))[:12])}"
    )
    splits = data.get("splits") or {}
    if splits:
        lines += ["", "| split | rows | failures |", "| --- | ---: | ---: |"]
        lines += [
            f"| {text(s)} | {v.get('rows', '?')} | {v.get('positives', '?')} |" for s, v in splits.items()
        ]
    split = facts.get("split") or {}
    lines += ["", "### Split", ""]
    strategy = split.get("strategy", "random")
    if strategy == "random":
        lines.append(
            "Random rows, stratified on the label (70 / 15 / 15 %): train, validation (calibration and "
            "threshold), holdout (the promotion gate). Rows of one asset can fall in several splits."
        )
    else:
        detail = ", ".join(f"{text(k)} {code(v)}" for k, v in split.items() if k != "strategy")
        lines.append(
            f"{text(strategy).capitalize()} split: {detail}. Validation and holdout come after training."
        )
    return lines


def _features(facts: Mapping[str, Any]) -> list[str]:
    features = facts.get("features") or {}
    lines = ["", "## Features", ""]
    for kind in ("categorical", "numeric", "integer"):
        if features.get(kind):
            lines.append(f"- {kind}: " + ", ".join(code(c) for c in features[kind]))
    if facts.get("excluded"):
        lines.append(
            "- never features (dropped ids, times, leaks): " + ", ".join(code(c) for c in facts["excluded"])
        )
    return lines


def _decision(facts: Mapping[str, Any]) -> list[str]:
    choice = facts.get("threshold") or {}
    calibration = facts.get("calibration") or {}
    lines = ["", "## Decision threshold and calibration", ""]
    if choice:
        lines.append(
            f"- Threshold **{_num(choice.get('threshold'))}**, strategy {code(choice.get('strategy'))} "
            f"(decided by {text(choice.get('chosen_by'))}): {text(choice.get('note', ''))}"
        )
        lines.append(
            f"- On the validation split ({choice.get('rows')} rows, {choice.get('positives')} failures, "
            f"out-of-fold calibrated risks): precision {_num(choice.get('precision'))}, recall "
            f"{_num(choice.get('recall'))}, F1 {_num(choice.get('f1'))}, expected cost "
            f"{_num(choice.get('expected_cost'))} a row (missed failure "
            f"{_num((choice.get('costs') or {}).get('missed_failure'), 2)}, needless inspection "
            f"{_num((choice.get('costs') or {}).get('needless_inspection'), 2)})"
        )
    if calibration:
        lines.append(
            f"- Calibration: {code(calibration.get('method'))} ({text(calibration.get('reason', ''))}); "
            f"Brier score {_num(calibration.get('brier_before'))} before, "
            f"{_num(calibration.get('brier_after'))} after (validation rows, out of fold). The risk is a "
            "probability of failure within the label's horizon."
        )
    lines.append(
        "- Reasons (per scored row) are Shapley contributions to the classifier's own output before "
        "calibration (probability for forests, log-odds for boosters and linear models)."
    )
    return lines


def _holdout(facts: Mapping[str, Any]) -> list[str]:
    holdout = facts.get("holdout")
    lines = ["", "## Holdout metrics", ""]
    if not holdout:
        lines.append("Not evaluated yet: `validate_model` scores the holdout split and rewrites this card.")
        return lines
    lines.append(
        f"At the version's threshold {_num(holdout.get('threshold'))} on {holdout.get('rows')} holdout rows "
        f"({holdout.get('positives')} failures); {int(CI_LEVEL * 100)} % bootstrap intervals "
        f"({BOOTSTRAP_REPS} resamples, seeded)."
    )
    metrics = holdout.get("metrics") or {}
    lines += ["", "| metric | value (95 % interval) |", "| --- | --- |"]
    lines += [f"| {text(m)} | {_interval(metrics[m])} |" for m in INTERVAL_METRICS if m in metrics]
    for extra in ("roc_auc", "pr_auc", "brier"):
        if holdout.get(extra) is not None:
            lines.append(f"| {extra} | {_num(holdout[extra])} |")
    champion = holdout.get("champion")
    if champion:
        lines.append("")
        lines.append(
            f"Champion v{text(champion.get('version'))} on the same rows at its own threshold "
            f"{_num(champion.get('threshold'))}: precision {_num(champion.get('precision'))}, recall "
            f"{_num(champion.get('recall'))}, F1 {_num(champion.get('f1'))}, expected cost "
            f"{_num(champion.get('expected_cost'))}."
        )
    if holdout.get("decision"):
        lines.append(f"Gate: {text(holdout['decision'])} — {text(holdout.get('reason', ''))}")
    slices = holdout.get("slices") or []
    if slices:
        lines += ["", "### Per slice", ""]
        lines += ["| feature | value | rows | failures | alerts | precision | recall | F1 |"]
        lines += ["| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [
            f"| {code(s['feature'])} | {code(s['value'])} | {s['rows']} | {s['positives']} | {s['alerts']} | "
            f"{_num(s['precision'], 3)} | {_num(s['recall'], 3)} | {_num(s['f1'], 3)} |"
            for s in slices
        ]
    return lines


def _limitations(facts: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Known limitations", ""]
    items = [*(facts.get("limitations") or []), *((facts.get("holdout") or {}).get("limitations") or [])]
    lines += [f"- {text(item)}" for item in items] or ["- None recorded."]
    return lines


def _approval(facts: Mapping[str, Any]) -> list[str]:
    approval = facts.get("approval") or {}
    lines = ["", "## Approval and promotion", ""]
    if not approval:
        lines.append("Not decided yet: the training run's `report` step rewrites this section.")
        return lines
    for key, label in (
        ("outcome", "Outcome"),
        ("stage", "Stage"),
        ("decided_by", "Decided by"),
        ("reason", "Why"),
        ("approval_status", "Human approval"),
        ("approved_by", "Answered by"),
        ("approval_comment", "Comment"),
        ("at", "At"),
    ):
        if approval.get(key):
            lines.append(f"- {label}: {text(approval[key])}")
    lines.append(
        "- Later changes (manual promotion, rollback) are in the model's history on the Models page."
    )
    return lines


def limitations(
    *,
    validation_positives: int | None = None,
    unseen: Mapping[str, Sequence[str]] | None = None,
    drift: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    excluded: Sequence[str] = (),
    accepted_leaks: Sequence[str] = (),
    threshold_note: str | None = None,
) -> list[str]:
    """The known limitations a training step can state (the holdout adds its own)."""
    items: list[str] = []
    if validation_positives is not None and validation_positives < FEW_POSITIVES:
        items.append(
            f"Few failures in the validation split ({validation_positives} < {FEW_POSITIVES}): the threshold "
            "and the calibration rest on few labels; expect them to move between versions."
        )
    for column, values in (unseen or {}).items():
        shown = ", ".join(code(v) for v in list(values)[:10])
        items.append(
            f"Categories of {code(column)} not seen in training ({shown}): scored as an unknown category "
            "and flagged by the data contract in scoring (contract_issues)."
        )
    items.append(
        "Any category absent from the training split is unknown to the model: its rows are scored but "
        "flagged (contract_ok = false), never silently."
    )
    if drift and drift.get("status") not in (None, "none", "ok"):
        items.append(f"Drift at training time ({drift['status']}): {drift.get('reason', '')}")
    elif drift and drift.get("status") == "none":
        items.append("No drift measured at training time (no champion to compare with).")
    if excluded:
        items.append(
            "Columns excluded from the features (ids, times, known leaks): "
            + ", ".join(code(c) for c in excluded)
        )
    if accepted_leaks:
        items.append(
            "Columns kept despite a leak finding (leakage.accept): "
            + ", ".join(code(c) for c in accepted_leaks)
        )
    items += [f"Data check: {note}" for note in notes]
    if threshold_note:
        items.append(f"Threshold: {threshold_note}")
    return items


def holdout_limitations(positives: int, slices: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the holdout says the card's reader should be careful with."""
    items = []
    if positives < FEW_POSITIVES:
        items.append(
            f"Few failures in the holdout ({positives} < {FEW_POSITIVES}): the intervals above are wide."
        )
    few = [s for s in slices if s["positives"] < FEW_SLICE_POSITIVES]
    if few:
        shown = ", ".join(f"{code(s['feature'])}={code(s['value'])} ({s['positives']})" for s in few[:8])
        items.append(
            f"Slices with fewer than {FEW_SLICE_POSITIVES} failures in the holdout, whose metrics say "
            f"little: {shown}."
        )
    return items


def holdout_facts(
    frame: Any,
    y_true: Any,
    proba: Any,
    threshold: float,
    costs: Mapping[str, float],
    *,
    slice_columns: Sequence[str],
    seed: int = 0,
) -> dict[str, Any]:
    """The card's holdout section: metrics at ``threshold`` with intervals, AUCs, Brier, slices."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    both = 0 < y.sum() < len(y)
    slices = slice_metrics(frame, y, p, threshold, slice_columns, costs)
    return {
        "threshold": float(threshold),
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "metrics": interval_metrics(y, p, threshold, costs, seed=seed),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
        "slices": slices,
        "limitations": holdout_limitations(int(y.sum()), slices),
    }
