"""The trigger form's schema also validates a whole conf (the API's training request)."""

from __future__ import annotations

import pytest

from cmms_pm.exceptions import InvalidParamsError
from cmms_pm.params import TRAINING_PARAMS, validate_training_conf


def test_a_partial_conf_is_completed_with_the_form_defaults():
    conf = validate_training_conf({"n_estimators": 50})
    assert conf["n_estimators"] == 50
    assert set(conf) == set(TRAINING_PARAMS)
    assert conf["max_depth"] == TRAINING_PARAMS["max_depth"]["default"]


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"n_estimators": 0}, "n_estimators"),
        ({"max_depth": "deep"}, "max_depth"),
        ({"f1_threshold": 1.5}, "f1_threshold"),
        ({"data_source": "telemetry.xlsx"}, "data_source"),
        ({"model_name": "../etc/passwd"}, "model_name"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_invalid_values_and_unknown_keys_are_refused_naming_the_field(conf, field):
    with pytest.raises(InvalidParamsError) as caught:
        validate_training_conf(conf)
    assert field in str(caught.value)
    assert caught.value.problems
