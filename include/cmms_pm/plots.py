"""Evaluation plots written as PNG files, ready to log as MLflow artefacts.

Figures are drawn on the Agg canvas directly (no pyplot), so they work on headless workers, do not
change a notebook's backend and leave no open figure behind; matplotlib is imported only when used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _figure(width: float = 6.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | os.PathLike[str]) -> str:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(target, format="png")
    figure.clear()
    return str(target)


def plot_feature_importances(importances_df: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    """Horizontal bar chart of a ``feature_importances`` frame, most important feature on top."""
    frame = importances_df.sort_values("importance", ascending=True)
    figure = _figure(7.0, max(3.0, 0.35 * len(frame) + 1.0))
    axes = figure.add_subplot()
    axes.barh(frame["feature"], frame["importance"], color="#3b75af")
    method = str(frame["method"].iloc[0]) if "method" in frame.columns and len(frame) else "impurity"
    axes.set_xlabel(f"{method} importance")
    axes.set_title("Feature importances")
    return _save(figure, path)


def plot_confusion_matrix(y_true: Any, y_pred: Any, path: str | os.PathLike[str]) -> str:
    """Two-by-two confusion matrix with counts in the cells (rows: actual, columns: predicted)."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=[0, 1])
    figure = _figure(4.5, 4.0)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    labels = ["no failure", "failure"]
    axes.set_xticks([0, 1], labels=labels)
    axes.set_yticks([0, 1], labels=labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    threshold = matrix.max() / 2.0
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    axes.set_title("Confusion matrix")
    return _save(figure, path)


def plot_roc_curve(y_true: Any, proba: Any, path: str | os.PathLike[str]) -> str:
    """ROC curve with its AUC in the legend and the chance diagonal for reference."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y_true, proba)
    figure = _figure()
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, label=f"ROC AUC = {roc_auc_score(y_true, proba):.4f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC curve")
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_pr_curve(y_true: Any, proba: Any, path: str | os.PathLike[str]) -> str:
    """Precision-recall curve with average precision and the positive-rate baseline."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, proba)
    baseline = float(np.mean(np.asarray(y_true)))
    figure = _figure()
    axes = figure.add_subplot()
    axes.step(recall, precision, where="post", label=f"AP = {average_precision_score(y_true, proba):.4f}")
    axes.axhline(baseline, linestyle="--", color="grey", label=f"positive rate {baseline:.3f}")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0.0, 1.05)
    axes.set_title("Precision-recall curve")
    axes.legend(loc="lower left")
    return _save(figure, path)


def plot_reliability(
    y_true: Any, proba_before: Any, proba_after: Any, path: str | os.PathLike[str], *, bins: int = 10
) -> str:
    """Reliability diagram: observed failure rate against the mean predicted risk per quantile bin,
    before and after calibration, with each one's Brier score; the diagonal is perfect calibration."""
    from sklearn.calibration import calibration_curve

    y = np.asarray(y_true).astype(int)
    figure = _figure(6.0, 5.0)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for label, proba, style in (("before", proba_before, "o-"), ("after", proba_after, "s-")):
        p = np.asarray(proba, dtype=float)
        observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        brier = float(np.mean((p - y) ** 2))
        axes.plot(predicted, observed, style, label=f"{label} calibration (Brier {brier:.4f})")
    axes.set_xlabel("mean predicted risk")
    axes.set_ylabel("observed failure rate")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.05)
    axes.set_title("Reliability diagram (validation rows, out of fold)")
    axes.legend(loc="upper left")
    return _save(figure, path)


def plot_global_explanation(explanation: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    """Mean absolute contribution per feature (``cmms_pm.explain.global_importance``), largest on top."""
    frame = explanation.sort_values("mean_abs_contribution", ascending=True)
    figure = _figure(7.0, max(3.0, 0.35 * len(frame) + 1.0))
    axes = figure.add_subplot()
    axes.barh(frame["feature"], frame["mean_abs_contribution"], color="#c0504d")
    scale = explanation.attrs.get("output") or "model output"
    axes.set_xlabel(f"mean |contribution| ({scale}, before calibration)")
    axes.set_title("Global explanation (SHAP)")
    return _save(figure, path)
