"""The data contract learned from a training split, and the checks of new data against it.

A model carries the contract of the data it was trained on: each column's kind and missing rate, and
for its features the categories seen, robust numeric ranges and the reference bins of the drift check.
A new training batch or a scoring input is checked against the champion's contract before it is used,
so a renamed column, a new category or a sensor out of range is reported instead of being silently
learned from or scored. Messages and summaries name columns and counts, never values from the data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from cmms_pm.exceptions import ContractError

CONTRACT_VERSION = 1

KINDS: tuple[str, ...] = ("numeric", "integer", "categorical", "boolean", "datetime", "other")
FEATURE_KINDS: tuple[str, ...] = ("numeric", "integer", "categorical")
QUANTILES: tuple[str, ...] = ("0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99")
MAX_CATEGORIES = 200
"""Categories recorded per column, most frequent first; the rest are pooled in ``other_share``."""
RANGE_TOLERANCE = 0.05
"""A value is out of range beyond ``[min, max]`` widened by this share of the q01-q99 spread."""

_DECILES = tuple(step / 10 for step in range(1, 10))
_NUMBERS = frozenset({"numeric", "integer"})
# Kinds a declared feature kind accepts in the training data (a categorical may be coded as numbers).
_DECLARED_ACCEPTS = {
    "numeric": frozenset({"numeric", "integer", "boolean"}),
    "integer": frozenset({"numeric", "integer", "boolean"}),
    "categorical": frozenset({"categorical", "integer", "numeric", "boolean", "other"}),
}
_OBJECT_KINDS = {
    "string": "categorical",
    "boolean": "boolean",
    "integer": "integer",
    "floating": "numeric",
    "mixed-integer-float": "numeric",
    "decimal": "numeric",
    "datetime": "datetime",
    "datetime64": "datetime",
    "date": "datetime",
}


@dataclass(frozen=True)
class ColumnContract:
    """One column of the training split. Statistics are recorded for features only.

    ``kind`` is the kind observed in the data; ``declared_kind`` is how the model treats a feature
    (from the spec). Numeric features carry range and PSI statistics, categorical ones their
    categories; ``bin_shares`` has one share per bin (``len(bin_edges) + 1``), and the bin shares,
    the category shares and ``other_share`` are shares of all rows, so with ``missing_rate`` they sum to 1.
    """

    name: str
    kind: str
    feature: bool
    missing_rate: float
    declared_kind: str | None = None
    min: float | None = None
    max: float | None = None
    quantiles: Mapping[str, float] | None = None
    bin_edges: tuple[float, ...] | None = None
    bin_shares: tuple[float, ...] | None = None
    categories: Mapping[str, float] | None = None
    other_share: float | None = None
    distinct: int | None = None

    @property
    def bounds(self) -> tuple[float, float] | None:
        """``(low, high)`` outside which a value is out of range, or None without a numeric range."""
        if self.min is None or self.max is None or not self.quantiles:
            return None
        tolerance = RANGE_TOLERANCE * (self.quantiles["0.99"] - self.quantiles["0.01"])
        return self.min - tolerance, self.max + tolerance

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; fields that do not apply to the column's kind are left out."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            if value is not None:
                out[item.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnContract:
        if not isinstance(data, Mapping):
            raise ContractError(f"a data contract column is a mapping, got {type(data).__name__}")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ContractError(f"data contract column has unknown fields {unknown}")
        values = dict(data)
        for key in ("bin_edges", "bin_shares"):
            if values.get(key) is not None:
                values[key] = tuple(float(number) for number in values[key])
        try:
            column = cls(**values)
        except TypeError as err:
            raise ContractError(f"data contract column is incomplete: {err}") from err
        if column.kind not in KINDS:
            raise ContractError(f"data contract column {column.name!r} has an unknown kind")
        return column


@dataclass(frozen=True)
class DataContract:
    """What a model was trained on: target, size, label balance and one :class:`ColumnContract` a column."""

    version: int
    target: str
    rows: int
    positive_rate: float
    columns: tuple[ColumnContract, ...]

    def column(self, name: str) -> ColumnContract | None:
        return next((column for column in self.columns if column.name == name), None)

    @property
    def features(self) -> tuple[str, ...]:
        """The model's feature columns, in training-column order."""
        return tuple(column.name for column in self.columns if column.feature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "target": self.target,
            "rows": self.rows,
            "positive_rate": self.positive_rate,
            "columns": [column.to_dict() for column in self.columns],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataContract:
        """Rebuild a contract from :meth:`to_dict` output; a contract of another version is refused."""
        if not isinstance(data, Mapping):
            raise ContractError(f"a data contract is a mapping, got {type(data).__name__}")
        version = data.get("version")
        if version != CONTRACT_VERSION:
            raise ContractError(
                f"data contract version {version!r} is not supported (this code reads version "
                f"{CONTRACT_VERSION}); retrain the model to record a contract this code can read"
            )
        missing = [key for key in ("target", "rows", "positive_rate", "columns") if key not in data]
        if missing:
            raise ContractError(f"data contract is missing fields {missing}")
        return cls(
            version=CONTRACT_VERSION,
            target=str(data["target"]),
            rows=int(data["rows"]),
            positive_rate=float(data["positive_rate"]),
            columns=tuple(ColumnContract.from_dict(column) for column in data["columns"]),
        )


@dataclass
class ContractCheck:
    """A new batch (or a scoring input) against a contract: schema changes and per-column findings.

    Findings are keyed by column name and hold counts only, so they can go to logs, tags and messages.
    """

    rows: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: list[dict[str, str]] = field(default_factory=list)
    unseen_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    out_of_range: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def schema_changed(self) -> bool:
        return bool(self.added or self.removed or self.retyped)

    def schema_change_message(self) -> str:
        """One sentence naming every added, removed and retyped column ("" when the schema is unchanged)."""
        parts = []
        if self.added:
            parts.append(f"{_count(len(self.added), 'column')} added {self.added}")
        if self.removed:
            parts.append(f"{_count(len(self.removed), 'column')} removed {self.removed}")
        if self.retyped:
            changes = ", ".join(
                f"{change['column']!r} ({change['expected']} -> {change['found']})" for change in self.retyped
            )
            parts.append(f"{_count(len(self.retyped), 'column')} retyped: {changes}")
        if not parts:
            return ""
        return "schema differs from the training data's contract: " + "; ".join(parts)

    def summary(self) -> str:
        """One line of counts for a task log or a scoring summary."""
        return (
            f"{self.rows} rows; schema: {len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.retyped)} retyped; "
            f"unseen categories in {_columns_and_rows(self.unseen_categories)}; "
            f"out of range in {_columns_and_rows(self.out_of_range)}; "
            f"more missing than in training in {_columns_and_rows(self.missing)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "schema_changed": self.schema_changed,
            "added": list(self.added),
            "removed": list(self.removed),
            "retyped": [dict(change) for change in self.retyped],
            "unseen_categories": {name: dict(found) for name, found in self.unseen_categories.items()},
            "out_of_range": {name: dict(found) for name, found in self.out_of_range.items()},
            "missing": {name: dict(found) for name, found in self.missing.items()},
        }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _columns_and_rows(findings: Mapping[str, Mapping[str, Any]]) -> str:
    rows = sum(int(found["rows"]) for found in findings.values())
    return f"{_count(len(findings), 'column')} ({_count(rows, 'row')})"


def observed_kind(series: pd.Series) -> str:
    """The kind of a column's values, from its dtype; an object column is judged by its non-missing values.

    Strings and pandas categoricals are ``categorical``; an object column of mixed types is ``other``.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if ptypes.is_bool_dtype(dtype):
        return "boolean"
    if ptypes.is_integer_dtype(dtype):
        return "integer"
    if ptypes.is_float_dtype(dtype):
        return "numeric"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "datetime"
    if ptypes.is_object_dtype(dtype):
        return _OBJECT_KINDS.get(ptypes.infer_dtype(series, skipna=True), "other")
    if ptypes.is_string_dtype(dtype):
        return "categorical"
    return "other"


def derive_contract(train: pd.DataFrame, *, target: str, feature_kinds: Mapping[str, str]) -> DataContract:
    """The contract of a training split: every column but ``target``, statistics for the features.

    ``feature_kinds`` maps each of the model's features to ``numeric``, ``integer`` or ``categorical``
    (from the spec); every other column is recorded with its observed kind and ``feature=False``.
    ``target`` holds 0/1 labels.
    """
    _require_plain_columns(train)
    rows = len(train)
    if rows == 0:
        raise ContractError("cannot derive a data contract from 0 rows")
    if target not in train.columns:
        raise ContractError(f"target column {target!r} is not in the training frame")
    if target in feature_kinds:
        raise ContractError(f"target column {target!r} cannot also be a feature")
    absent = [name for name in feature_kinds if name not in train.columns]
    if absent:
        raise ContractError(f"feature columns {absent} are not in the training frame")
    bad_kinds = sorted(name for name, kind in feature_kinds.items() if kind not in FEATURE_KINDS)
    if bad_kinds:
        raise ContractError(f"feature columns {bad_kinds} need a kind among {list(FEATURE_KINDS)}")
    labels = train[target]
    if labels.isna().any() or not set(pd.unique(labels).tolist()) <= {0, 1}:
        raise ContractError(f"target column {target!r} must hold only the labels 0 and 1")

    columns = []
    for name in train.columns:
        if name == target:
            continue
        series = train[name]
        kind = observed_kind(series)
        declared = feature_kinds.get(name)
        if declared is None:
            missing_rate = float(series.isna().sum()) / rows
            columns.append(ColumnContract(name=name, kind=kind, feature=False, missing_rate=missing_rate))
        elif kind not in _DECLARED_ACCEPTS[declared]:
            raise ContractError(f"feature {name!r} is declared {declared} but its training values are {kind}")
        elif declared == "categorical":
            columns.append(_categorical_contract(name, kind, series))
        else:
            columns.append(_numeric_contract(name, kind, declared, series))
    return DataContract(
        version=CONTRACT_VERSION,
        target=target,
        rows=rows,
        positive_rate=float(labels.mean()),
        columns=tuple(columns),
    )


def _require_plain_columns(frame: pd.DataFrame) -> None:
    """Contracts key columns by name: names must be strings and unique."""
    odd = [position for position, name in enumerate(frame.columns) if not isinstance(name, str)]
    if odd:
        raise ContractError(f"column names must be strings; the columns at positions {odd} are not")
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise ContractError(f"duplicate column names {duplicated}")


def _numeric_contract(name: str, kind: str, declared: str, series: pd.Series) -> ColumnContract:
    rows = len(series)
    values, missing = numeric_values(series)
    n_missing = int(missing.sum())
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ColumnContract(
            name=name, kind=kind, feature=True, missing_rate=n_missing / rows, declared_kind=declared
        )
    levels = [*_DECILES, *(float(level) for level in QUANTILES)]
    cuts = np.quantile(finite, levels)
    low, high = float(finite.min()), float(finite.max())
    del finite
    edges = np.unique(cuts[: len(_DECILES)])
    counts = bin_counts(values, edges, n_missing)
    return ColumnContract(
        name=name,
        kind=kind,
        feature=True,
        missing_rate=n_missing / rows,
        declared_kind=declared,
        min=low,
        max=high,
        quantiles={level: float(cut) for level, cut in zip(QUANTILES, cuts[len(_DECILES) :], strict=True)},
        bin_edges=tuple(float(edge) for edge in edges),
        bin_shares=tuple(float(count) / rows for count in counts),
    )


def bin_counts(values: np.ndarray, edges: np.ndarray, n_nan: int) -> np.ndarray:
    """Rows per bin ``(-inf, e1], (e1, e2], …, (ek, inf)``; NaN (``n_nan`` of them) is in no bin."""
    # searchsorted puts NaN past the last edge, so the last bin is corrected afterwards.
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    counts[-1] -= n_nan
    return counts


def _categorical_contract(name: str, kind: str, series: pd.Series) -> ColumnContract:
    rows = len(series)
    counts = category_counts(series)
    n_missing = rows - sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = ranked[:MAX_CATEGORIES]
    pooled = sum(count for _, count in ranked[MAX_CATEGORIES:])
    return ColumnContract(
        name=name,
        kind=kind,
        feature=True,
        missing_rate=n_missing / rows,
        declared_kind="categorical",
        categories={key: count / rows for key, count in kept},
        other_share=pooled / rows,
        distinct=len(counts),
    )


def numeric_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(values, missing)`` as float and bool arrays; a value that is not a number is NaN but not missing."""
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype) or (
        ptypes.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
    ):
        values = series.to_numpy(dtype=float, na_value=np.nan)
        return values, np.isnan(values)
    missing = series.isna().to_numpy()
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return values, missing


def category_key(value: Any) -> str:
    """The contract's text for a category: strings as they are, whole numbers without ``.0``.

    So a categorical column coded 1/2/3 keeps its categories when missing values turn it into floats.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value)


def category_counts(series: pd.Series) -> dict[str, int]:
    """Rows per category key (missing values left out), one pass over the column."""
    counts = series.value_counts(dropna=True, sort=False)
    out: dict[str, int] = {}
    for value, count in zip(counts.index, counts.to_numpy(), strict=True):
        if count:
            key = category_key(value)
            out[key] = out.get(key, 0) + int(count)
    return out


def _compatible(expected: str, found: str) -> bool:
    """Integers that became floats (NaN does that) are not a retype; any other change of kind is."""
    return expected == found or (expected in _NUMBERS and found in _NUMBERS)


def check_batch(
    frame: pd.DataFrame, contract: DataContract, *, ignore: Collection[str] = ()
) -> ContractCheck:
    """Compare a batch with a contract: schema changes of any column, then findings for the features.

    The contract's target and the columns in ``ignore`` (ids, say) are neither added, removed nor
    checked. A column with no values at all is not a retype (its missing share is reported instead).
    """
    return _check(frame, contract, ignore)[0]


def check_and_flag(
    frame: pd.DataFrame, contract: DataContract, *, ignore: Collection[str] = ()
) -> tuple[ContractCheck, pd.DataFrame]:
    """``check_batch`` and ``flag_rows`` of one input (a scoring batch) in one pass over its features:
    each feature column is read, counted and masked once for both."""
    check, scans = _check(frame, contract, ignore)
    return check, _flags(frame, contract, scans)


@dataclass
class _FeatureScan:
    """One feature column read once: its missing rows and the rows with its own kind of problem."""

    missing: np.ndarray
    issue: str
    bad: np.ndarray | None  # None: a numeric feature without bounds
    distinct_bad: int = 0  # distinct unseen category keys


def _scan(series: pd.Series, column: ColumnContract) -> _FeatureScan:
    if column.categories is not None:
        distinct = series.value_counts(dropna=True, sort=False).index
        unseen = [value for value in distinct if category_key(value) not in column.categories]
        bad = series.isin(unseen).to_numpy() if unseen else np.zeros(len(series), dtype=bool)
        keys = {category_key(value) for value in unseen}
        return _FeatureScan(series.isna().to_numpy(), "unseen_category", bad, len(keys))
    values, missing = numeric_values(series)
    return _FeatureScan(missing, "out_of_range", _outside(values, missing, column))


def _check(
    frame: pd.DataFrame, contract: DataContract, ignore: Collection[str]
) -> tuple[ContractCheck, dict[str, _FeatureScan]]:
    _require_plain_columns(frame)
    rows = len(frame)
    skip = {contract.target, *ignore}
    names = [column.name for column in contract.columns]
    expected = set(names) | skip
    check = ContractCheck(
        rows=rows,
        added=[name for name in frame.columns if name not in expected],
        removed=[name for name in names if name not in frame.columns and name not in skip],
    )
    scans: dict[str, _FeatureScan] = {}
    for column in contract.columns:
        if column.name in skip or column.name not in frame.columns:
            continue
        series = frame[column.name]
        found = observed_kind(series)
        if not _compatible(column.kind, found) and series.notna().any():
            check.retyped.append({"column": column.name, "expected": column.kind, "found": found})
            continue
        if column.feature:
            scans[column.name] = scan = _scan(series, column)
            _check_feature(check, column, scan)
    return check, scans


def _check_feature(check: ContractCheck, column: ColumnContract, scan: _FeatureScan) -> None:
    rows = check.rows
    n_missing = int(scan.missing.sum())
    count = int(scan.bad.sum()) if scan.bad is not None else 0
    if count and scan.issue == "unseen_category":
        check.unseen_categories[column.name] = {"rows": count, "values": scan.distinct_bad}
    elif count:
        check.out_of_range[column.name] = {"rows": count, "share": count / rows}
    share = n_missing / rows if rows else 0.0
    if share > column.missing_rate:
        check.missing[column.name] = {
            "rows": n_missing,
            "share": share,
            "training_share": column.missing_rate,
        }


def _outside(values: np.ndarray, missing: np.ndarray, column: ColumnContract) -> np.ndarray | None:
    """Rows with a present value outside the column's bounds (a value that is not a number included)."""
    bounds = column.bounds
    if bounds is None:
        return None
    low, high = bounds
    with np.errstate(invalid="ignore"):
        inside = (values >= low) & (values <= high)
    return ~(inside | missing)


_ISSUES = ("unseen_category", "missing_value", "out_of_range")


def flag_rows(frame: pd.DataFrame, contract: DataContract) -> pd.DataFrame:
    """Per input row (same index): which contract problems its features have, for scoring outputs.

    Bool columns ``unseen_category``, ``missing_value`` and ``out_of_range``, and ``contract_issues``,
    ``""`` for a clean row, else e.g. ``"unseen_category:Type; out_of_range:Torque [Nm]"``. A feature
    absent from the frame counts as missing in every row; a value that is not a number in a numeric
    feature counts as out of range.
    """
    _require_plain_columns(frame)
    return _flags(frame, contract, {})


def feature_issues(frame: pd.DataFrame, contract: DataContract) -> list[tuple[str, str, np.ndarray]]:
    """``(issue, feature, row positions)`` for every contract problem of the frame's features, in
    the contract's feature order: what :func:`flag_rows` writes as text, for callers that want it
    structured (the predict API's ``issues``)."""
    _require_plain_columns(frame)
    return _issue_positions(frame, contract, {})


def _issue_positions(
    frame: pd.DataFrame, contract: DataContract, scans: Mapping[str, _FeatureScan]
) -> list[tuple[str, str, np.ndarray]]:
    # Only the positions of flagged rows are kept, so a clean input costs no mask per feature.
    rows = len(frame)
    found: list[tuple[str, str, np.ndarray]] = []

    def note(issue: str, name: str, mask: np.ndarray) -> None:
        where = np.flatnonzero(mask)
        if where.size:
            found.append((issue, name, where))

    for column in contract.columns:
        if not column.feature:
            continue
        if column.name not in frame.columns:
            note("missing_value", column.name, np.ones(rows, dtype=bool))
            continue
        scan = scans.get(column.name) or _scan(frame[column.name], column)
        if scan.bad is not None:
            note(scan.issue, column.name, scan.bad)
        note("missing_value", column.name, scan.missing)
    return found


def _flags(frame: pd.DataFrame, contract: DataContract, scans: Mapping[str, _FeatureScan]) -> pd.DataFrame:
    """``flag_rows`` from the features already scanned (``scans``), scanning the others."""
    import pyarrow as pa

    rows = len(frame)
    flags = {issue: np.zeros(rows, dtype=bool) for issue in _ISSUES}
    found: dict[str, list[tuple[str, np.ndarray]]] = {issue: [] for issue in _ISSUES}
    for issue, name, where in _issue_positions(frame, contract, scans):
        flags[issue][where] = True
        found[issue].append((name, where))

    # The text is built for the flagged rows only; the column of every row is then one Arrow
    # dictionary decode (a million "" through pandas cost more than the checks themselves).
    flagged = np.flatnonzero(flags["unseen_category"] | flags["missing_value"] | flags["out_of_range"])
    issues = np.full(flagged.size, "", dtype=object)
    for issue in _ISSUES:
        for name, where in found[issue]:
            label = f"{issue}:{name}"
            at = np.searchsorted(flagged, where)  # where ⊆ flagged, both sorted
            current = issues[at]
            issues[at] = np.where(current == "", label, current + "; " + label)
    labels, codes = np.unique(issues.astype(str), return_inverse=True)
    indices = np.zeros(rows, dtype=np.int32)
    indices[flagged] = codes.reshape(-1) + 1
    dictionary = pa.array(["", *labels.tolist()], type=pa.large_string())
    text = pa.DictionaryArray.from_arrays(pa.array(indices), dictionary).cast(pa.large_string())
    return pd.DataFrame({**flags, "contract_issues": pd.array(text, dtype="str")}, index=frame.index)
