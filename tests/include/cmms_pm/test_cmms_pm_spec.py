"""Model specs: one validated YAML file per model; errors name the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cmms_pm.exceptions import SpecError
from cmms_pm.spec import ModelSpec, build_spec, load_spec, load_specs

MINIMAL = {
    "name": "pumps",
    "registered_model": "pumps_rf",
    "source": {"kind": "file", "path": "incoming/pumps.csv"},
    "target": {"column": "failed", "positive": "yes"},
    "features": {"numeric": ["Temperature [C]"], "categorical": ["site"]},
}


def _write(folder: Path, data: dict, name: str | None = None) -> Path:
    path = folder / f"{name or data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_shipped_spec_describes_todays_model(shipped_spec):
    assert (shipped_spec.training_dag_id, shipped_spec.scoring_dag_id) == (
        "predictive_maintenance_training", "predictive_maintenance_scoring",
    )  # fmt: skip
    assert shipped_spec.registered_model == "predictive_maintenance_rf"
    assert shipped_spec.schedule == "0 2 * * *" and shipped_spec.source["kind"] == "synthetic"
    assert shipped_spec.estimator_params["n_estimators"] == 100


def test_a_minimal_spec_gets_every_default_from_the_schema(tmp_path):
    spec = load_spec(_write(tmp_path, MINIMAL))
    assert spec.experiment == "pumps" and spec.scoring_experiment == "pumps_scoring"
    assert spec.estimator == "random_forest" and spec.estimator_params["max_depth"] == 10
    assert spec.promotion == {
        "metric": "f1", "threshold": 0.8, "min_improvement": 0.0, "promote_older_data": False,
        "allow_promotion": True,
    }  # fmt: skip
    assert spec.drift == {"psi_threshold": 0.25, "action": "warn"}
    assert spec.validation == {"min_rows": 200, "max_missing_rate": 0.0}
    assert spec.source["aws_conn_id"] == "aws_default"
    assert spec.scoring["source"] == {"kind": "synthetic", "n_units": 500}
    assert (
        spec.features.kind_of("site") == "categorical"
        and spec.features.kind_of("Temperature [C]") == "numeric"
    )


def test_a_spec_round_trips_through_its_json_form(shipped_spec):
    again = ModelSpec.from_dict(shipped_spec.to_dict())
    assert again.raw == shipped_spec.raw and again.path == shipped_spec.path
    assert again.features == shipped_spec.features


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"estimator": {"kind": "catboost"}}, "estimator.kind: 'catboost' is not one of"),
        ({"estimator": {"params": {"n_estimators": 0}}}, "estimator.params: random_forest: n_estimators: 0"),
        ({"estimator": {"params": {"trees": 5}}}, "'trees' was unexpected"),
        ({"source": {"kind": "file"}}, "source: 'path' is a required property"),
        ({"source": {"kind": "sql", "conn_id": "db", "table": "t; DROP TABLE x"}}, "source.table"),
        ({"source": {"kind": "sql", "conn_id": "db", "table": "readings"}}, "source.timestamp_column"),
        ({"registered_model": "0x1F"}, "registered_model: '0x1F' does not match"),
        ({"registered_model": "pumps\n"}, "registered_model"),
        ({"drop": ["site"]}, "drop: column 'site' is already used as features.categorical"),
        ({"id_columns": ["asset_id"]}, "id_columns: 'asset_id' must also be listed in drop"),
        ({"features": {"infer": True, "numeric": ["x"]}}, "exclude each other"),
        ({"features": {}}, "declare numeric/integer/categorical columns, or set infer: true"),
        (
            {"features": {"numeric": ["x"], "ranges": {"x": [5, 1]}}},
            "features.ranges.x: low 5 is above high 1",
        ),
        ({"target": {"column": "failed", "positive": "yes", "negative": "yes"}}, "must differ"),
        ({"promotion": {"threshold": 1.5}}, "promotion.threshold: 1.5 is greater than the maximum of 1"),
        ({"unknown_field": 1}, "'unknown_field' was unexpected"),
    ],
)
def test_a_broken_spec_names_the_file_and_the_field(tmp_path, change, message):
    path = _write(tmp_path, {**MINIMAL, **change}, name="pumps")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert message in str(caught.value)


def test_invalid_yaml_and_a_wrong_file_name_are_clear(tmp_path):
    (tmp_path / "pumps.yaml").write_text("name: pumps\nsource: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(tmp_path / "pumps.yaml")
    path = _write(tmp_path, MINIMAL, name="other")
    with pytest.raises(SpecError, match="name: 'pumps' must equal the file name 'other'"):
        load_spec(path)


def test_one_broken_spec_does_not_hide_the_others_and_shared_models_are_refused(tmp_path):
    _write(tmp_path, MINIMAL)
    _write(tmp_path, {**MINIMAL, "name": "fans", "registered_model": "fans_rf"})
    _write(tmp_path, {**MINIMAL, "name": "broken", "estimator": {"kind": "svm"}})
    specs, errors = load_specs(tmp_path)
    assert sorted(spec.name for spec in specs) == ["fans", "pumps"]
    assert len(errors) == 1 and "broken.yaml" in str(errors[0])

    _write(tmp_path, {**MINIMAL, "name": "pumps_copy"})
    specs, errors = load_specs(tmp_path)
    assert sorted(spec.name for spec in specs) == ["fans"]
    assert sum("is also used by" in str(err) for err in errors) == 2


def test_build_spec_refuses_a_non_mapping():
    with pytest.raises(SpecError, match="<spec>"):
        build_spec({"name": 5}, path="x.yaml")


def test_decision_calibration_and_explain_have_defaults_and_old_scoring_thresholds_stay_valid(tmp_path):
    spec = load_spec(_write(tmp_path, MINIMAL))
    assert spec.decision == {
        "strategy": "f1", "costs": {"missed_failure": 10.0, "needless_inspection": 1.0}, "fallback": "f1",
        "fixed_threshold": 0.5,
    }  # fmt: skip
    assert spec.calibration == {"method": "auto"}
    assert spec.explain == {"reasons": 3, "scope": "at_risk", "max_rows": 1000, "method": "exact"}
    assert spec.scoring["risk_threshold"] is None  # each champion's own threshold
    old = load_spec(_write(tmp_path, {**MINIMAL, "scoring": {"risk_threshold": 0.5}}))
    assert old.scoring["risk_threshold"] == 0.5  # a spec from before: valid, and an explicit override


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        ({"strategy": "precision_floor"}, "decision.min_precision: the precision_floor strategy needs it"),
        ({"strategy": "alert_budget"}, "decision.alert_budget: the alert_budget strategy needs it"),
        ({"min_precision": 0.7}, "decision.min_precision: set, but decision.strategy is 'f1'"),
        ({"strategy": "cost", "alert_budget": {"share": 0.1}}, "decision.alert_budget: set, but"),
        ({"strategy": "alert_budget", "alert_budget": {}}, "decision.alert_budget: {} should be non-empty"),
        ({"strategy": "alert_budget", "alert_budget": {"per_day": 0}}, "per_day: 0 is less than the minimum"),
        ({"strategy": "recall"}, "decision.strategy: 'recall' is not one of"),
        ({"costs": {"missed_failure": 0}}, "decision.costs.missed_failure: 0 is less than or equal"),
        ({"fixed_threshold": 1.0}, "decision.fixed_threshold: 1.0 is greater than or equal"),
        ({"min_precision": 1.5, "strategy": "precision_floor"}, "decision.min_precision: 1.5 is greater"),
    ],
)
def test_a_decision_section_that_cannot_work_is_refused_naming_the_field(tmp_path, decision, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(_write(tmp_path, {**MINIMAL, "decision": decision}))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"calibration": {"method": "platt"}}, "calibration.method: 'platt' is not one of"),
        ({"explain": {"reasons": 50}}, "explain.reasons: 50 is greater than the maximum of 20"),
        ({"explain": {"scope": "everything"}}, "explain.scope: 'everything' is not one of"),
        ({"scoring": {"risk_threshold": 1.2}}, "scoring.risk_threshold: 1.2 is greater than the maximum"),
    ],
)
def test_calibration_explain_and_scoring_settings_are_checked(tmp_path, section, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(_write(tmp_path, {**MINIMAL, **section}))


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"keep_batches": 0}, "retention.keep_batches: 0 is less than the minimum of 1"),
        ({"keep_archived_versions": -1}, "retention.keep_archived_versions: -1 is less than the minimum"),
        ({"keep_batches": "all"}, "retention.keep_batches: 'all' is not of type"),
        ({"keep_versions": 3}, "retention: Additional properties are not allowed ('keep_versions'"),
    ],
)
def test_a_retention_that_would_remove_the_running_batch_is_refused(tmp_path, retention, message):
    """keep_batches 0 would delete the batch the running run trains on (issue 20's bad input)."""
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(_write(tmp_path, {**MINIMAL, "retention": retention}))


def test_retries_default_to_two_from_thirty_seconds_and_are_checked(tmp_path):
    spec = load_spec(_write(tmp_path, MINIMAL))
    assert spec.retries == {
        "attempts": 2, "delay_seconds": 30, "exponential_backoff": True, "max_delay_seconds": 600,
    }  # fmt: skip
    quick = load_spec(_write(tmp_path, {**MINIMAL, "retries": {"attempts": 1, "delay_seconds": 0.5}}))
    assert quick.retries["attempts"] == 1 and quick.retries["delay_seconds"] == 0.5
    for retries, message in (
        ({"attempts": -1}, "retries.attempts: -1 is less than the minimum of 0"),
        ({"attempts": 11}, "retries.attempts: 11 is greater than the maximum of 10"),
        (
            {"delay_seconds": 60, "max_delay_seconds": 10},
            "retries.max_delay_seconds: 10 is below delay_seconds 60",
        ),
        ({"delay": 3}, "retries: Additional properties are not allowed ('delay'"),
    ):
        with pytest.raises(SpecError, match=re.escape(message)):
            load_spec(_write(tmp_path, {**MINIMAL, "retries": retries}))
