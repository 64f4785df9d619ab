"""Which columns of a frame are features, of which kind, and which label is the positive one.

Used twice with the same rules: by the scaffold (``make new-model``) to write a spec a person
reviews, and at run time for a spec with ``features: {infer: true}``. The rules look only at the
frame's dtypes, values and column names, so the same file always gives the same answer.

Reasons for dropping a column start with one of :data:`DROP_KINDS` (``"id-like: unique per row"``),
so callers can sort them; they name counts, never values from the data.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from cmms_pm.exceptions import DataValidationError
from cmms_pm.spec import COLUMN_NAME_PATTERN, FeatureSpec

#: A text column is categorical with at most this many distinct values ...
MAX_CATEGORIES = 50
#: ... and at most this share of the rows (else each value describes only a row or two).
MAX_CATEGORY_SHARE = 0.5
#: Words that make a column name an identifier (``UDI``, ``Product ID``, ``equipment_id``, ``uuid``).
ID_NAME_TOKENS = frozenset({"id", "ids", "uid", "uuid", "guid", "udi", "key", "serial", "pk"})
#: A text column is a timestamp when this share of its distinct values (up to
#: ``_DATE_SAMPLE``) looks like and parses as a date.
DATE_SHARE = 0.95
_DATE_SAMPLE = 1000

ID_LIKE = "id-like"
CONSTANT = "constant"
FREE_TEXT = "free text"
TIMESTAMP = "timestamp"
UNSUPPORTED = "unsupported"
UNUSABLE_NAME = "unusable name"
DROP_KINDS = (ID_LIKE, CONSTANT, FREE_TEXT, TIMESTAMP, UNSUPPORTED, UNUSABLE_NAME)

_NAME_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
#: A date, optionally followed by a time (``T10:00:00Z``, `` 10:00``); pandas then has to parse it.
_DATE_TEXT = (
    r"(?:\d{4}[-/]\d{1,2}[-/]\d{1,2}"  # ISO 2024-06-01, 2024/06/01
    r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}"  # 01/06/2024, 1.6.2024
    r"|\d{1,2} [A-Za-z]{3,9} \d{4}|[A-Za-z]{3,9} \d{1,2},? \d{4})"  # 1 June 2024, Jun 1, 2024
    r"(?:[ T]\d{1,2}:\d{2}\S*)?"
)


@dataclass(frozen=True)
class InferredFeatures:
    """Feature columns by kind, each in the frame's column order, and every other column with why."""

    numeric: tuple[str, ...] = ()
    integer: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    dropped: Mapping[str, str] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        """Every feature column: categorical, then numeric, then integer (as ``FeatureSpec.declared``)."""
        return (*self.categorical, *self.numeric, *self.integer)

    @property
    def id_like(self) -> tuple[str, ...]:
        """The dropped columns that identify a row or an entity: a spec's ``id_columns``."""
        return tuple(column for column, why in self.dropped.items() if why.startswith(ID_LIKE))

    def kind_of(self, column: str) -> str:
        """``"categorical"``, ``"numeric"``, ``"integer"`` or ``"dropped"``."""
        for kind in ("categorical", "numeric", "integer"):
            if column in getattr(self, kind):
                return kind
        return "dropped"

    def as_feature_spec(self, base: FeatureSpec | None = None) -> FeatureSpec:
        """``base`` (default: an empty spec) with the inferred columns declared and ``infer`` off.

        ``exclude`` is kept; ``categories`` and ``ranges`` are kept for the columns that are still
        features of a matching kind, so the result is consistent whatever ``base`` said.
        """
        base = base if base is not None else FeatureSpec()
        measured = {*self.numeric, *self.integer}
        return replace(
            base,
            numeric=self.numeric,
            integer=self.integer,
            categorical=self.categorical,
            infer=False,
            categories={c: v for c, v in base.categories.items() if c in self.categorical},
            ranges={c: v for c, v in base.ranges.items() if c in measured},
        )


def infer_features(
    frame: pd.DataFrame, *, target: str, drop: Collection[str] = (), exclude: Collection[str] = ()
) -> InferredFeatures:
    """Classify every column of ``frame`` but ``target``, ``drop`` and ``exclude``, in column order.

    The first rule that applies decides:

    1. A name a spec cannot hold (blank ends, tab/newline, over 200 characters) → dropped,
       ``unusable name``.
    2. At most one distinct value, missing counted as a value → dropped, ``constant``. A column that
       is sometimes missing is kept: whether a value is missing can carry signal.
    3. Booleans (``bool`` dtype, or only ``True``/``False`` objects) → ``integer`` 0/1 rather than
       categorical: two values carry the same information either way, but as 0/1 the column passes
       unchanged through every estimator, can never show an "unseen category", and its missing
       values take the numeric path (native in gradient boosting, imputed for logistic regression).
    4. Datetime dtypes, ``date``/``datetime`` objects, and text whose distinct values look like and
       parse as dates (≥ 95 % of up to 1,000 sampled) → dropped, ``timestamp``: a point in time does
       not recur, so a model would learn the training period rather than the machine.
    5. Integer dtype (or Python ints in an object column): unique per row → ``id-like`` (a row
       number or key; in a large frame no reading is unique per row). A name whose words include
       ``id``, ``uid``, ``uuid``, ``guid``, ``udi``, ``key``, ``serial`` or ``pk`` (``UDI``,
       ``Product ID``, ``machineId``; not ``humidity``) → ``id-like`` too. Else ``integer``.
    6. Float dtype (or decimals): ``numeric``, unless named like an id with whole-number values (an
       integer id with gaps, read as float) → ``id-like``. Float readings are often unique per row,
       so uniqueness alone never makes a float an id.
    7. Text or category dtype: named like an id → ``id-like``; at most 50 distinct values that are
       at most 50 % of the rows → ``categorical``; unique per non-missing row → ``id-like`` (a key
       such as a product serial); otherwise → ``free text`` (too many values to learn from, too few
       to be a key).
    8. Anything else (timedelta, complex, bytes, nested lists) → dropped, ``unsupported``.

    A column named in ``drop`` or ``exclude`` but missing from the frame is ignored (an exclude list
    may name columns of other batches); a missing ``target`` or duplicate column names fail.
    """
    _check_columns(frame, target)
    if len(frame) == 0:
        raise DataValidationError("the frame has 0 rows: there is nothing to infer features from")
    skip = {target, *drop, *exclude}
    kinds: dict[str, list[str]] = {"numeric": [], "integer": [], "categorical": []}
    dropped: dict[str, str] = {}
    for column in frame.columns:
        if column in skip:
            continue
        kind, why = _classify(column, frame[column])
        if kind == "dropped":
            dropped[column] = why
        else:
            kinds[kind].append(column)
    return InferredFeatures(
        numeric=tuple(kinds["numeric"]),
        integer=tuple(kinds["integer"]),
        categorical=tuple(kinds["categorical"]),
        dropped=dropped,
    )


def infer_positive_label(labels: pd.Series, positive: Any = None) -> tuple[Any, Any]:
    """``(positive, negative)`` of a binary label column: the minority class is positive (the rare
    event a predictive-maintenance model is for), or ``positive`` when given.

    ``positive`` is compared as text, so ``POSITIVE=1`` from a command line matches the integer
    ``1`` (and ``1.0``), and ``true`` matches ``True``. Exactly two distinct non-missing labels are
    required; missing labels are not counted here (the caller decides whether they are allowed).
    On a tie the label that sorts last as text is positive (``1`` over ``0``, ``yes`` over ``no``).
    Labels come back as plain Python values (``str``, ``int``, ``bool``; a whole float as ``int``).
    """
    column = labels.name if labels.name is not None else "target"
    counts = labels.value_counts(dropna=True, sort=False)
    if len(counts) != 2:
        raise DataValidationError(
            f"target column {column!r} needs exactly two distinct labels, found {len(counts)}"
            f"{_describe_counts(counts)}"
        )
    values = [_label_value(value) for value in counts.index]
    count = dict(zip(values, counts.to_numpy().tolist(), strict=True))
    if positive is not None:
        matches = [value for value in values if _label_text(value) == _label_text(positive)]
        if not matches:
            raise DataValidationError(
                f"positive label {positive!r} does not occur in target column {column!r}; "
                f"its labels are{_describe_counts(counts)[1:]}"
            )
        if len(matches) > 1:
            raise DataValidationError(
                f"positive label {positive!r} matches both labels of target column {column!r} as text; "
                "give the labels distinct text"
            )
        chosen = matches[0]
    else:
        chosen = min(values, key=lambda value: (count[value], _reverse_text(value)))
    first_is_chosen = values[0] is chosen
    return chosen, values[1] if first_is_chosen else values[0]


def looks_like_id_name(name: str) -> bool:
    """True when one of the words of ``name`` is in :data:`ID_NAME_TOKENS` (camelCase and ``[units]``
    split: ``Product ID``, ``machineId`` and ``UDI`` are ids; ``humidity`` and ``Torque [Nm]`` are not)."""
    return any(token.lower() in ID_NAME_TOKENS for token in _NAME_TOKEN.findall(name))


def _check_columns(frame: pd.DataFrame, target: str) -> None:
    names = list(frame.columns)
    not_text = [name for name in names if not isinstance(name, str)]
    if not_text:
        raise DataValidationError(f"column names must be text; {len(not_text)} are not: {not_text[:5]!r}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        shown = ", ".join(f"{name!r} ({names.count(name)} times)" for name in duplicated)
        raise DataValidationError(f"duplicate column names: {shown}; each column needs a name of its own")
    if target not in names:
        raise DataValidationError(f"target column {target!r} is not in the frame; its columns are {names}")


def _classify(name: str, series: pd.Series) -> tuple[str, str]:
    """``(kind, reason)``: kind is ``numeric``/``integer``/``categorical`` (reason empty) or ``dropped``."""
    if re.search(COLUMN_NAME_PATTERN, name) is None:
        return "dropped", f"{UNUSABLE_NAME}: blank ends, a tab or newline, or over 200 characters"
    n_rows = len(series)
    try:
        distinct = series.nunique(dropna=False)
    except TypeError:  # unhashable cells: lists or mappings from nested Parquet/JSON
        return "dropped", f"{UNSUPPORTED}: nested values (lists or mappings)"
    if distinct <= 1:
        detail = "missing in every row" if series.isna().all() else "one value in every row"
        return "dropped", f"{CONSTANT}: {detail}"
    dtype = series.dtype
    values = pd.api.types.infer_dtype(series, skipna=True) if pd.api.types.is_object_dtype(dtype) else ""
    if pd.api.types.is_bool_dtype(dtype) or values == "boolean":
        return "integer", ""
    if isinstance(dtype, pd.DatetimeTZDtype | pd.PeriodDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return "dropped", f"{TIMESTAMP}: datetime values"
    if values in ("date", "datetime", "datetime64"):
        return "dropped", f"{TIMESTAMP}: date or datetime values"
    if pd.api.types.is_integer_dtype(dtype) or values == "integer":
        return _integer_kind(name, series, n_rows)
    if pd.api.types.is_float_dtype(dtype) or values in ("floating", "decimal", "mixed-integer-float"):
        if looks_like_id_name(name) and _whole_numbers(series):
            return "dropped", f"{ID_LIKE}: named like an identifier, whole numbers"
        return "numeric", ""
    if _is_text(series) or values in ("string", "mixed", "mixed-integer"):
        return _text_kind(name, series, n_rows)
    return "dropped", f"{UNSUPPORTED}: dtype {dtype}"


def _integer_kind(name: str, series: pd.Series, n_rows: int) -> tuple[str, str]:
    if not series.hasnans and series.nunique() == n_rows:
        return "dropped", f"{ID_LIKE}: unique per row"
    if looks_like_id_name(name):
        return "dropped", f"{ID_LIKE}: named like an identifier"
    return "integer", ""


def _text_kind(name: str, series: pd.Series, n_rows: int) -> tuple[str, str]:
    present = series.dropna()
    text = present.astype(str)
    distinct = text.nunique()
    unique = distinct == len(present)
    if looks_like_id_name(name):
        why = "unique per row" if unique else f"named like an identifier ({distinct:,} distinct values)"
        return "dropped", f"{ID_LIKE}: {why}"
    if _looks_like_dates(text):
        return "dropped", f"{TIMESTAMP}: text that parses as dates"
    if distinct <= MAX_CATEGORIES and distinct <= MAX_CATEGORY_SHARE * n_rows:
        return "categorical", ""
    if unique:
        missing = n_rows - len(present)
        return "dropped", f"{ID_LIKE}: unique per row" + (f" ({missing:,} missing)" if missing else "")
    return "dropped", f"{FREE_TEXT}: {distinct:,} distinct values in {n_rows:,} rows"


def _is_text(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(series.dtype)


def _whole_numbers(series: pd.Series) -> bool:
    present = pd.to_numeric(series.dropna(), errors="coerce")
    return bool(present.notna().all() and (present % 1 == 0).all())


def _looks_like_dates(text: pd.Series) -> bool:
    sample = pd.Series(text.drop_duplicates().head(_DATE_SAMPLE).str.strip())
    if sample.empty:
        return False
    shaped = sample[sample.str.fullmatch(_DATE_TEXT)]
    if len(shaped) < DATE_SHARE * len(sample):
        return False
    parsed = pd.to_datetime(shaped, errors="coerce", format="mixed")
    return bool(parsed.notna().sum() >= DATE_SHARE * len(sample))


def _native(value: Any) -> Any:
    """A numpy scalar as the Python value (``np.int64(1)`` → ``1``), so YAML and JSON can hold it."""
    return value.item() if isinstance(value, np.generic) else value


def _label_value(value: Any) -> Any:
    """A label as a plain Python value a spec can hold: numpy scalars unwrapped, ``1.0`` → ``1``."""
    value = _native(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _label_text(value: Any) -> str:
    """A label as comparable text: ``1``, ``1.0``, ``"1"`` → ``"1"``; ``True``, ``"true"`` → ``"true"``."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value)
    return text.lower() if text.lower() in ("true", "false") else text


def _reverse_text(value: Any) -> tuple[int, ...]:
    """A sort key that orders labels by their text, last first (the tie-break of the minority rule)."""
    return tuple(-ord(char) for char in _label_text(value)) + (0,)


def _describe_counts(counts: pd.Series, limit: int = 10) -> str:
    """``": 'no' (9,661), 'yes' (339)"`` for up to ``limit`` labels, else only how many there are."""
    if counts.empty or len(counts) > limit:
        return ""
    ordered = counts.sort_values(ascending=False, kind="stable")
    return ": " + ", ".join(f"{_native(label)!r} ({n:,})" for label, n in ordered.items())
