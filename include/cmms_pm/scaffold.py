"""``make new-model``: a first spec for a data file, inferred from the file, for a person to review.

    python -m cmms_pm.scaffold --name ai4i --source .data/incoming/ai4i.csv --target "Machine failure"

Reads a local CSV or Parquet file, infers the positive label (the minority class unless given) and
the features (:mod:`cmms_pm.inference`), writes ``<models dir>/<name>.yaml`` with a comment on every
inferred choice, and says what it inferred. The file is checked twice before it replaces anything:
the YAML reads back to exactly the values meant, and :func:`cmms_pm.spec.load_spec` (schema and
cross-field rules) loads it. Nothing here depends on the clock, so the same file gives the same spec.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from cmms_pm import spec_writer
from cmms_pm.exceptions import CmmsPmError, DataSourceError, DataValidationError, ScaffoldError
from cmms_pm.inference import TIMESTAMP, InferredFeatures, infer_features, infer_positive_label
from cmms_pm.leakage import LeakageReport
from cmms_pm.spec import (
    COLUMN_NAME_PATTERN,
    ESTIMATOR_KINDS,
    SPEC_SCHEMA,
)
from cmms_pm.spec import (
    models_dir as default_models_dir,
)

#: Above this many rows the default estimator is histogram gradient boosting (fast at 1M+ rows,
#: native missing values and categories); at or below it, a random forest.
LARGE_ROWS = 100_000
READERS = (".csv", ".parquet", ".pq")
#: The retention a generated spec suggests (commented out): a week of batches, five archived versions.
SUGGESTED_RETENTION = {"keep_batches": 7, "keep_archived_versions": 5}


@dataclass(frozen=True)
class Scaffold:
    """What :func:`scaffold` read, inferred and wrote."""

    name: str
    spec_path: Path
    source: str  # as written into the spec
    under_data_root: bool
    rows: int
    columns: int
    target: str
    positive: Any
    negative: Any
    positive_rows: int
    negative_rows: int
    features: InferredFeatures
    missing: Mapping[str, float]  # share of missing values per feature column
    distinct: Mapping[str, int]  # distinct values per categorical feature
    estimator: str
    estimator_chosen: bool
    max_missing_rate: float
    text: str
    # A time or group split proposed for the file (None: the random split), and why.
    split: Mapping[str, Any] | None = None
    split_reason: str = ""
    leakage: LeakageReport | None = None  # what the leakage guard found (its columns are in drop)

    @property
    def positive_rate(self) -> float:
        return self.positive_rows / self.rows


def scaffold(
    name: str,
    source: str | os.PathLike[str],
    target: str,
    *,
    positive: Any = None,
    estimator: str | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Scaffold:
    """Infer a spec for ``source`` and write it as ``<models dir>/<name>.yaml``.

    Refuses (nothing written) a name a spec cannot have, an existing spec without ``force``, a
    registered-model name another spec uses, an unreadable file, and a target column that is
    missing, has missing labels or does not hold exactly two labels.
    """
    spec_writer.check_name(name)
    folder = Path(models_dir) if models_dir is not None else default_models_dir()
    spec_path = folder / f"{name}.yaml"
    if spec_path.exists() and not force:
        raise ScaffoldError(f"{spec_path} exists; review or remove it, or replace it with --force (FORCE=1)")
    spec_writer.check_model_name_free(name, folder, spec_path)
    if estimator is not None and estimator not in ESTIMATOR_KINDS:
        raise ScaffoldError(f"estimator {estimator!r} is not one of {list(ESTIMATOR_KINDS)}")

    file = Path(source).expanduser()
    frame = read_table(file)
    labels = _checked_target(frame, target)
    pos, neg = infer_positive_label(labels, positive)
    for label in (pos, neg):
        if not isinstance(label, str | int | bool):
            raise DataValidationError(
                f"target column {target!r}: labels must be text, whole numbers or booleans, "
                f"not {type(label).__name__}"
            )
    inferred = infer_features(frame, target=target)
    inferred, leakage = without_leaks(frame, target, pos, inferred)
    if not inferred.features:
        reasons = "; ".join(f"{column!r}: {why}" for column, why in inferred.dropped.items())
        raise DataValidationError(
            f"{file}: no feature column left; every other column was dropped ({reasons})"
        )
    written, under_root = spec_writer.source_path(file)
    missing = {column: float(frame[column].isna().mean()) for column in inferred.features}
    rate = _max_missing_rate(frame, inferred.features)
    kind = estimator or ("hist_gradient_boosting" if len(frame) > LARGE_ROWS else "random_forest")
    counts = labels.value_counts()
    result = Scaffold(
        name=name,
        spec_path=spec_path,
        source=written,
        under_data_root=under_root,
        rows=len(frame),
        columns=len(frame.columns),
        target=target,
        positive=pos,
        negative=neg,
        positive_rows=int(counts[_label_key(counts, pos)]),
        negative_rows=int(counts[_label_key(counts, neg)]),
        features=inferred,
        missing=missing,
        distinct={column: int(frame[column].nunique()) for column in inferred.categorical},
        estimator=kind,
        estimator_chosen=estimator is not None,
        max_missing_rate=rate,
        text="",
        **propose_split(frame, inferred),
        leakage=leakage,
    )
    values = spec_values(result)
    text = render_spec(result, values)
    spec_writer.check_round_trip(text, values, spec_path)
    spec_writer.write_checked(text, spec_path)
    return replace(result, text=text)


def read_table(path: Path) -> pd.DataFrame:
    """A local CSV or Parquet file as a frame; :class:`DataSourceError` / :class:`DataValidationError`
    for a missing, unreadable, header-only file or duplicate column names (pandas would rename them)."""
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise DataSourceError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected {READERS}")
    if not path.is_file():
        raise DataSourceError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            header = _csv_header(path)
            _check_unique(path, header)
            frame = pd.read_csv(path, encoding="utf-8-sig", low_memory=False)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            _check_unique(path, table.column_names)
            frame = table.to_pandas()
    except (DataSourceError, DataValidationError):
        raise
    except pd.errors.EmptyDataError as err:
        raise DataSourceError(f"{path}: the file is empty (no header, 0 rows)") from err
    except Exception as err:  # parser errors differ per format and library version
        raise DataSourceError(f"{path}: cannot read it as {suffix[1:]}: {type(err).__name__}") from err
    if len(frame) == 0:
        raise DataValidationError(f"{path}: 0 rows (a header only); a spec is inferred from data")
    return frame


def spec_values(result: Scaffold) -> dict[str, Any]:
    """The spec as plain values, in the order it is written (defaults left to the schema)."""
    inferred = result.features
    features = {
        kind: list(getattr(inferred, kind))
        for kind in ("categorical", "numeric", "integer")
        if getattr(inferred, kind)
    }
    # A column whose name no spec can hold is not written anywhere; it is simply not a feature.
    drop = [c for c in inferred.dropped if re.search(COLUMN_NAME_PATTERN, c)]
    return {
        "name": result.name,
        "description": f"Predicts {result.target} = {result.positive} (from {Path(result.source).name})",
        "registered_model": result.name,
        "experiment": result.name,
        "source": {"kind": "file", "path": result.source},
        "target": {"column": result.target, "positive": result.positive, "negative": result.negative},
        "features": features,
        "drop": drop,
        "id_columns": [c for c in inferred.id_like if c in drop],
        "estimator": {"kind": result.estimator},
        "validation": {"max_missing_rate": result.max_missing_rate},
        "scoring": {"source": {"kind": "file", "path": result.source}},
        **({"split": dict(result.split)} if result.split else {}),
    }


def render_spec(result: Scaffold, values: Mapping[str, Any]) -> str:
    """The commented YAML of ``values``: each value through ``yaml.safe_dump`` (quoting is its job),
    each comment stripped of line breaks (so no name from the file can start a YAML line)."""
    inferred = result.features
    rows = f"{result.rows:,}"
    pct = f"{100 * result.positive_rate:.1f} %"
    missing_max = max(result.missing.values(), default=0.0)
    min_rows = SPEC_SCHEMA["properties"]["validation"]["properties"]["min_rows"]["default"]
    blocks = [
        spec_writer.comments(
            f"Model spec {result.name!r}, generated by `make new-model` from {result.source}",
            f"({rows} rows, {result.columns} columns). Review every inferred choice below, then commit the",
            f"file: the next DAG parse shows {result.name}_training and {result.name}_scoring.",
        ),
        spec_writer.dump({k: values[k] for k in ("name", "description", "registered_model", "experiment")}),
        "",
        spec_writer.comments(
            "Training data: a path relative to the data root ($CMMS_DATA_ROOT), or an absolute path under",
            "an allowed root."
            + (
                ""
                if result.under_data_root
                else " This file is outside the data root:"
                " copy it under $CMMS_DATA_ROOT/incoming and shorten the path."
            ),
        ),
        spec_writer.dump({"source": values["source"]}),
        "",
        spec_writer.comments(
            f"The label: {result.positive!r} is positive ({result.positive_rows:,} of {rows} rows, {pct}),",
            f"{result.negative!r} negative ({result.negative_rows:,}); any other label fails a batch.",
        ),
        spec_writer.dump({"target": values["target"]}),
        "",
        spec_writer.comments(
            "Inferred from the file's types and values (cmms_pm.inference): move a column between the",
            "lists or to drop as you know better. Optional per column: categories (known values; any other",
            "fails the batch) and ranges ([low, high] plausible bounds).",
            *(
                f"  {column}: {100 * share:.1f} % missing"
                for column, share in result.missing.items()
                if share > 0
            ),
        ),
        spec_writer.dump({"features": values["features"]}),
        "",
        spec_writer.comments(
            "Never features:",
            *(f"  {column}: {inferred.dropped[column]}" for column in values["drop"]),
            "id_columns travel to the scoring output next to each prediction.",
            *_leak_comments(result),
        ),
        spec_writer.dump({"drop": values["drop"], "id_columns": values["id_columns"]}),
        "",
        *_split_block(result, values),
        spec_writer.comments(
            f"{result.estimator}: "
            + (
                "as chosen (ESTIMATOR=...)"
                if result.estimator_chosen
                else f"the default for {rows} rows (hist_gradient_boosting above {LARGE_ROWS:,}, else"
                " random_forest)"
            ),
            "Its hyperparameter defaults apply; set estimator.params to change them.",
        ),
        spec_writer.dump({"estimator": values["estimator"]}),
        "",
        spec_writer.comments(
            f"The largest missing share of a feature in this file is {100 * missing_max:.1f} %: a batch",
            f"with more than {100 * result.max_missing_rate:.0f} % missing in a feature fails."
            f" min_rows keeps the schema default ({min_rows}).",
        ),
        spec_writer.dump({"validation": values["validation"]}),
        "",
        spec_writer.comments(
            "What the scoring DAG scores: point it at the batches to score (here: the training file)."
        ),
        spec_writer.dump({"scoring": values["scoring"]}),
        "",
        spec_writer.comments(
            "Not set, so the schema's defaults apply (cmms_pm.spec.SPEC_SCHEMA). A first model below the",
            "promotion threshold is registered but not promoted: uncomment and lower it if need be.",
        ),
        spec_writer.comments(
            *spec_writer.dump(
                {key: spec_writer.schema_default(key) for key in spec_writer.SHOWN_DEFAULTS}
            ).splitlines()
        ),
        "",
        spec_writer.comments(
            "Retention: not set, so nothing is ever removed. To bound the disk of a model that runs for",
            "years, keep the newest run folders and the artifacts of the newest archived versions, e.g.:",
            *spec_writer.dump({"retention": SUGGESTED_RETENTION}).splitlines(),
        ),
    ]
    return "\n".join(block.rstrip("\n") for block in blocks) + "\n"


def describe(result: Scaffold) -> str:
    """What was inferred and what to do next, for a person at a terminal."""
    inferred = result.features
    width = max(len(c) for c in (*inferred.features, *inferred.dropped, "column"))
    lines = [
        f"Wrote {result.spec_path} from {result.source} ({result.rows:,} rows, {result.columns} columns).",
        "",
        f"Target {result.target!r}:",
        f"  positive {result.positive!r}: {result.positive_rows:,} rows ({100 * result.positive_rate:.1f} %)",
        f"  negative {result.negative!r}: {result.negative_rows:,} rows",
        "",
        f"Features ({len(inferred.features)}):",
        *(f"  {column:<{width}}  {_kind_note(result, column)}" for column in inferred.features),
        "",
        f"Dropped ({len(inferred.dropped)}):",
        *(f"  {column!s:<{width}}  {why}" for column, why in inferred.dropped.items()),
        *([] if inferred.dropped else ["  (none)"]),
        "",
        *_leak_summary(result),
        f"Estimator: {result.estimator}",
        f"validation.max_missing_rate: {result.max_missing_rate}",
        *([f"Split: {result.split['strategy']}: {result.split_reason}"] if result.split else []),
    ]
    promotion = spec_writer.schema_default("promotion")
    if result.positive_rate > 0.5:
        lines += ["", f"Note: the positive label {result.positive!r} is the majority class."]
    if not result.under_data_root:
        lines += [
            "",
            f"Note: {result.source} is outside the data root ($CMMS_DATA_ROOT); the pipeline reads only",
            "allow-listed folders under it. Copy the file to $CMMS_DATA_ROOT/incoming/ and set source.path.",
        ]
    lines += [
        "",
        "Next steps:",
        f"  1. Review {result.spec_path}: features, dropped columns, labels, and the promotion",
        f"     threshold ({promotion['metric']} >= {promotion['threshold']} by default).",
        f"  2. Commit it: git add {result.spec_path} && git commit",
        f"  3. The next DAG parse shows {result.name}_training and {result.name}_scoring.",
    ]
    return "\n".join(spec_writer.LINE_BREAKS.sub("?", line) for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmms_pm.scaffold",
        description="Write a model spec for a CSV/Parquet file: infer the label and the features.",
    )
    parser.add_argument("--name", required=True, help="spec name: DAG ids <name>_training/_scoring")
    parser.add_argument("--source", default=None, help="a local .csv or .parquet file (a flat table)")
    parser.add_argument("--target", default=None, help="the label column (exactly two labels)")
    add_timeseries_arguments(parser)
    parser.add_argument("--positive", default=None, help="the positive label (default: the minority)")
    parser.add_argument("--estimator", default=None, choices=ESTIMATOR_KINDS)
    parser.add_argument("--models-dir", default=None, help="default: $CMMS_MODELS_DIR or include/models")
    parser.add_argument("--force", action="store_true", help="replace an existing spec")
    args = parser.parse_args(argv)
    if args.telemetry or args.failures:
        return timeseries_main(parser, args)
    for option in ("name", "source", "target"):
        if not getattr(args, option):
            parser.error(f"--{option} must not be empty (make new-model {option.upper()}=...)")
    return _report(
        lambda: scaffold(
            args.name,
            args.source,
            args.target,
            positive=args.positive or None,
            estimator=args.estimator or None,
            models_dir=args.models_dir,
            force=args.force,
        ),
        describe,
    )


def _report(make: Any, show: Any) -> int:
    """Run ``make()``; print ``show(result)``, or the refusal on stderr with exit status 1."""
    try:
        result = make()
    except CmmsPmError as err:
        print(f"new-model: {spec_writer.LINE_BREAKS.sub('?', str(err))}", file=sys.stderr)
        return 1
    print(show(result))
    return 0


def propose_split(frame: pd.DataFrame, inferred: InferredFeatures) -> dict[str, Any]:
    """A time split when the file has a timestamp column, else a grouped split when an id repeats
    across rows (an asset with many readings): a random split would put near copies of one asset's
    rows on both sides and measure memory. ``{}`` when neither applies (the random split)."""
    from cmms_pm.inference import ID_LIKE, TIMESTAMP

    usable = [c for c in inferred.dropped if re.search(COLUMN_NAME_PATTERN, c)]
    times = [c for c in usable if inferred.dropped[c].startswith(TIMESTAMP)]
    repeating = [
        c for c in usable if inferred.dropped[c].startswith(ID_LIKE) and frame[c].nunique() < len(frame) / 2
    ]
    if times:
        reason = (
            f"{times[0]!r} holds timestamps: train on the earliest rows, validate and hold out later ones "
            "(a random split of rows in time measures memory, not prediction)"
        )
        if repeating:
            reason += f"; add entity_column: {repeating[0]!r} to also hold out whole assets"
        return {"split": {"strategy": "time", "time_column": times[0]}, "split_reason": reason}
    if repeating:
        column = repeating[0]
        reason = (
            f"{column!r} repeats across rows ({frame[column].nunique():,} values in {len(frame):,} rows): "
            "each part holds whole groups, so no asset is both trained on and judged on"
        )
        return {"split": {"strategy": "group", "entity_column": column}, "split_reason": reason}
    return {}


def _split_block(result: Scaffold, values: Mapping[str, Any]) -> list[str]:
    if not result.split:
        return []
    import textwrap

    lines = textwrap.wrap(f"split: {result.split_reason}", 96, subsequent_indent="  ")
    return [spec_writer.comments(*lines), spec_writer.dump({"split": values["split"]}), ""]


def add_timeseries_arguments(parser: argparse.ArgumentParser) -> None:
    """The raw-files form: ``--telemetry`` and ``--failures`` (and optional logs) instead of a table."""
    group = parser.add_argument_group("raw telemetry and event logs (a time-series spec)")
    group.add_argument("--telemetry", default=None, help="readings per asset and time: a file or a folder")
    group.add_argument("--failures", default=None, help="the failure log (asset, time[, component])")
    group.add_argument("--maintenance", default=None, help="maintenance log (asset, time, component, kind)")
    group.add_argument("--alarms", default=None, help="alarms / error codes (asset, time, code)")
    group.add_argument("--assets", default=None, help="static attributes per asset (model, install date)")
    group.add_argument("--entity", default=None, help="the asset id column (default: inferred)")
    group.add_argument("--time", default=None, help="the timestamp column (default: inferred)")
    group.add_argument("--horizon", default=None, help="predict a failure within this, e.g. 48h or 7d")


def timeseries_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``make new-model NAME=... TELEMETRY=... FAILURES=...``: write a time-series spec, say why."""
    from cmms_pm.timeseries.telemetry_scaffold import describe as describe_timeseries
    from cmms_pm.timeseries.telemetry_scaffold import scaffold_timeseries

    for option in ("telemetry", "failures"):
        if not getattr(args, option):
            parser.error(f"--{option} must not be empty (make new-model {option.upper()}=...)")
    if args.source or args.target:
        parser.error("give either SOURCE/TARGET (a flat table) or TELEMETRY/FAILURES (raw files), not both")
    return _report(
        lambda: scaffold_timeseries(
            args.name,
            telemetry=args.telemetry,
            failures=args.failures,
            maintenance=args.maintenance or None,
            alarms=args.alarms or None,
            assets=args.assets or None,
            entity=args.entity or None,
            time=args.time or None,
            horizon=args.horizon or None,
            estimator=args.estimator or None,
            models_dir=args.models_dir,
            force=args.force,
        ),
        describe_timeseries,
    )


def without_leaks(
    frame: pd.DataFrame, target: str, positive: Any, inferred: InferredFeatures
) -> tuple[InferredFeatures, LeakageReport]:
    """``inferred`` with the features that leak the label (:mod:`cmms_pm.leakage`) moved to the
    dropped columns, each with its test and number; timestamps later than the rows' own time column
    (when one is found, :func:`snapshot_column`) get the leak as their reason."""
    from cmms_pm.leakage import LEAKS, find_leaks

    timestamps = [c for c, why in inferred.dropped.items() if why.startswith(TIMESTAMP)]
    time_column = snapshot_column(frame, timestamps)
    report = find_leaks(
        frame,
        target,
        positive=positive,
        columns=list(inferred.features),
        timestamps=[c for c in timestamps if c != time_column],
        time_column=time_column,
    )
    why: dict[str, str] = {}
    for finding in report.findings:
        for column in finding.columns:
            others = ", ".join(c for c in finding.columns if c != column)
            together = f" with {others}" if others else ""
            number = f"{finding.measure} {finding.value:.3f}"
            why.setdefault(column, f"{LEAKS} ({finding.test}{together}: {number})")
    if not why:
        return inferred, report
    kept = {
        kind: tuple(c for c in getattr(inferred, kind) if c not in why)
        for kind in ("numeric", "integer", "categorical")
    }
    return replace(inferred, dropped={**inferred.dropped, **why}, **kept), report


def snapshot_column(frame: pd.DataFrame, timestamps: Sequence[str]) -> str | None:
    """The rows' own time: the one timestamp column set in every row (a failure or repair date is
    set only where there was one). None when there is no such column or more than one."""
    full = [column for column in timestamps if not frame[column].isna().any()]
    return full[0] if len(full) == 1 else None


def _leak_comments(result: Scaffold) -> list[str]:
    """The leak findings in full, under the drop list, and how to keep such a column knowingly."""
    report = result.leakage
    if report is None or not report.findings:
        return []
    lines = ["Left out because they leak the label (cmms_pm.leakage):"]
    for finding in report.findings:
        lines += textwrap.wrap(finding.summary(), width=96, initial_indent="  ", subsequent_indent="    ")
    lines += [
        "To train on such a column knowingly, move it to features and list it in the spec's",
        "leakage: {accept: [...]} (validate_data then records a warning instead of failing).",
    ]
    return lines


def _leak_summary(result: Scaffold) -> list[str]:
    report = result.leakage
    if report is None:
        return []
    if report.skipped:
        return [f"Leakage guard: not run, {report.skipped}.", ""]
    if not report.findings:
        return [f"Leakage guard: no column leaks the label ({report.rows:,} rows tested).", ""]
    lines = [f"Left out, they leak the label ({len(report.leaking)}):"]
    for finding in report.findings:
        lines += textwrap.wrap(finding.summary(), width=100, initial_indent="  ", subsequent_indent="    ")
    return [*lines, "  (to keep one knowingly: add it to features and to leakage.accept)", ""]


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        try:
            return next(csv.reader(handle))
        except StopIteration:
            raise DataSourceError(f"{path}: the file is empty (no header, 0 rows)") from None


def _check_unique(path: Path, names: Sequence[str]) -> None:
    duplicated = sorted({n for n in names if list(names).count(n) > 1})
    if duplicated:
        raise DataValidationError(
            f"{path}: duplicate column names {duplicated}; each needs a name of its own"
        )


def _checked_target(frame: pd.DataFrame, target: str) -> pd.Series:
    if target not in frame.columns:
        columns = list(frame.columns)
        raise DataValidationError(f"target column {target!r} is not in the file; its columns are {columns}")
    labels = frame[target]
    missing = int(labels.isna().sum())
    if missing:
        raise DataValidationError(
            f"target column {target!r} has {missing:,} missing labels in {len(frame):,} rows; "
            "a model learns from labelled rows only: drop or fill them first"
        )
    return labels


def _label_key(counts: pd.Series, label: Any) -> Any:
    """The index entry of ``counts`` that is ``label`` (labels were unwrapped from numpy types)."""
    return next(key for key in counts.index if key == label)


def _max_missing_rate(frame: pd.DataFrame, columns: Sequence[str]) -> float:
    """The next whole percent strictly above the largest missing share of a feature: the file itself
    passes, a batch with more missing values fails. Integer arithmetic, so 29 of 100 gives 0.30."""
    worst = max((int(frame[column].isna().sum()) for column in columns), default=0)
    return min(1.0, ((100 * worst) // len(frame) + 1) / 100)


def _kind_note(result: Scaffold, column: str) -> str:
    notes = [result.features.kind_of(column)]
    if column in result.distinct:
        notes.append(f"{result.distinct[column]} values")
    if result.missing.get(column):
        notes.append(f"{100 * result.missing[column]:.1f} % missing")
    return ", ".join(notes)


if __name__ == "__main__":
    sys.exit(main())
