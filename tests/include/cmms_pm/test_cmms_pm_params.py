"""A model's trigger form comes from its spec; the same schema validates a whole conf (the API's)."""

from __future__ import annotations

import re

import pytest

from cmms_pm.exceptions import InvalidParamsError
from cmms_pm.params import run_config, scoring_params, training_params, validate_conf


def test_the_form_takes_its_defaults_and_bounds_from_the_spec(shipped_spec):
    params = training_params(shipped_spec)
    assert params["model_name"]["default"] == "predictive_maintenance_rf"
    assert (params["n_estimators"]["default"], params["max_depth"]["default"]) == (100, 10)
    assert (params["n_estimators"]["minimum"], params["n_estimators"]["maximum"]) == (1, 2000)
    assert params["f1_threshold"]["default"] == 0.8 and params["n_samples"]["default"] == 20000
    assert params["estimator"]["enum"] == [
        "random_forest",
        "hist_gradient_boosting",
        "logistic_regression",
        "xgboost",
        "lightgbm",
    ]
    for name, param in params.items():
        assert param["title"] and param["section"] and param["description"], name


def test_a_partial_conf_is_completed_with_the_form_defaults(shipped_spec):
    params = training_params(shipped_spec)
    conf = validate_conf(params, {"n_estimators": 50})
    assert conf["n_estimators"] == 50 and set(conf) == set(params)
    assert conf["max_depth"] == params["max_depth"]["default"]


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"n_estimators": 0}, "n_estimators"),
        ({"max_depth": "deep"}, "max_depth"),
        ({"f1_threshold": 1.5}, "f1_threshold"),
        ({"data_source": "telemetry.xlsx"}, "data_source"),
        ({"data_source": "s3://bucket/t.csv?endpoint_override=evil.example"}, "data_source"),
        ({"data_source": "incoming/t.csv\n"}, "data_source"),
        ({"model_name": "../etc/passwd"}, "model_name"),
        ({"model_name": "123"}, "model_name"),
        ({"model_name": "0x1F"}, "model_name"),
        ({"model_name": "pm_model\n"}, "model_name"),
        # A valid name, but another spec's model (or one no spec owns): a spec trains only its own.
        ({"model_name": "ai4i_rf"}, "model_name"),
        ({"model_name": "predictive_maintenance_rf2"}, "model_name"),
        ({"estimator": "catboost"}, "estimator"),
        ({"hyperparameters": {"learning_rate": 2}}, "hyperparameters"),
        ({"hyperparameters": {"n_trees": 2}}, "hyperparameters"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_invalid_values_and_unknown_keys_are_refused_naming_the_field(shipped_spec, conf, field):
    with pytest.raises(InvalidParamsError) as caught:
        validate_conf(training_params(shipped_spec), conf)
    assert field in str(caught.value)
    assert caught.value.problems


def test_patterns_mean_the_same_in_python_and_javascript(shipped_spec):
    """The browser validates the form with ECMAScript regexes: no Python-only syntax like \\Z."""
    params = training_params(shipped_spec)
    assert any("pattern" in param for param in params.values())
    for name, param in params.items():
        if "pattern" in param:
            assert "\\Z" not in param["pattern"] and "(?P<" not in param["pattern"], name
            assert re.search(param["pattern"], "abc\n") is None or name == "target_column"


def test_the_run_uses_the_specs_estimator_with_the_forms_hyperparameters(shipped_spec):
    config = run_config(shipped_spec, {"n_estimators": 50, "f1_threshold": 0.7})
    assert config.estimator == "random_forest" and config.hyperparameters["n_estimators"] == 50
    assert config.thresholds == {
        "metric": "f1", "threshold": 0.7, "min_improvement": 0.0, "allow_promotion": True,
        "allow_older_data": False,
    }  # fmt: skip
    assert config.model_name == "predictive_maintenance_rf" and config.data_source == "synthetic"


def test_a_run_that_names_another_model_is_refused_when_it_starts(shipped_spec):
    """The second line of defence: a conf the form never validated (a run from before the rule)."""
    with pytest.raises(InvalidParamsError, match="'ai4i_rf' is not spec 'predictive_maintenance'"):
        run_config(shipped_spec, {"model_name": "ai4i_rf"})
    assert training_params(shipped_spec)["model_name"]["enum"] == ["predictive_maintenance_rf"]


def test_another_estimator_at_trigger_time_takes_its_defaults_and_the_override_object(shipped_spec):
    config = run_config(
        shipped_spec, {"estimator": "hist_gradient_boosting", "hyperparameters": {"learning_rate": 0.05}}
    )
    assert config.estimator == "hist_gradient_boosting"
    assert config.hyperparameters["learning_rate"] == 0.05 and config.hyperparameters["max_iter"] == 200
    assert "n_estimators" not in config.hyperparameters and config.notes


def test_hyperparameters_that_do_not_fit_the_chosen_estimator_are_refused_by_name(shipped_spec):
    with pytest.raises(InvalidParamsError, match="C"):
        run_config(shipped_spec, {"hyperparameters": {"C": 2.0}})


def test_the_scoring_risk_threshold_defaults_to_the_models_own_and_refuses_what_is_not_a_probability(
    shipped_spec,
):
    params = scoring_params(shipped_spec)
    assert params["risk_threshold"]["default"] is None  # empty: each champion's decision threshold
    assert validate_conf(params, {})["risk_threshold"] is None
    assert validate_conf(params, {"risk_threshold": 0.35})["risk_threshold"] == 0.35
    for bad in (1.5, -0.1, "0.3", "NaN", True, [0.3]):
        with pytest.raises(InvalidParamsError, match="risk_threshold"):
            validate_conf(params, {"risk_threshold": bad})
