"""Evaluation plots are written as real, non-empty PNG files."""

from __future__ import annotations

import sys

import pytest

from cmms_pm.plots import plot_confusion_matrix, plot_feature_importances, plot_pr_curve, plot_roc_curve
from cmms_pm.schema import FEATURES, TARGET
from cmms_pm.training import feature_importances

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def holdout_scores(default_model, splits):
    holdout = splits["holdout"]
    proba = default_model.predict_proba(holdout[FEATURES])[:, 1]
    return holdout[TARGET].to_numpy(), proba


def _assert_png(path, returned):
    assert returned == str(path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5_000


def test_feature_importance_plot_is_a_png(default_model, splits, tmp_path):
    path = tmp_path / "importances.png"
    importances = feature_importances(default_model, splits["validation"], target=TARGET)
    _assert_png(path, plot_feature_importances(importances, path))


def test_confusion_matrix_plot_is_a_png(holdout_scores, tmp_path):
    y_true, proba = holdout_scores
    path = tmp_path / "plots" / "confusion_matrix.png"
    _assert_png(path, plot_confusion_matrix(y_true, (proba >= 0.5).astype(int), path))


def test_roc_curve_plot_is_a_png(holdout_scores, tmp_path):
    path = tmp_path / "roc.png"
    _assert_png(path, plot_roc_curve(*holdout_scores, path))


def test_pr_curve_plot_is_a_png(holdout_scores, tmp_path):
    path = tmp_path / "pr.png"
    _assert_png(path, plot_pr_curve(*holdout_scores, path))


def test_plotting_leaves_no_open_pyplot_figures(holdout_scores, tmp_path):
    plot_roc_curve(*holdout_scores, tmp_path / "roc.png")
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []
