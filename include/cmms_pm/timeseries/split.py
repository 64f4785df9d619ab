"""Forward-looking splits: train on the past, validate next, hold out the latest, with purged gaps.

A random row split of time series measures memory: neighbouring snapshots of one asset are near
copies with the same label. :func:`time_boundaries` cuts the period instead — train, a gap,
validation, a gap, holdout — where each gap is at least the label horizon, so no training label
(failures in ``(t, t + H]``) reaches into the period that judges it. With ``group`` the three parts
also hold disjoint entities (:func:`entity_groups`), which tests generalisation to unseen assets.

Flat tables may choose the same splits (spec ``split: {strategy: time|group}``):
:func:`time_split_frame` and :func:`group_split_frame`. Every split returns its record, written to
the batch manifest and logged with the training run (``split_strategy``, ``train_end``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from cmms_pm.exceptions import DataValidationError

if TYPE_CHECKING:
    import pandas as pd

PARTS = ("train", "validation", "holdout")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


@dataclass(frozen=True)
class TimeBoundaries:
    """Epoch seconds: train ``t < train_end``; validation ``validation_start <= t < validation_end``;
    holdout ``holdout_start <= t <= last``. ``validation_start - train_end`` and
    ``holdout_start - validation_end`` are the gap."""

    first: int
    train_end: int
    validation_start: int
    validation_end: int
    holdout_start: int
    last: int
    gap: int

    def record(self, **extra: Any) -> dict[str, Any]:
        """The manifest's ``split`` record (ISO 8601 times)."""
        return {
            "strategy": "time",
            "train_start": _iso(self.first),
            "train_end": _iso(self.train_end),
            "validation_start": _iso(self.validation_start),
            "validation_end": _iso(self.validation_end),
            "holdout_start": _iso(self.holdout_start),
            "holdout_end": _iso(self.last),
            "gap_hours": self.gap / 3600,
            **extra,
        }

    def sql_part(self, column: str) -> str:
        """A SQL expression naming each row's part (NULL in a gap)."""
        return (
            f"CASE WHEN {column} < {self.train_end} THEN 'train' "
            f"WHEN {column} >= {self.validation_start} AND {column} < {self.validation_end} "
            "THEN 'validation' "
            f"WHEN {column} >= {self.holdout_start} THEN 'holdout' END"
        )


def time_boundaries(first: int, last: int, *, validation: float, holdout: float, gap: int) -> TimeBoundaries:
    """Cut ``[first, last]`` (epoch seconds of the labelled rows) into train, validation and holdout
    shares of the time that is not gap; :class:`DataValidationError` if the period is too short."""
    usable = (last - first) - 2 * gap
    if usable <= 0:
        raise DataValidationError(
            f"the labelled period {_iso(first)} .. {_iso(last)} is shorter than the two purged gaps of "
            f"{gap / 3600:g} h a time split needs: train on a longer window"
        )
    train_end = first + int(round((1 - validation - holdout) * usable))
    validation_start = train_end + gap
    validation_end = validation_start + int(round(validation * usable))
    holdout_start = validation_end + gap
    if not (first < train_end <= validation_start < validation_end <= holdout_start <= last):
        raise DataValidationError(f"the labelled period {_iso(first)} .. {_iso(last)} is too short to split")
    return TimeBoundaries(first, train_end, validation_start, validation_end, holdout_start, last, gap)


def entity_groups(entities: Sequence[Any], *, seed: int, validation: float, holdout: float) -> dict[Any, str]:
    """Each entity's part (train/validation/holdout), shuffled by ``seed``: the same entities and
    seed always give the same groups; every part gets at least one entity."""
    ordered = sorted(set(entities), key=str)
    if len(ordered) < len(PARTS):
        raise DataValidationError(
            f"a grouped split needs at least {len(PARTS)} entities, the batch has {len(ordered)}"
        )
    order = np.random.default_rng(seed).permutation(len(ordered))
    n = len(ordered)
    n_holdout = max(1, int(round(holdout * n)))
    n_validation = max(1, int(round(validation * n)))
    n_train = n - n_holdout - n_validation
    if n_train < 1:
        raise DataValidationError(f"a grouped split of {n} entities leaves none to train on")
    parts = ["train"] * n_train + ["validation"] * n_validation + ["holdout"] * n_holdout
    return {ordered[i]: parts[rank] for rank, i in enumerate(order)}


# --- flat frames ---------------------------------------------------------------------------------


def _epochs(frame: pd.DataFrame, column: str) -> np.ndarray:
    import pandas as pd

    if column not in frame.columns:
        raise DataValidationError(f"split.time_column {column!r} is not in the batch")
    values = frame[column]
    try:
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    except (TypeError, ValueError):
        parsed = pd.Series(pd.NaT, index=values.index)
    bad = int((parsed.isna() & values.notna()).sum())
    missing = int(values.isna().sum())
    if bad or missing:
        raise DataValidationError(
            f"split.time_column {column!r}: {bad:,} values do not parse as timestamps and {missing:,} are "
            "missing; a time split needs a time for every row"
        )
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")


def time_split_frame(
    frame: pd.DataFrame,
    *,
    time_column: str,
    validation: float,
    holdout: float,
    gap_hours: float,
    entity_column: str | None = None,
    seed: int = 0,
    target: str | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """A flat table split by its time column (rows in time order within each part); with
    ``entity_column`` the parts also hold disjoint entities. Returns the splits and their record."""
    seconds = _epochs(frame, time_column)
    bounds = time_boundaries(
        int(seconds.min()),
        int(seconds.max()),
        validation=validation,
        holdout=holdout,
        gap=int(gap_hours * 3600),
    )
    part = np.full(len(frame), "", dtype=object)
    part[seconds < bounds.train_end] = "train"
    part[(seconds >= bounds.validation_start) & (seconds < bounds.validation_end)] = "validation"
    part[seconds >= bounds.holdout_start] = "holdout"
    record = bounds.record(time_column=time_column)
    if entity_column:
        groups = _groups_of(frame, entity_column, seed=seed, validation=validation, holdout=holdout)
        part[groups != part] = ""
        record["entity_column"] = entity_column
    order = np.argsort(seconds, kind="stable")
    splits = {name: frame.iloc[order[part[order] == name]].reset_index(drop=True) for name in PARTS}
    record["rows_in_gaps"] = int((part == "").sum())
    _require_rows(splits, record, target)
    return splits, record


def group_split_frame(
    frame: pd.DataFrame,
    *,
    entity_column: str,
    validation: float,
    holdout: float,
    seed: int,
    target: str | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """A flat table split by entity: every row of one entity lands in the same part."""
    part = _groups_of(frame, entity_column, seed=seed, validation=validation, holdout=holdout)
    splits = {name: frame[part == name].reset_index(drop=True) for name in PARTS}
    record = {"strategy": "group", "entity_column": entity_column}
    _require_rows(splits, record, target)
    return splits, record


def _groups_of(
    frame: pd.DataFrame, column: str, *, seed: int, validation: float, holdout: float
) -> np.ndarray:
    if column not in frame.columns:
        raise DataValidationError(f"split.entity_column {column!r} is not in the batch")
    keys = frame[column].astype("str")
    if frame[column].isna().any():
        raise DataValidationError(
            f"split.entity_column {column!r} has {int(frame[column].isna().sum()):,} missing values"
        )
    groups = entity_groups(keys.unique().tolist(), seed=seed, validation=validation, holdout=holdout)
    return keys.map(groups).to_numpy(dtype=object)


def _require_rows(splits: dict[str, pd.DataFrame], record: dict[str, Any], target: str | None) -> None:
    for name, part in splits.items():
        if len(part) == 0:
            raise DataValidationError(f"the {record['strategy']} split left no row in {name}")
        if target is not None and target in part.columns and part[target].nunique() < 2:
            raise DataValidationError(
                f"the {name} part of the {record['strategy']} split has only one class; it cannot be "
                "trained or judged on (more data, or other split shares)"
            )
