"""Online prediction: a request's rows as a frame the champion reads, then each row's risk, alert,
contract issues and reasons.

Pure domain code (no Airflow, no MLflow, no HTTP): ``cmms_mlflow.predict_api`` parses and limits the
request, keeps the champion warm and calls :func:`rows_frame` then :func:`predict`; batch scoring
(``cmms_pm.fleet.score_frame``) reads the same risks, flags and reasons from :func:`predict`.

The rules are batch scoring's, applied to a request:

* **the schema** must fit the champion's data contract, or nothing is scored: every feature
  present in every row (``null`` is a missing value), no column that is neither a feature nor an
  id column, numbers where the contract has numbers, categories that are text, integers or
  booleans. Batch scoring fails an input whose feature columns are missing or retyped the same way;
  the API is stricter on unknown columns only, because a misspelt feature would otherwise be
  ignored. :class:`RowsRejected` lists every problem (column, kind, first rows).
* **a row** whose values break the contract (a category unseen in training, a missing value, a value
  outside the training range) is scored but never silently: its ``issues`` name the feature and the
  problem, as batch scoring's ``contract_ok``/``contract_issues``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cmms_pm.contract import DataContract, feature_issues
from cmms_pm.exceptions import CmmsPmError

#: Which rows get reasons: those that alert (what a planner acts on), or every row.
REASONS_FOR = ("alerts", "all")
#: Row numbers quoted per problem; the count says how many there are.
_SHOWN_ROWS = 5


class RowsRejected(CmmsPmError, ValueError):
    """The rows do not fit the champion's schema; ``problems`` names each column, kind and rows."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(problem["message"] for problem in problems))
        self.problems = problems


@dataclass(frozen=True)
class Predictions:
    """One entry per input row, in order: failure risk, alert, contract issues, top reasons."""

    risk: np.ndarray
    alert: np.ndarray
    issues: list[list[dict[str, str]]]
    reasons: list[list[dict[str, Any]]]


def _problem(kind: str, column: str | None, rows: Sequence[int], total: int, text: str) -> dict[str, Any]:
    shown = list(rows[:_SHOWN_ROWS])
    more = f" and {total - len(shown)} more" if total > len(shown) else ""
    where = f"rows {shown}{more}"
    return {"kind": kind, "column": column, "rows": shown, "count": total, "message": f"{where}: {text}"}


def rows_frame(
    rows: Sequence[Mapping[str, Any]], contract: DataContract, *, id_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """The rows as a frame with the contract's features (and the id columns given), typed as in
    training; :class:`RowsRejected` when the schema does not fit (nothing is half-built).

    Values are JSON scalars (``str``, ``int``, ``float``, ``bool``, ``None``), finite: the caller
    parses the JSON.
    """
    from cmms_pm.frame_checks import categorical_text

    kinds = {c.name: c.declared_kind or c.kind for c in contract.columns if c.feature}
    features = list(kinds)
    ids = [column for column in id_columns if column not in kinds]
    known = {*features, *ids}
    required = set(features)
    problems: list[dict[str, Any]] = []
    unknown: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    for number, row in enumerate(rows):
        keys = row.keys()
        if keys - known:
            for column in keys - known:
                unknown.setdefault(column, []).append(number)
        if required - keys:
            for column in required - keys:
                missing.setdefault(column, []).append(number)
    for column, where in sorted(unknown.items()):
        problems.append(
            _problem("unknown_column", column, where, len(where),
                     f"{column!r} is neither a feature of the champion nor an id column; "
                     f"features: {features}, ids: {ids}")
        )  # fmt: skip
    for column, where in sorted(missing.items()):
        problems.append(
            _problem("missing_column", column, where, len(where),
                     f"feature {column!r} is absent (send null for a missing value)")
        )  # fmt: skip
    columns: dict[str, Any] = {}
    for column in [*ids, *features]:
        values = [row.get(column) for row in rows]
        kind = kinds.get(column)
        if kind is None:  # an id: any scalar, returned as given
            columns[column] = pd.Series(values, dtype=object)
            continue
        if kind == "categorical":
            bad = [n for n, v in enumerate(values) if isinstance(v, float) and not v.is_integer()]
            if bad:
                problems.append(
                    _problem("wrong_type", column, bad, len(bad),
                             f"feature {column!r} is categorical: text, integers or booleans, not fractions")
                )  # fmt: skip
                continue
            columns[column] = categorical_text(pd.Series(values, dtype=object, name=column))
            continue
        bad = [n for n, v in enumerate(values) if v is not None and not _is_number(v)]
        if bad:
            got = sorted({type(values[n]).__name__.replace("str", "text") for n in bad})
            problems.append(
                _problem("wrong_type", column, bad, len(bad),
                         f"feature {column!r} needs numbers (or null), got {', '.join(got)}")
            )  # fmt: skip
            continue
        columns[column] = np.array([np.nan if v is None else v for v in values], dtype="float64")
    if problems:
        raise RowsRejected(problems)
    return pd.DataFrame(columns)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def predict(
    model: Any,
    frame: pd.DataFrame,
    *,
    contract: DataContract | None,
    threshold: float,
    reasons: int = 3,
    reasons_for: str = "alerts",
) -> Predictions:
    """Risk (the positive class's probability), alert (risk ≥ ``threshold``), the contract issues
    and up to ``reasons`` top reasons of every row of ``frame`` (``reasons_for``: ``alerts`` or ``all``
    rows; the others get ``[]``). Rows with issues are scored too; their issues say why to doubt them.
    """
    from cmms_pm.training import positive_proba

    if reasons_for not in REASONS_FOR:
        raise ValueError(f"reasons_for must be one of {REASONS_FOR}, got {reasons_for!r}")
    n = len(frame)
    risk = np.asarray(positive_proba(model, frame), dtype="float64") if n else np.zeros(0)
    alert = risk >= threshold
    issues: list[list[dict[str, str]]] = [[] for _ in range(n)]
    if contract is not None:
        for kind, feature, where in feature_issues(frame, contract):
            for position in where.tolist():
                issues[position].append({"kind": kind, "feature": feature})
    explained: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    chosen = np.arange(n) if reasons_for == "all" else np.flatnonzero(alert)
    if reasons > 0 and chosen.size:
        found = top_reasons(model, frame.iloc[chosen], reasons)
        for position, row_reasons in zip(chosen.tolist(), found, strict=True):
            explained[position] = row_reasons
    return Predictions(risk=risk, alert=alert, issues=issues, reasons=explained)


def top_reasons(model: Any, frame: pd.DataFrame, k: int) -> list[list[dict[str, Any]]]:
    """Each row's top ``k`` reasons (``cmms_pm.explain``): the one call of the serving path."""
    from cmms_pm.explain import top_reasons as explain

    return explain(model, frame, k)
