"""Drift of a new batch against a contract: PSI per feature, the policy's verdict, and its reports."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest

from cmms_pm.contract import DataContract, derive_contract
from cmms_pm.data import generate_telemetry
from cmms_pm.drift import (
    TAG_LIMIT,
    DriftReport,
    FeatureDrift,
    drift_report,
    drift_table,
    drift_tags,
    plot_drift,
    render_drift_html,
)
from cmms_pm.exceptions import ContractError
from cmms_pm.schema import CATEGORICAL, INTEGER_COLUMNS, NUMERIC, TARGET

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KINDS = {
    **{name: "categorical" for name in CATEGORICAL},
    **{name: "numeric" for name in NUMERIC if name not in INTEGER_COLUMNS},
    **{name: "integer" for name in INTEGER_COLUMNS},
}
SECRET = "SECRET-VALUE-7f3a"


def quality_and_torque(n: int, seed: int, shares=(0.6, 0.3, 0.1), torque_mean: float = 40.0) -> pd.DataFrame:
    """A small foreign frame: a category L/M/H with the given shares, a sensor with its unit in brackets."""
    rng = np.random.default_rng(seed)
    quality = rng.choice(np.array(["L", "M", "H"], dtype=object), size=n, p=list(shares))
    return pd.DataFrame(
        {
            "Type": pd.array(quality, dtype="str"),
            "Torque [Nm]": rng.normal(torque_mean, 10.0, n).round(1),
            "label": (rng.random(n) < 0.03).astype(np.int64),
        }
    )


@pytest.fixture(scope="module")
def telemetry_contract(telemetry: pd.DataFrame) -> DataContract:
    return derive_contract(telemetry, target=TARGET, feature_kinds=KINDS)


@pytest.fixture(scope="module")
def quality_contract() -> DataContract:
    kinds = {"Type": "categorical", "Torque [Nm]": "numeric"}
    return derive_contract(quality_and_torque(5_000, 1), target="label", feature_kinds=kinds)


def _report(features: dict[str, float], *, threshold: float = 0.25, action: str = "warn") -> DriftReport:
    """A report built by hand, to test the verdict and the renderings apart from the measurement."""
    bands = [FeatureDrift(name, "numeric", psi, _band(psi, threshold)) for name, psi in features.items()]
    return DriftReport(threshold=threshold, action=action, features=tuple(bands))


def _band(psi: float, threshold: float) -> str:
    return "drifted" if psi >= threshold else "moderate" if psi >= 0.1 else "stable"


# --- measuring ---------------------------------------------------------------------------------


def test_a_batch_from_the_same_distribution_is_stable_in_every_feature(telemetry_contract):
    report = drift_report(
        generate_telemetry(5_000, 42), telemetry_contract, psi_threshold=0.25, action="block"
    )
    assert {feature.name for feature in report.features} == set(KINDS)
    assert all(feature.psi < 0.1 and feature.status == "stable" for feature in report.features)
    assert report.drifted == [] and report.status == "ok"
    assert drift_tags(report)["drift_status"] == "ok" and drift_tags(report)["drift_features"] == ""


def test_a_numeric_feature_shifted_by_three_standard_deviations_drifts(telemetry_contract):
    batch = generate_telemetry(5_000, 42)
    batch["temperature_c"] += 3 * batch["temperature_c"].std()
    report = drift_report(batch, telemetry_contract, psi_threshold=0.25, action="block")
    assert report.drifted == ["temperature_c"]
    assert report.status == "block"
    assert "'temperature_c'" in report.reason() and report.reason().endswith("policy: block")
    tags = drift_tags(report)
    assert tags["drift_features"] == "temperature_c" and tags["drift_status"] == "block"
    assert float(tags["drift_max_psi"]) > 0.25


def test_a_reweighted_category_and_a_shifted_sensor_drift_highest_first(quality_contract):
    batch = quality_and_torque(5_000, 2, shares=(0.1, 0.3, 0.6), torque_mean=55.0)
    report = drift_report(batch, quality_contract, psi_threshold=0.25, action="warn")
    by_name = {feature.name: feature for feature in report.features}
    assert by_name["Type"].psi > 0.25 and by_name["Type"].kind == "categorical"
    assert by_name["Torque [Nm]"].psi > 0.25 and by_name["Torque [Nm]"].kind == "numeric"
    assert report.drifted == sorted(by_name, key=lambda name: -by_name[name].psi)
    assert report.status == "warn"
    assert re.fullmatch(
        r"drift above PSI 0\.25 in 2 features: '(Torque \[Nm\]|Type)' \(\d+\.\d\d\), "
        r"'(Torque \[Nm\]|Type)' \(\d+\.\d\d\); policy: warn",
        report.reason(),
    )
    assert drift_tags(report)["drift_features"] == ",".join(report.drifted)


def test_unseen_categories_drift_without_their_values_in_the_reason_or_tags(quality_contract):
    batch = quality_and_torque(2_000, 3)
    batch.loc[batch.index[:300], "Type"] = SECRET
    report = drift_report(batch, quality_contract, psi_threshold=0.25, action="warn")
    assert report.drifted == ["Type"]
    assert SECRET not in report.reason() + json.dumps(drift_tags(report)) + json.dumps(report.to_dict())


def test_missing_values_count_in_their_own_bucket(quality_contract):
    batch = quality_and_torque(2_000, 3)
    batch.loc[batch.index[:600], "Torque [Nm]"] = np.nan
    report = drift_report(batch, quality_contract, psi_threshold=0.25, action="warn")
    assert report.drifted == ["Torque [Nm]"]


def test_features_absent_from_the_batch_are_skipped(quality_contract):
    batch = quality_and_torque(1_000, 4).drop(columns=["Type"])
    report = drift_report(batch, quality_contract, psi_threshold=0.25, action="warn")
    assert [feature.name for feature in report.features] == ["Torque [Nm]"]


def test_moderate_drift_below_the_threshold_is_not_drifted(quality_contract):
    batch = quality_and_torque(5_000, 5, shares=(0.45, 0.35, 0.2))
    report = drift_report(batch, quality_contract, psi_threshold=0.25, action="block")
    assert {feature.name: feature.status for feature in report.features}["Type"] == "moderate"
    assert report.status == "ok" and report.reason().startswith("no feature drifted above PSI 0.25")


@pytest.mark.parametrize(
    "threshold, action, rows, message",
    [
        (0.25, "stop", 10, "drift action must be one of ['warn', 'block']"),
        (0.0, "warn", 10, "psi_threshold must be a positive number"),
        (float("nan"), "warn", 10, "psi_threshold must be a positive number"),
        (0.25, "warn", 0, "cannot measure drift on 0 rows"),
    ],
)
def test_a_bad_policy_or_an_empty_batch_is_refused(quality_contract, threshold, action, rows, message):
    with pytest.raises(ContractError) as caught:
        drift_report(
            quality_and_torque(20, 6).head(rows), quality_contract, psi_threshold=threshold, action=action
        )
    assert message in str(caught.value)


# --- the verdict and its renderings ------------------------------------------------------------


def test_status_follows_the_policy_only_when_a_feature_drifted():
    assert _report({"a": 0.3}, action="warn").status == "warn"
    assert _report({"a": 0.3}, action="block").status == "block"
    assert _report({"a": 0.2}, action="block").status == "ok"
    assert _report({"a": 0.25}, action="block").drifted == ["a"]
    assert _report({}, action="block").status == "ok" and _report({}).max_psi == 0.0


def test_a_report_round_trips_through_json(quality_contract):
    batch = quality_and_torque(2_000, 7, shares=(0.1, 0.3, 0.6))
    report = drift_report(batch, quality_contract, psi_threshold=0.2, action="block")
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["status"] == "block" and data["drifted"] == ["Type"]
    assert DriftReport.from_dict(data) == report


@pytest.mark.parametrize(
    "broken, message",
    [
        ({"threshold": 0.25, "action": "warn"}, "malformed drift report"),
        ({"threshold": 0.25, "action": "halt", "features": []}, "drift action must be one of"),
        (
            {
                "threshold": 0.25,
                "action": "warn",
                "features": [{"name": "a", "kind": "x", "psi": 1, "status": "?"}],
            },
            "feature status outside",
        ),
    ],
)
def test_a_malformed_report_is_refused(broken, message):
    with pytest.raises(ContractError, match=re.escape(message)):
        DriftReport.from_dict(broken)


def test_drift_table_lists_features_highest_psi_first():
    table = drift_table(_report({"b": 0.05, "a": 0.4, "c": 0.12}))
    assert list(table.columns) == ["feature", "kind", "psi", "status"]
    assert table["feature"].tolist() == ["a", "c", "b"]
    assert table["status"].tolist() == ["drifted", "moderate", "stable"]


def test_drift_tags_are_strings_and_the_feature_list_is_bounded():
    names = {f"Sensor {i:03d} temperature [K]": 0.3 + i / 1000 for i in range(60)}
    tags = drift_tags(_report(names, action="block"))
    assert all(isinstance(value, str) for value in tags.values())
    assert tags["drift_threshold"] == "0.25" and tags["drift_action"] == "block"
    assert tags["drift_max_psi"] == "0.3590"
    assert len(tags["drift_features"]) <= TAG_LIMIT
    assert tags["drift_features"].startswith("Sensor 059 temperature [K],Sensor 058")
    kept = tags["drift_features"].split(",")[:-1]
    assert tags["drift_features"].endswith(f",+{60 - len(kept)} more")


def test_html_report_escapes_column_names_and_runs_no_script():
    hostile = "<script>alert(1)</script>"
    report = _report({hostile: 0.5, "Torque [Nm]": 0.05}, action="block")
    page = render_drift_html(report, title=f"Drift of {hostile}")
    assert "<script" not in page.lower() and "alert(1)</" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Torque [Nm]" in page and "0.5000" in page and "BLOCK" in page
    assert page.count("<tr>") == 3  # the header and one row per feature


def test_html_report_of_no_features_says_so():
    page = render_drift_html(_report({}), title="Drift")
    assert "no feature could be compared" in page


@pytest.mark.parametrize("features", [{"Torque [Nm]": 0.4, r"ratio $\frac$ [dB]": 0.1, "Type": 0.02}, {}])
def test_drift_plot_is_a_png_and_leaves_no_pyplot_figure(tmp_path, features):
    path = tmp_path / "drift" / "psi.png"
    assert plot_drift(_report(features), path) == str(path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []
