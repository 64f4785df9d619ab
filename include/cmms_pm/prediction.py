"""Online prediction: a request's rows as a frame the champion reads, then each row's risk, alert,
contract issues and reasons.

Pure domain code (no Airflow, no MLflow, no HTTP): ``cmms_mlflow.www.predict_api`` parses and limits the
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

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cmms_pm.contract import DataContract, feature_issues
from cmms_pm.exceptions import CmmsPmError

#: Which rows get reasons (the spec's ``explain.scope``): those that alert, or every row.
SCOPES = ("at_risk", "all")
#: How reasons are computed (the names of the spec's explain.method): see top_reasons.
EXPLAINERS = ("exact", "approximate")
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
        plain = set(map(type, values)) <= _NUMBER_TYPES  # one pass in C for the usual request
        bad = [] if plain else [n for n, v in enumerate(values) if v is not None and not _is_number(v)]
        if bad:
            got = sorted({type(values[n]).__name__.replace("str", "text") for n in bad})
            problems.append(
                _problem("wrong_type", column, bad, len(bad),
                         f"feature {column!r} needs numbers (or null), got {', '.join(got)}")
            )  # fmt: skip
            continue
        columns[column] = np.array(values, dtype="float64")  # None -> NaN
    if problems:
        raise RowsRejected(problems)
    return pd.DataFrame(columns)


_NUMBER_TYPES = frozenset({int, float, type(None)})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def predict(
    model: Any,
    frame: pd.DataFrame,
    *,
    contract: DataContract | None,
    threshold: float,
    reasons: int = 3,
    scope: str = "at_risk",
    max_explained: int | None = None,
    explainer: str = "exact",
    risk: np.ndarray | None = None,
) -> Predictions:
    """Risk (the positive class's probability), alert (risk ≥ ``threshold``), the contract issues
    and up to ``reasons`` top reasons of every row of ``frame`` (``scope``: the rows that alert
    — ``at_risk`` — or ``all``, the riskiest ``max_explained`` of them at most, as batch scoring's
    ``explain`` section says; the others get ``[]``; ``explainer``: see :func:`top_reasons`). Rows
    with issues are scored too; their issues say why to doubt them. ``risk``: the model's risks of
    ``frame`` if the caller has them (the predict route computes concurrent requests' in one call).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    n = len(frame)
    x = None
    if risk is None and n:
        x, risk = _inputs_and_risk(model, frame)
    elif risk is None:
        risk = np.zeros(0)
    alert = risk >= threshold
    issues: list[list[dict[str, str]]] = [[] for _ in range(n)]
    if contract is not None:
        for kind, feature, where in feature_issues(frame, contract):
            for position in where.tolist():
                issues[position].append({"kind": kind, "feature": feature})
    explained: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    chosen = np.arange(n) if scope == "all" else np.flatnonzero(alert)
    if max_explained is not None and chosen.size > max_explained:
        chosen = np.sort(chosen[np.argsort(-risk[chosen], kind="stable")[:max_explained]])
    if reasons > 0 and chosen.size:
        inputs = x[chosen] if x is not None else None
        found = top_reasons(model, frame.iloc[chosen], reasons, explainer=explainer, inputs=inputs)
        for position, row_reasons in zip(chosen.tolist(), found, strict=True):
            explained[position] = row_reasons
    return Predictions(risk=risk, alert=alert, issues=issues, reasons=explained)


def _inputs_and_risk(model: Any, frame: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray]:
    """``training.positive_proba``, keeping the preprocessed rows (the fast reasons read them too)."""
    from cmms_pm.training import _input_dtype, positive_proba, transform_in_chunks

    steps = getattr(model, "named_steps", None)
    if steps is None or list(steps) != ["preprocess", "classifier"]:
        return None, np.asarray(positive_proba(model, frame), dtype="float64")
    classifier = steps["classifier"]
    x = transform_in_chunks(steps["preprocess"], frame, dtype=_input_dtype(classifier))
    return x, np.asarray(classifier.predict_proba(x)[:, 1], dtype="float64")


def top_reasons(
    model: Any, frame: pd.DataFrame, k: int, *, explainer: str = "exact", inputs: np.ndarray | None = None
) -> list[list[dict[str, Any]]]:
    """Each row's top ``k`` reasons: ``cmms_pm.explain``'s, exact (Tree SHAP, linear coefficients).

    ``explainer="approximate"`` (``explain.contributions(approximate=True)``'s values), for forests and
    single trees with the explainer kept per loaded model and ``inputs`` reused: SHAP's TreeExplainer in its
    approximate mode (Saabas: each split's change of the node's value along the row's own decision
    path), whose contributions also add up with the base value to the forest's output, in about a
    thousandth of the time (exact Tree SHAP costs ~7 ms per row for 100 trees of depth 10, which an
    online request for 1,000 rows cannot pay). Other models: ``cmms_pm.explain.top_reasons`` with the
    same method. ``inputs``: ``frame`` already preprocessed, if the caller has it.
    """
    from sklearn.ensemble._forest import BaseForest
    from sklearn.tree import BaseDecisionTree

    from cmms_pm.explain import reasons_from
    from cmms_pm.explain import top_reasons as exact
    from cmms_pm.training import base_classifier

    if explainer not in EXPLAINERS:
        raise ValueError(f"explainer must be one of {EXPLAINERS}, got {explainer!r}")
    classifier = base_classifier(model)
    if explainer == "exact" or not isinstance(classifier, BaseForest | BaseDecisionTree):
        return exact(model, frame, k, approximate=explainer == "approximate")
    return reasons_from(_path_contributions(model, classifier, frame, inputs), k)


def _path_contributions(
    model: Any, classifier: Any, frame: pd.DataFrame, inputs: np.ndarray | None = None
) -> pd.DataFrame:
    """Saabas contributions of a forest per raw input column (one-hot columns summed back)."""
    from cmms_pm.explain import input_columns, output_owners
    from cmms_pm.training import _input_dtype, transform_in_chunks

    explainer = _TREE_EXPLAINERS.get(classifier)
    if explainer is None:
        import shap

        explainer = _TREE_EXPLAINERS[classifier] = shap.TreeExplainer(classifier)
    if inputs is None:
        inputs = transform_in_chunks(model.named_steps["preprocess"], frame, dtype=_input_dtype(classifier))
    values = np.asarray(explainer.shap_values(inputs, approximate=True, check_additivity=False))
    if values.ndim == 3:  # (rows, features, classes): the positive class
        values = values[:, :, -1]
    columns = input_columns(model)
    owners = output_owners(model.named_steps["preprocess"])
    grouped = np.zeros((len(frame), len(columns)))
    index = {column: i for i, column in enumerate(columns)}
    np.add.at(grouped.T, [index[owner] for owner in owners], values.T)
    return pd.DataFrame(grouped, index=frame.index, columns=columns)


#: A forest's TreeExplainer, built once per loaded model (~10 ms each), gone with the model.
_TREE_EXPLAINERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
