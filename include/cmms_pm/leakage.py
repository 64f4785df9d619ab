"""Columns that leak the label: the leakage guard of ``make new-model`` and ``validate_data``.

A column leaks when it tells the model the answer rather than the machine's state: AI4I 2020's
failure-mode flags (``TWF``, ``HDF``, ``PWF``, ``OSF``, ``RNF``, which together *are* the label), a
status copied from the work order that closed the failure, a repair date. A model trained on one
scores F1 0.98 in validation and is promoted, then predicts nothing in the field, where the column is
not known yet. :func:`find_leaks` looks for four shapes, each a test with a number and a threshold:

- ``single_column`` — the column alone separates the classes: single-feature ROC-AUC ≥ :data:`AUC_MIN`
  in either direction. Numbers by rank (missing values placed at whichever end separates better, so
  "only filled in for failures" counts); text and category columns, and numbers with few values
  (codes), by each value's failure rate (out of fold, so an id-like column gains nothing).
- ``flag_set`` — a set of two-valued columns whose OR (or AND) is the label: F1 against the label
  ≥ :data:`SET_MIN_F1`, found greedily even when no single flag is enough (AI4I's flags are each
  AUC 0.52-0.67; their OR is the label).
- ``near_copy`` — a column with few values that is the label in other words: the best split of its
  values agrees with the label on ≥ :data:`NEAR_COPY_MIN_BALANCED_ACCURACY` of each class (a noisy
  copy), or exactly (a function of the label).
- ``future_timestamp`` — a date later than the row's own time (snapshot) column, when one is known:
  ``failure_date``, ``repaired_at``.

Pure domain code (numpy and pandas, vectorised): larger frames (1M rows × 50 columns) are sampled to
:data:`MAX_ROWS` rows, deterministically, so the same frame gives the same findings. Messages name
columns and numbers, never a value from the data (they reach task logs and the API).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from cmms_pm.exceptions import LabelLeakError

# --- thresholds: each is a constant so a reader (and the README) sees the rule ---------------------

#: A single column with ROC-AUC at or above this separates the classes "almost perfectly". Honest
#: maintenance signals stay far below: the best sensor of the AI4I-like data is ~0.77 (torque), of
#: the shipped synthetic telemetry ~0.78 (temperature); a label copy with 1 % of rows flipped is 0.99.
AUC_MIN = 0.99
#: A set of flags whose OR/AND has at least this F1 against the label *is* the label. F1 (not the
#: share of matching rows) because with 3 % positives "never" already matches 97 % of rows. AI4I's
#: flags reach ~0.99 (their OR misses only a few failures); flags that cover 80 % stay at ~0.89.
SET_MIN_F1 = 0.95
#: A flag joins an OR set only when most rows it is on are positives (its precision), and an AND
#: set only when it is on for most positives (its recall): an honest warning flag is neither.
SET_MEMBER_MIN_SHARE = 0.9
#: A column of at most :data:`NEAR_COPY_MAX_VALUES` values whose best split agrees with the label on
#: this share of each class (balanced accuracy) is a copy of it: ≥ 90 % of failures *and* ≥ 90 %
#: of healthy rows, which no honest few-valued column does (AI4I's quality Type: ~0.55).
NEAR_COPY_MIN_BALANCED_ACCURACY = 0.9
NEAR_COPY_MAX_VALUES = 10
#: Flags tried for one OR/AND set at most (the widest first): bounds memory (rows × flags booleans)
#: and time for a frame of thousands of flags; a leak split over more flags than this is not found.
MAX_SET_MEMBERS = 256
#: A date later than the row's own time in at least this share of the rows where both are set was
#: written after the snapshot (1 %: a few clock-skewed rows are not a leak, a repair date is).
FUTURE_MIN_SHARE = 0.01
#: Numeric columns with at most this many values are also tested as categories (a code whose one
#: value means "failed" is invisible to a rank test).
MAX_CODE_VALUES = 50
#: Rows examined at most; a larger frame is sampled (seeded, sorted positions: deterministic).
#: 200,000 rows measure an AUC to ±0.002 at a 3 % positive rate and keep 1M × 50 under ~2 s.
MAX_ROWS = 200_000
#: Fewer rows than this in either class and the guard says so instead of testing (an AUC on a
#: dozen failures is noise: an honest column can reach 0.99 by chance).
MIN_CLASS_ROWS = 30
SAMPLE_SEED = 0

SINGLE_COLUMN = "single_column"
FLAG_SET = "flag_set"
NEAR_COPY = "near_copy"
FUTURE_TIMESTAMP = "future_timestamp"
TESTS = (SINGLE_COLUMN, FLAG_SET, NEAR_COPY, FUTURE_TIMESTAMP)
#: Drop reasons (``make new-model``) of leaking columns start with this.
LEAKS = "leaks the label"


@dataclass(frozen=True)
class LeakFinding:
    """One leak: the column(s), the test, its number (``measure`` names it) and why, in words."""

    columns: tuple[str, ...]
    test: str
    measure: str
    value: float
    reason: str

    def summary(self) -> str:
        """``'TWF', 'HDF' (flag_set: F1 0.990): the OR of ...``"""
        names = ", ".join(repr(column) for column in self.columns)
        return f"{names} ({self.test}: {self.measure} {self.value:.3f}): {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "columns": list(self.columns)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeakFinding:
        return cls(
            columns=tuple(data["columns"]),
            test=str(data["test"]),
            measure=str(data["measure"]),
            value=float(data["value"]),
            reason=str(data["reason"]),
        )


@dataclass(frozen=True)
class LeakageReport:
    """What :func:`find_leaks` examined and found. ``skipped`` says why nothing was tested."""

    findings: tuple[LeakFinding, ...] = ()
    rows: int = 0
    sampled_from: int = 0
    columns: tuple[str, ...] = ()
    time_column: str | None = None
    skipped: str | None = None
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(thresholds()))

    @property
    def leaking(self) -> dict[str, str]:
        """Each leaking column → the reason of the first finding that names it."""
        found: dict[str, str] = {}
        for finding in self.findings:
            for column in finding.columns:
                found.setdefault(column, f"{LEAKS}: {finding.summary()}")
        return found

    def split(self, accept: Collection[str]) -> tuple[list[LeakFinding], list[LeakFinding]]:
        """``(accepted, refused)``: a finding is accepted only when every column it names is."""
        accepted = [f for f in self.findings if set(f.columns) <= set(accept)]
        return accepted, [f for f in self.findings if not set(f.columns) <= set(accept)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [finding.to_dict() for finding in self.findings],
            "rows": self.rows,
            "sampled_from": self.sampled_from,
            "columns": list(self.columns),
            "time_column": self.time_column,
            "skipped": self.skipped,
            "thresholds": dict(self.thresholds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeakageReport:
        return cls(
            findings=tuple(LeakFinding.from_dict(f) for f in data.get("findings", [])),
            rows=int(data.get("rows", 0)),
            sampled_from=int(data.get("sampled_from", 0)),
            columns=tuple(data.get("columns", [])),
            time_column=data.get("time_column"),
            skipped=data.get("skipped"),
            thresholds=dict(data.get("thresholds") or thresholds()),
        )


def thresholds() -> dict[str, float]:
    """The guard's thresholds, as recorded next to its findings."""
    return {
        "auc_min": AUC_MIN,
        "set_min_f1": SET_MIN_F1,
        "set_member_min_share": SET_MEMBER_MIN_SHARE,
        "near_copy_min_balanced_accuracy": NEAR_COPY_MIN_BALANCED_ACCURACY,
        "near_copy_max_values": NEAR_COPY_MAX_VALUES,
        "max_set_members": MAX_SET_MEMBERS,
        "future_min_share": FUTURE_MIN_SHARE,
        "max_rows": MAX_ROWS,
        "min_class_rows": MIN_CLASS_ROWS,
    }


def find_leaks(
    frame: pd.DataFrame,
    target: str,
    *,
    positive: Any = 1,
    columns: Sequence[str] | None = None,
    timestamps: Sequence[str] | None = None,
    time_column: str | None = None,
) -> LeakageReport:
    """The columns of ``frame`` that leak ``target`` (rows equal to ``positive`` are the positives).

    ``columns``: the candidates for the label tests (default: every column but the target and the
    time column). ``timestamps``: date columns to compare with ``time_column`` (default: the
    datetime-typed columns and text columns that parse as dates); without a ``time_column`` no date
    is tested. Missing labels count as negatives; the caller checks labels.
    """
    if target not in frame.columns:
        raise KeyError(f"target column {target!r} is not in the frame")
    candidates = [
        c for c in (columns if columns is not None else frame.columns) if c not in (target, time_column)
    ]
    candidates = [c for c in dict.fromkeys(candidates) if c in frame.columns]
    sample = _sample(frame, target, candidates, time_column, timestamps)
    y = _positives(sample[target], positive)
    n_pos = int(y.sum())
    base = LeakageReport(
        rows=len(sample), sampled_from=len(frame), columns=tuple(candidates), time_column=time_column
    )
    findings: list[LeakFinding] = []
    if time_column is not None and time_column in sample.columns:
        dates = timestamps if timestamps is not None else _date_columns(sample, exclude=(target, time_column))
        findings += _future_timestamps(sample, time_column, [c for c in dates if c in sample.columns])
    if min(n_pos, len(y) - n_pos) < MIN_CLASS_ROWS:
        skipped = (
            f"{n_pos:,} positive and {len(y) - n_pos:,} negative rows: fewer than {MIN_CLASS_ROWS} "
            "in a class, too few to test columns against the label"
        )
        return replace(base, findings=tuple(findings), skipped=skipped)
    dated = {f.columns[0] for f in findings}
    undated = [c for c in candidates if c not in dated]
    coded = {column: _coded(sample[column]) for column in undated}
    single = _single_column_findings(undated, y, coded)
    findings += single
    flagged = {f.columns[0] for f in single}
    findings += _flag_sets([c for c in undated if c not in flagged], y, coded)
    return replace(base, findings=tuple(findings))


def check_features(
    frame: pd.DataFrame,
    target: str,
    *,
    features: Sequence[str],
    accept: Collection[str] = (),
    positive: Any = 1,
    time_column: str | None = None,
) -> LeakageReport:
    """:func:`find_leaks` over a spec's ``features``; :class:`LabelLeakError` naming each leak that
    ``accept`` does not cover (a finding is covered when every column it names is accepted)."""
    report = find_leaks(
        frame,
        target,
        positive=positive,
        columns=list(features),
        timestamps=[c for c in features if c in frame.columns] if time_column else None,
        time_column=time_column,
    )
    _, refused = report.split(accept)
    if refused:
        raise leak_error(refused)
    return report


def leak_error(refused: Iterable[LeakFinding]) -> LabelLeakError:
    """The error of features that leak the label: each finding with its test and number."""
    lines = [finding.summary() for finding in refused]
    columns = sorted({c for finding in refused for c in finding.columns})
    return LabelLeakError(
        f"feature(s) {columns!r} leak the label: "
        + "; ".join(lines)
        + ". Remove them from the features (list them in drop instead), or list them in the spec's "
        "leakage.accept to train on them knowingly"
    )


def guard_record(
    report: LeakageReport, accept: Collection[str], excluded: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What a run records of the guard (``data_checks/leakage.json``, the data report): the report,
    the findings kept knowingly, the inferred features left out, and one note per warning."""
    accepted, _ = report.split(accept)
    excluded = dict(excluded or {})
    notes = [f"inferred feature {column!r} left out, it {why}" for column, why in excluded.items()]
    notes += [f"leakage accepted (leakage.accept): {finding.summary()}" for finding in accepted]
    if report.skipped:
        notes.append(f"leakage guard not run: {report.skipped}")
    return {
        **report.to_dict(),
        "accepted": [finding.to_dict() for finding in accepted],
        "excluded": excluded,
        "notes": notes,
    }


#: Longest value of a leakage tag (MLflow tags hold 8,000 characters; a tag is for searching).
TAG_LIMIT = 500


def leakage_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """Run (and model-version) tags of a :func:`guard_record`: ``leakage_columns``, how many columns
    leak (accepted or left out; ``not tested`` when the guard could not run), and which were accepted
    or left out (each tag only when there are some)."""
    if not record:
        return {}
    accepted = sorted({c for finding in record.get("accepted", []) for c in finding["columns"]})
    excluded = sorted(record.get("excluded") or {})
    tags = {"leakage_columns": str(len({*accepted, *excluded}))}
    if record.get("skipped"):
        tags["leakage_columns"] = "not tested"
    if accepted:
        tags["leakage_accepted"] = _bounded(accepted)
    if excluded:
        tags["leakage_excluded"] = _bounded(excluded)
    return tags


def _bounded(names: Sequence[str]) -> str:
    """``a,b,c``, or as many names as fit :data:`TAG_LIMIT` then ``+N more``."""
    for kept in range(len(names), -1, -1):
        text = ",".join([*names[:kept], *([f"+{len(names) - kept} more"] if kept < len(names) else [])])
        if len(text) <= TAG_LIMIT:
            return text
    return ""


# --- sampling and labels ----------------------------------------------------------------------------


def _sample(
    frame: pd.DataFrame,
    target: str,
    candidates: Sequence[str],
    time_column: str | None,
    timestamps: Sequence[str] | None,
) -> pd.DataFrame:
    """The columns the tests read, and at most :data:`MAX_ROWS` rows (seeded, in frame order)."""
    needed = [target, *candidates]
    if time_column is not None:  # every column may be a date to compare when none are named
        needed += [time_column, *(timestamps if timestamps is not None else frame.columns)]
    wanted = [column for column in dict.fromkeys(needed) if column in frame.columns]
    if len(frame) <= MAX_ROWS:
        return frame[wanted]
    positions = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(frame), MAX_ROWS, replace=False))
    return frame[wanted].take(positions)


def _positives(labels: pd.Series, positive: Any) -> np.ndarray:
    if pd.api.types.is_bool_dtype(labels.dtype) and isinstance(positive, bool | np.bool_):
        return labels.to_numpy(dtype=bool, na_value=False) == bool(positive)
    return (labels == positive).fillna(False).to_numpy(dtype=bool)


# --- single columns: near copy, then AUC --------------------------------------------------------------


def _single_column_findings(
    columns: Sequence[str], y: np.ndarray, coded: dict[str, _Coded]
) -> list[LeakFinding]:
    findings = []
    for column in columns:
        values = coded[column]
        if values.n_values <= 1:
            continue
        if values.n_values <= NEAR_COPY_MAX_VALUES:
            # With few values the best split's balanced accuracy bounds the AUC of any order of
            # them (an ROC polyline whose corners all have TPR - FPR < 0.8 encloses < 0.98), so
            # the near-copy test at 0.9 already catches every column the AUC test would.
            copy = _near_copy(column, values, y)
            if copy is not None:
                findings.append(copy)
            continue
        auc = _column_auc(column, values, y)
        if auc is not None:
            findings.append(auc)
    return findings


@dataclass(frozen=True)
class _Coded:
    """A column as integer codes (missing is a value of its own) and its distinct values."""

    codes: np.ndarray
    uniques: pd.Series

    @property
    def n_values(self) -> int:
        return len(self.uniques)

    def counts(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative rows per value."""
        pos = np.bincount(self.codes, weights=y, minlength=self.n_values)
        return pos, np.bincount(self.codes, minlength=self.n_values) - pos


def _coded(values: pd.Series) -> _Coded:
    """Hash-based (one pass, no sort of the rows): the sorts below are of distinct values only."""
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
    except TypeError:  # unhashable cells (lists): as text
        codes, uniques = pd.factorize(values.astype(str), use_na_sentinel=False)
    return _Coded(codes.astype(np.int64, copy=False), pd.Series(uniques))


def _near_copy(column: str, values: _Coded, y: np.ndarray) -> LeakFinding | None:
    """The best split of a few values into "means positive" / "means negative" (by each value's
    positive rate, in sample: with ≤ 10 values there is nothing to overfit) and its balanced accuracy."""
    pos, neg = values.counts(y)
    n_values = values.n_values
    order = np.argsort(-(pos / (pos + neg)), kind="stable")
    # Values in order of falling positive rate: the first k mean "positive".
    tpr = np.cumsum(pos[order]) / pos.sum()
    fpr = np.cumsum(neg[order]) / neg.sum()
    balanced = (tpr + 1.0 - fpr) / 2.0
    k = int(np.argmax(balanced[:-1]))
    best = float(balanced[k])
    if best < NEAR_COPY_MIN_BALANCED_ACCURACY:
        return None
    exact = tpr[k] == 1.0 and fpr[k] == 0.0
    share_pos, share_neg = 100 * tpr[k], 100 * (1 - fpr[k])
    reason = (
        f"a function of the label: {k + 1} of its {n_values} values occur exactly in the positive rows"
        if exact
        else f"a copy of the label with noise: {k + 1} of its {n_values} values mark {share_pos:.1f} % "
        f"of the positive rows and the others {share_neg:.1f} % of the negative rows (an honest "
        f"reading does not agree with the label on ≥ {100 * NEAR_COPY_MIN_BALANCED_ACCURACY:.0f} % of both)"
    )
    return LeakFinding((column,), NEAR_COPY, "balanced accuracy", round(best, 4), reason)


def _column_auc(column: str, values: _Coded, y: np.ndarray) -> LeakFinding | None:
    """ROC-AUC of the column alone: by rank for numbers, by out-of-fold category rates for text and
    few-valued numbers (codes; an integer column with gaps reads as floats); the stronger view."""
    views: list[tuple[float, str]] = []
    numbers = _as_numbers(values.uniques)
    if numbers is not None:
        views.append(_rank_auc(numbers, *values.counts(y)))
    if numbers is None or values.n_values <= MAX_CODE_VALUES:
        views.append((_category_auc(values, y), "by the failure rate of each of its values (out of fold)"))
    auc, how = max(views, key=lambda view: view[0])
    if auc < AUC_MIN:
        return None
    reason = (
        f"alone it separates the classes almost perfectly, {how} (an honest reading stays below {AUC_MIN})"
    )
    return LeakFinding((column,), SINGLE_COLUMN, "ROC-AUC", round(auc, 4), reason)


def _as_numbers(values: pd.Series) -> np.ndarray | None:
    """Numbers, booleans and datetimes as float64 (missing: NaN); None for anything else."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return values.astype("float64").to_numpy(na_value=np.nan)
    if pd.api.types.is_numeric_dtype(dtype):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        stamps = values.to_numpy(dtype="datetime64[ns]")
        return np.where(np.isnat(stamps), np.nan, stamps.astype("int64").astype("float64"))
    return None


def _auc_of_groups(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC-AUC of a score whose distinct values, in increasing order, hold ``pos``/``neg`` rows
    (ties count half: the Mann-Whitney statistic)."""
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + neg / 2.0)) / (pos.sum() * neg.sum()))


def _rank_auc(numbers: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[float, str]:
    """AUC of distinct values ``numbers`` holding ``pos``/``neg`` rows each; missing values (NaN)
    ranked at whichever end separates better, and the direction that separates better."""
    missing = np.isnan(numbers)
    order = np.flatnonzero(~missing)[np.argsort(numbers[~missing], kind="stable")]
    nan_pos, nan_neg = float(pos[missing].sum()), float(neg[missing].sum())
    pos, neg = pos[order], neg[order]
    best = (0.0, "")
    for place in ("low", "high") if missing.any() else ("low",):
        if place == "low":
            auc = _auc_of_groups(np.r_[nan_pos, pos], np.r_[nan_neg, neg])
        else:
            auc = _auc_of_groups(np.r_[pos, nan_pos], np.r_[neg, nan_neg])
        higher = auc >= 0.5
        strength = auc if higher else 1.0 - auc
        if strength > best[0]:
            direction = "higher values mean positive" if higher else "lower values mean positive"
            if missing.any():
                direction += f", missing values ranked {place}"
            best = (strength, f"by rank ({direction})")
    return best


def _category_auc(values: _Coded, y: np.ndarray) -> float:
    """AUC of each row scored by its value's positive rate in the *other* half of the rows (two
    seeded folds, rates smoothed towards the overall rate): a value seen in one row scores the
    overall rate, so ids and free text gain nothing, while a value that means "failed" scores ~1.
    A row's score depends only on (fold, value): counted per such group, no sort of the rows."""
    n_values = values.n_values
    fold = np.random.default_rng(SAMPLE_SEED + 1).integers(0, 2, len(values.codes))
    prior = float(y.mean())
    rates = []
    for f in (0, 1):
        other = fold != f
        pos = np.bincount(values.codes[other], weights=y[other], minlength=n_values)
        total = np.bincount(values.codes[other], minlength=n_values)
        rates.append((pos + prior) / (total + 1.0))
    group = fold * n_values + values.codes
    pos = np.bincount(group, weights=y, minlength=2 * n_values)
    neg = np.bincount(group, minlength=2 * n_values) - pos
    order = np.argsort(np.concatenate(rates), kind="stable")
    auc = _auc_of_groups(pos[order], neg[order])
    return max(auc, 1.0 - auc)


# --- sets of flags ------------------------------------------------------------------------------------


def _flags(columns: Sequence[str], y: np.ndarray, coded: dict[str, _Coded]) -> dict[str, np.ndarray]:
    """Two-valued columns (missing counts as a value) as booleans, "on" = the value with the higher
    positive rate, so that for an OR leak each flag is on mostly in positive rows."""
    flags = {}
    for column in columns:
        if coded[column].n_values != 2:
            continue
        on = coded[column].codes == 1
        rate_on = y[on].mean()
        rate_off = y[~on].mean()
        flags[column] = on if rate_on >= rate_off else ~on
    return flags


def _flag_sets(columns: Sequence[str], y: np.ndarray, coded: dict[str, _Coded]) -> list[LeakFinding]:
    flags = _flags(columns, y, coded)
    if len(flags) < 2:
        return []
    n_pos = int(y.sum())
    on_pos = {c: int(np.count_nonzero(on & y)) for c, on in flags.items()}
    on_all = {c: int(np.count_nonzero(on)) for c, on in flags.items()}
    for op in ("OR", "AND"):
        if op == "OR":  # a member's "on" rows are (almost) all positive; the widest first
            share = {c: on_pos[c] / on_all[c] if on_all[c] else 0.0 for c in flags}
            rank = sorted(flags, key=lambda c: -on_pos[c])
        else:  # a member is on in (almost) every positive row; the narrowest first
            share = {c: on_pos[c] / n_pos for c in flags}
            rank = sorted(flags, key=lambda c: on_all[c])
        members = [c for c in rank if share[c] >= SET_MEMBER_MIN_SHARE][:MAX_SET_MEMBERS]
        if len(members) < 2:
            continue
        matrix = np.column_stack([flags[c] for c in members])
        chosen, f1 = _greedy_set(matrix, y, op)
        if len(chosen) < 2 or f1 < SET_MIN_F1:
            continue
        agree = float((_combine(matrix[:, chosen], op) == y).mean())
        columns_found = tuple(c for c in columns if c in {members[i] for i in chosen})  # frame order
        reason = (
            f"together they are the label: the {op} of these {len(chosen)} two-valued columns matches it "
            f"in {100 * agree:.2f} % of rows (F1 {f1:.3f}); each alone is weaker, so a model learns the "
            f"rule, not the machine (≥ {SET_MIN_F1} F1 is the threshold)"
        )
        # One set per frame: an AND found after an OR would name the same leak again.
        return [LeakFinding(columns_found, FLAG_SET, f"F1 of the {op}", round(f1, 4), reason)]
    return []


def _combine(matrix: np.ndarray, op: str) -> np.ndarray:
    return np.asarray(matrix.any(axis=1) if op == "OR" else matrix.all(axis=1))


def _f1(tp: np.ndarray, fp: np.ndarray, n_pos: int) -> np.ndarray:
    denominator = 2 * tp + fp + (n_pos - tp)
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=denominator > 0)


def _greedy_set(matrix: np.ndarray, y: np.ndarray, op: str) -> tuple[list[int], float]:
    """Add, one at a time, the flag (a column of the boolean ``matrix``) that raises the F1 of the
    OR/AND most; stop when none does; then drop the flags the others make unneeded. Each step counts
    on the rows a flag would change only (the uncovered positives and covered negatives for an OR,
    the covered rows for an AND), never on a copy of the whole matrix."""
    n_pos = int(y.sum())
    neg_on = matrix[~y].sum(axis=0)
    # Per row: how many chosen flags are on (OR) or off (AND); the set covers a row at 0 off / ≥ 1 on.
    count = np.zeros(len(y), dtype=np.int32)
    chosen: list[int] = []
    best = 0.0
    while len(chosen) < matrix.shape[1]:
        current = count > 0 if op == "OR" else count == 0
        if op == "OR":  # rows the candidate turns on
            tp = int(np.count_nonzero(current & y)) + matrix[y & ~current].sum(axis=0)
            fp = int(np.count_nonzero(current & ~y)) + neg_on - matrix[~y & current].sum(axis=0)
        else:  # the covered rows it keeps
            tp = matrix[y & current].sum(axis=0)
            fp = neg_on if not chosen else matrix[~y & current].sum(axis=0)
        scores = _f1(np.asarray(tp, dtype=float), np.asarray(fp, dtype=float), n_pos)
        scores[chosen] = -1.0
        pick = int(np.argmax(scores))
        if scores[pick] <= best + 1e-9:
            break
        chosen.append(pick)
        best = float(scores[pick])
        count += matrix[:, pick] if op == "OR" else ~matrix[:, pick]
    return _prune(matrix, y, op, chosen, count, best)


def _prune(
    matrix: np.ndarray, y: np.ndarray, op: str, chosen: list[int], count: np.ndarray, best: float
) -> tuple[list[int], float]:
    """Drop, one at a time, the chosen flag whose removal leaves the F1 as high or higher (a later
    flag may cover what an earlier one did). Removing a flag changes only the rows it alone
    decides (``count == 1``): few rows, so the counts are cheap."""
    n_pos = int(y.sum())
    while len(chosen) > 1:
        current = count > 0 if op == "OR" else count == 0
        tp_all = float(np.count_nonzero(current & y))
        fp_all = float(np.count_nonzero(current & ~y))
        alone = count == 1
        decided = matrix[alone][:, chosen]  # rows only one flag decides, then the chosen flags
        decides = decided if op == "OR" else ~decided
        y_alone = y[alone]
        moved_tp = decides[y_alone].sum(axis=0)
        moved_fp = decides[~y_alone].sum(axis=0)
        sign = -1.0 if op == "OR" else 1.0  # an OR loses those rows, an AND gains them
        scores = _f1(tp_all + sign * moved_tp, fp_all + sign * moved_fp, n_pos)
        drop = int(np.argmax(scores))
        if scores[drop] < best:
            break
        best = float(scores[drop])
        column = chosen.pop(drop)
        count -= matrix[:, column] if op == "OR" else ~matrix[:, column]
    return chosen, best


# --- dates after the snapshot -----------------------------------------------------------------------


def _date_columns(sample: pd.DataFrame, *, exclude: Collection[str]) -> list[str]:
    """Datetime-typed columns, and text columns whose values (up to 1,000 distinct) parse as dates."""
    found = []
    for column in sample.columns:
        if column in exclude:
            continue
        values = sample[column]
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            found.append(column)
        elif pd.api.types.is_string_dtype(values.dtype) or pd.api.types.is_object_dtype(values.dtype):
            if _parses_as_dates(values):
                found.append(column)
    return found


def _parses_as_dates(values: pd.Series) -> bool:
    distinct = values.dropna().drop_duplicates().head(1000)
    if distinct.empty or not all(isinstance(v, str) for v in distinct):
        return False
    text = distinct.astype(str)
    if pd.to_numeric(text, errors="coerce").notna().mean() > 0.05:  # numbers are not dates
        return False
    return bool(_to_times(text).notna().mean() >= 0.95)


def _to_times(values: pd.Series) -> pd.Series:
    """Values as UTC timestamps (naive ones read as UTC); what does not parse is NaT."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = pd.Series(values)
        return stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": mixed is what is asked for
        return pd.to_datetime(values, errors="coerce", utc=True, format="mixed")


def _future_timestamps(sample: pd.DataFrame, time_column: str, dates: Sequence[str]) -> list[LeakFinding]:
    snapshot = _to_times(sample[time_column])
    if snapshot.notna().mean() < 0.95:
        return []
    findings = []
    for column in dates:
        stamps = _to_times(sample[column])
        both = (stamps.notna() & snapshot.notna()).to_numpy()
        if not both.any():
            continue
        later = int((stamps[both] > snapshot[both]).sum())
        share = later / int(both.sum())
        if share < FUTURE_MIN_SHARE or later == 0:
            continue
        reason = (
            f"written after the snapshot: later than {time_column!r} in {later:,} of the {int(both.sum()):,} "
            f"rows where both are set ({100 * share:.1f} %); a prediction at {time_column!r} cannot know it"
        )
        findings.append(LeakFinding((column,), FUTURE_TIMESTAMP, "share of rows", round(share, 4), reason))
    return findings
