"""``make new-model`` and the leakage guard: a file shaped like the real AI4I 2020 (failure-mode flags
kept as columns), with a noisy copy of the label under an innocent name and a repair date, gives a
spec whose features leave every leak out, each named with its test and number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from datasets import INTEGER, NUMERIC, TARGET, ai4i_like, with_label_copy

from cmms_pm.exceptions import DataValidationError
from cmms_pm.scaffold import describe, main, scaffold
from cmms_pm.spec import load_spec

LEAKS = ("repaired_at", "Spindle state", "TWF", "HDF", "PWF", "OSF")


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """The data root (with incoming/) and, beside it, the models folder, both in the environment."""
    monkeypatch.setenv("CMMS_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("CMMS_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    return tmp_path / "data"


@pytest.fixture
def models(data_root) -> Path:
    return data_root.parent / "models"


def ai4i_as_is(n_rows: int = 10_000, seed: int = 41) -> pd.DataFrame:
    """AI4I as a new user brings it (failure modes kept), plus a reading time, a repair date set only
    for failures, and a label copy named like a sensor state (5 % of its rows disagree)."""
    frame = ai4i_like(n_rows, seed=seed, failure_modes=True)
    frame = with_label_copy(frame, "Spindle state", values=("idle", "loaded"), flip=0.05, seed=seed)
    taken = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(n_rows) * 10, unit="min")
    repaired = pd.Series(taken + pd.Timedelta(hours=6)).where(frame[TARGET] == "yes")
    frame.insert(1, "reading_time", taken.strftime("%Y-%m-%d %H:%M:%S"))
    frame.insert(2, "repaired_at", repaired.dt.strftime("%Y-%m-%d %H:%M:%S"))
    return frame


@pytest.fixture
def leaky_csv(data_root) -> Path:
    path = data_root / "incoming" / "ai4i_as_is.csv"
    ai4i_as_is().to_csv(path, index=False)
    return path


def test_the_leaking_columns_are_left_out_of_the_features_each_with_its_reason(leaky_csv, models):
    result = scaffold("ai4i_raw", leaky_csv, TARGET)

    spec = load_spec(models / "ai4i_raw.yaml")
    assert spec.features.categorical == ("Type",)
    assert spec.features.numeric == NUMERIC
    assert spec.features.integer == (*INTEGER, "RNF")  # RNF is mostly noise, as in the real file
    assert set(LEAKS) <= set(spec.drop) and not set(LEAKS) & set(spec.features.declared)
    assert spec.id_columns == ("UDI", "Product ID")
    dropped = result.features.dropped
    assert dropped["Spindle state"].startswith("leaks the label (near_copy: balanced accuracy 0.9")
    (flags,) = [f for f in result.leakage.findings if f.test == "flag_set"]
    assert dropped["TWF"] == f"leaks the label (flag_set with HDF, PWF, OSF: F1 of the OR {flags.value:.3f})"
    assert dropped["repaired_at"].startswith("leaks the label (future_timestamp: share of rows 1.000")
    assert dropped["reading_time"].startswith("timestamp")  # the rows' own time: no leak
    # The written YAML says the same in comments next to the drop list, and how to keep one.
    written = yaml.safe_load(result.text)
    assert written["drop"] == list(spec.drop)
    assert "#   Spindle state: leaks the label (near_copy" in result.text
    assert "#   'TWF', 'HDF', 'PWF', 'OSF' (flag_set: F1 of the OR 0.9" in result.text
    assert "later than\n#     'reading_time'" in result.text or "later than 'reading_time'" in result.text
    assert "# leakage: {accept: [...]}" in result.text


def test_the_summary_names_each_leak_with_its_test_and_number(leaky_csv, models, capsys):
    assert main(["--name", "ai4i_raw", "--source", str(leaky_csv), "--target", TARGET]) == 0

    printed = capsys.readouterr().out
    section = printed.split("Left out, they leak the label (6):")[1].split("Estimator:")[0]
    assert "'repaired_at' (future_timestamp: share of rows 1.000)" in section
    assert "'Spindle state' (near_copy: balanced accuracy 0.9" in section
    assert "'TWF', 'HDF', 'PWF', 'OSF' (flag_set: F1 of the OR 0.9" in section
    assert "leakage.accept" in section
    assert "idle" not in printed and "loaded" not in printed  # no value from the data


def test_an_honest_file_says_the_guard_found_nothing(data_root, models):
    path = data_root / "incoming" / "ai4i.csv"
    ai4i_like(10_000, seed=42).to_csv(path, index=False)

    result = scaffold("ai4i", path, TARGET)

    assert result.leakage.findings == () and "leaks the label" not in result.text
    assert "Leakage guard: no column leaks the label (10,000 rows tested)." in describe(result)


def test_a_file_whose_every_feature_leaks_is_refused_naming_the_leaks(data_root, models):
    frame = ai4i_as_is(3_000)[["UDI", "Spindle state", "TWF", "HDF", "PWF", "OSF", TARGET]]
    frame = frame.assign(**{"Spindle state": np.where(frame[TARGET] == "yes", "loaded", "idle")})
    path = data_root / "incoming" / "all_leaks.csv"
    frame.to_csv(path, index=False)

    with pytest.raises(
        DataValidationError, match=r"no feature column left.*'Spindle state': leaks the label"
    ):
        scaffold("all_leaks", path, TARGET)
    assert not (models / "all_leaks.yaml").exists()
