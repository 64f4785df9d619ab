"""A data batch for one pipeline run: extract (generate or take the source's frame), split, write, check.

The batch is a pure function of the run's data interval, the spec and the run's params: the same
interval gives the same bytes, so a rerun or a backfill trains on exactly what the first run saw.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any, TypedDict

from cmms_pm.spec import PROJECT_DIR, FeatureSpec, ModelSpec, Split, safe_path_component

if TYPE_CHECKING:
    import pandas as pd

SYNTHETIC = "synthetic"


class SplitEntry(TypedDict):
    uri: str
    rows: int
    positives: int
    sha256: str


class Manifest(TypedDict, total=False):
    """What ``extract_data`` returns (and writes as ``manifest.json``): small, JSON, through XCom."""

    uri: str
    splits: dict[str, SplitEntry]
    rows: int
    positive_rate: float
    digest: str
    target: str
    columns: list[str]
    features: dict[str, list[str]]  # {"categorical": [...], "numeric": [...], "integer": [...]}
    leakage_excluded: dict[str, str]  # inferred features left out because they leak: column -> why
    source: str
    spec: str
    seed: int
    data_interval_start: str
    data_interval_end: str
    data_version: str
    training_date: str
    # How the batch was split (absent: the random split): strategy, train_end, validation_start,
    # holdout_start, gap_hours, label_horizon_hours, time_column, entity_column (ISO 8601 times).
    split: dict[str, Any]
    notes: list[str]  # what the data step noticed but did not refuse (time-series batches)
    snapshots: dict[str, Any]  # time-series batches: first and last snapshot, cadence


class BatchCheck(TypedDict):
    """What ``validate_batch`` returns: the rows of all splits, each split's frame report
    (``frame_checks.check_frame``), and the leakage guard's record (``leakage.guard_record``)."""

    rows: int
    splits: dict[str, dict[str, Any]]
    leakage: dict[str, Any]


def data_root() -> str:
    """Root folder or URI of pipeline data (``CMMS_DATA_ROOT``, default ``<project>/.data``)."""
    return (os.environ.get("CMMS_DATA_ROOT") or str(PROJECT_DIR / ".data")).rstrip("/")


def batch_uri(root: str, dag_id: str, run_id: str) -> str:
    """Where one run's batch lives: ``<root>/<dag_id>/<run_id made path-safe>-<hash of the run id>``.

    Different run ids never share a folder: ``a:b`` and ``a+b`` are both ``a_b`` once made path-safe,
    so the folder also carries the first 16 hex digits of the raw run id's SHA-256 (the readable part
    for people, the hash for uniqueness), e.g. ``manual__2026-03-01T03_00_00_00_00-3f2c…``.
    """
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{root}/{dag_id}/{safe_path_component(run_id)}-{digest}"


def prepare_batch(
    *,
    spec: ModelSpec,
    frame: pd.DataFrame | None,
    source: str,
    n_samples: int | None,
    target_column: str,
    interval_start: str,
    interval_end: str,
    out_uri: str,
) -> Manifest:
    """Label, drop, split and write the batch for a data interval; return the manifest.

    ``frame`` is what the source returned (None: generate ``n_samples`` synthetic rows for the
    interval). The target is renamed to the spec's name if the run names another column, mapped to
    1 (the spec's positive label) / 0; the spec's ``drop`` columns go; every other column is kept, so
    ``validate_data`` can see a schema change. Feature columns are the spec's, or inferred here.
    """
    from cmms_pm.data import generate_telemetry, interval_seed, split_frame, write_batch
    from cmms_pm.exceptions import DataSourceError, DataValidationError
    from cmms_pm.frame_checks import normalize_labels, overflow_problems

    seed = interval_seed(interval_start, interval_end)
    if frame is None:
        frame = generate_telemetry(int(n_samples or spec.source.get("n_samples", 20000)), seed)
    if target_column != spec.target:
        if spec.target in frame.columns:
            raise DataSourceError(
                f"the source has both {target_column!r} and the spec's target {spec.target!r}; "
                f"drop one or trigger with target_column={spec.target!r}"
            )
        frame = frame.rename(columns={target_column: spec.target})
    frame = normalize_labels(
        frame, target=spec.target, positive=spec.positive_label, negative=spec.negative_label
    )
    split = spec.split
    # A time or group split reads its columns even when the spec drops them (ids, timestamps).
    aside = [c for c in (split.get("time_column"), split.get("entity_column")) if c and c in spec.drop]
    kept = frame[[c for c in aside if c in frame.columns]]
    frame = frame.drop(columns=[column for column in spec.drop if column in frame.columns])
    features = resolve_features(spec, frame)
    problems = overflow_problems(frame, features)
    if problems:
        raise DataValidationError("; ".join(problems))
    frame = categories_as_text(frame, features)
    record = None
    if split["strategy"] == "random":
        splits = split_frame(frame, seed, target=spec.target)
    else:
        with_columns = frame.assign(**{c: kept[c] for c in kept.columns})
        splits, record = split_by_columns(with_columns, split, seed=seed, target=spec.target)
        splits = {name: part.drop(columns=list(kept.columns)) for name, part in splits.items()}
        record = {**record, "rows": {name: len(part) for name, part in splits.items()}}
    del frame  # the splits are a copy of every row: no need to hold both while writing
    features, leaking = without_inferred_leaks(spec, features, splits["train"])
    return write_batch(
        splits,
        out_uri,
        target=spec.target,
        metadata={
            **({"split": record} if record is not None else {}),
            "features": feature_kinds(features),
            **({"leakage_excluded": leaking} if leaking else {}),
            "source": source,
            "spec": spec.name,
            "seed": seed,
            "data_interval_start": interval_start,
            "data_interval_end": interval_end,
            "data_version": f"{interval_start}/{interval_end}",
            "training_date": interval_end[:10],
        },
    )


def split_by_columns(
    frame: pd.DataFrame, split: Split, *, seed: int, target: str
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """A flat batch split by its time column (purged gaps, optionally grouped) or by entity; every
    part must hold both labels of ``target``."""
    from cmms_pm.timeseries.split import group_split_frame, time_split_frame

    validation, holdout = split["validation"], split["holdout"]
    if split["strategy"] == "time":
        return time_split_frame(
            frame, time_column=split["time_column"], gap_hours=split["gap_hours"],
            entity_column=split.get("entity_column"), seed=seed,
            validation=validation, holdout=holdout, target=target,
        )  # fmt: skip
    return group_split_frame(
        frame,
        entity_column=split["entity_column"],
        seed=seed,
        validation=validation,
        holdout=holdout,
        target=target,
    )


def resolve_features(spec: ModelSpec, frame: pd.DataFrame) -> FeatureSpec:
    """The spec's declared features, or those inferred from ``frame`` when the spec says ``infer``."""
    if not spec.features.infer:
        return spec.features
    from cmms_pm.inference import infer_features

    inferred = infer_features(frame, target=spec.target, drop=spec.drop, exclude=spec.features.exclude)
    return inferred.as_feature_spec(spec.features)


def without_inferred_leaks(
    spec: ModelSpec, features: FeatureSpec, train: pd.DataFrame
) -> tuple[FeatureSpec, dict[str, str]]:
    """Inferred ``features`` minus the columns that leak the label in the train split (unless the spec
    accepts them), and why each went: inference never makes a leak a feature. Declared features are
    left as written: ``validate_data`` refuses a leaking one by name."""
    if not spec.features.infer:
        return features, {}
    from dataclasses import replace

    from cmms_pm.leakage import find_leaks

    columns = list(features.declared)
    time_column = _time_column(spec)
    report = find_leaks(train, spec.target, columns=columns, timestamps=columns, time_column=time_column)
    _, refused = report.split(spec.leakage_accept)
    accept = set(spec.leakage_accept)
    leaking = {
        column: why
        for column, why in report.leaking.items()
        if column not in accept and any(column in finding.columns for finding in refused)
    }
    if not leaking:
        return features, {}

    def kept(columns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(column for column in columns if column not in leaking)

    narrowed = replace(
        features,
        categorical=kept(features.categorical),
        numeric=kept(features.numeric),
        integer=kept(features.integer),
    )
    return narrowed, leaking


def check_leakage(
    frame: pd.DataFrame, spec: ModelSpec, features: FeatureSpec, manifest: Manifest
) -> dict[str, Any]:
    """The leakage guard on a batch's train split: :class:`~cmms_pm.exceptions.LabelLeakError` for a
    leaking feature the spec does not accept; else what the run records (:func:`guard_record`)."""
    from cmms_pm.leakage import check_features, guard_record

    split = manifest.get("split")  # the batch's own split record names its time column (seams)
    time_column = (split.get("time_column") if isinstance(split, dict) else None) or _time_column(spec)
    report = check_features(
        frame,
        spec.target,
        features=list(features.declared),
        accept=spec.leakage_accept,
        time_column=time_column if time_column in frame.columns else None,
    )
    return guard_record(report, spec.leakage_accept, manifest.get("leakage_excluded"))


def _time_column(spec: ModelSpec) -> str | None:
    """The rows' own time (snapshot) column, when the spec names one (``split.time_column``)."""
    split = spec.raw.get("split")
    return split.get("time_column") if isinstance(split, dict) else None


def categories_as_text(frame: pd.DataFrame, features: FeatureSpec) -> pd.DataFrame:
    """Categorical features as text, the one form training, the contract and scoring compare
    (``3`` and ``3.0`` become ``"3"``); ``DataValidationError`` for values that are no category."""
    from cmms_pm.frame_checks import categorical_text

    present = [column for column in features.categorical if column in frame.columns]
    if not present:
        return frame
    return frame.assign(**{column: categorical_text(frame[column]) for column in present})


def feature_kinds(features: FeatureSpec) -> dict[str, list[str]]:
    return {
        "categorical": list(features.categorical),
        "numeric": list(features.numeric),
        "integer": list(features.integer),
    }


def manifest_features(spec: ModelSpec, manifest: Manifest) -> FeatureSpec:
    """The batch's resolved features (from its manifest) with the spec's categories and ranges."""
    kinds = manifest["features"]
    return FeatureSpec(
        categorical=tuple(kinds["categorical"]),
        numeric=tuple(kinds["numeric"]),
        integer=tuple(kinds["integer"]),
        categories=spec.features.categories,
        ranges=spec.features.ranges,
    )


def read_batch(manifest: Manifest, columns: list[str] | None = None) -> pd.DataFrame:
    """All splits of a written batch as one frame (train, validation, holdout, in that order), each
    checked against the SHA-256 its manifest recorded."""
    from cmms_pm.data import read_splits

    splits = list(manifest["splits"].values())
    return read_splits(
        [split["uri"] for split in splits], columns=columns, sha256s=[split["sha256"] for split in splits]
    )


#: The split record's keys a training run logs as MLflow params (besides ``split_strategy``).
SPLIT_PARAMS = ("train_end", "validation_start", "holdout_start", "gap_hours", "label_horizon_hours")


def split_params(manifest: Manifest) -> dict[str, Any]:
    """The batch's split as training-run params: ``split_strategy`` (``random`` for a batch without a
    split record) and, for a time split, ``train_end``, ``holdout_start`` (ISO 8601), ... ."""
    split = manifest.get("split") or {"strategy": "random"}
    return {"split_strategy": split["strategy"], **{k: split[k] for k in SPLIT_PARAMS if k in split}}


def split_periods(split: dict[str, Any] | None) -> str:
    """One line for people: ``time split: train before 2026-03-01, validation 2026-03-03 ..``."""
    if not split or split.get("strategy", "random") == "random":
        return ""
    if split["strategy"] == "group":
        return f"group split by {split.get('entity_column')!r}"
    text = (
        f"time split: train {split.get('train_start', '')[:16]} .. {split['train_end'][:16]}, validation "
        f"{split['validation_start'][:16]} .. {split['validation_end'][:16]}, holdout "
        f"{split['holdout_start'][:16]} .. {split.get('holdout_end', '')[:16]} (gaps {split['gap_hours']:g} h"
    )
    if split.get("label_horizon_hours") is not None:
        text += f", label horizon {split['label_horizon_hours']:g} h"
    return text + (f", grouped by {split['entity_column']!r})" if split.get("entity_column") else ")")


def validate_batch(manifest: Manifest, spec: ModelSpec) -> BatchCheck:
    """Check every split of a written batch against the spec; ``DataValidationError`` names the problem."""
    from cmms_pm.data import read_split
    from cmms_pm.exceptions import DataValidationError
    from cmms_pm.frame_checks import check_frame

    features = manifest_features(spec, manifest)
    reports = {}
    leakage: dict[str, Any] = {}
    for name, split in manifest["splits"].items():
        frame = read_split(split["uri"], sha256=split["sha256"])
        try:
            # Splits are a fraction of the batch; the minimum size applies to the whole batch.
            reports[name] = check_frame(
                frame,
                features=features,
                target=manifest["target"],
                min_rows=1,
                max_missing_rate=spec.validation["max_missing_rate"],
            )
            if name == "train":  # what the model learns from: the leakage guard (cmms_pm.leakage)
                leakage = check_leakage(frame, spec, features, manifest)
        except DataValidationError as err:
            raise type(err)(f"{name} split of {manifest['uri']}: {err}") from err
        del frame
    total = sum(report["rows"] for report in reports.values())
    minimum = spec.validation["min_rows"]
    if total < minimum:
        raise DataValidationError(
            f"batch {manifest['uri']} has {total} rows, fewer than the minimum {minimum}"
        )
    return {"rows": total, "splits": reports, "leakage": leakage}
