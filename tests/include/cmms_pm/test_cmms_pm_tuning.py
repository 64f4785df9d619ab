"""The tuning section of a spec (refused when it loads, naming what is wrong), the trigger's n_trials,
and the deterministic pieces of the search: chains, per-slot TPE, tie-breaks, pruning."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from cmms_pm.exceptions import InvalidParamsError, SpecError
from cmms_pm.spec import build_spec, load_spec

PROJECT_DIR = Path(__file__).resolve().parents[3]
TUNED = PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "ai4i_tuned.yaml"


@pytest.fixture(scope="module")
def tuned():
    return load_spec(TUNED)


def _with_tuning(spec, **changes) -> dict:
    raw = copy.deepcopy(dict(spec.raw))
    raw["tuning"] = {**raw["tuning"], **changes}
    return raw


@pytest.mark.parametrize(
    ("tuning", "problem"),
    [
        (
            {"space": {"max_depth": {"low": 6, "high": 2}}},
            r"tuning.space.max_depth: empty range: low 6 must be below high 2",
        ),
        ({"space": {"max_depth": {"low": 4, "high": 4}}}, r"empty range: low 4"),
        (
            {"space": {"learning_rate": {"low": 0, "high": 0.3, "log": True}}},
            r"log range must lie above 0 \(low is 0\)",
        ),
        (
            {"space": {"num_leaves": {"low": 8, "high": 64}}},
            r"'num_leaves' is not a hyperparameter of xgboost \(tunable: \[",
        ),
        (
            {"space": {"random_state": {"low": 1, "high": 9}}},
            r"'random_state' is a setting of the run, never tuned",
        ),
        ({"space": {"n_jobs": {"choices": [1, 2]}}}, r"'n_jobs' is a setting of the run"),
        ({"n_trials": 0}, r"tuning.n_trials: 0 is less than the minimum of 1"),
        ({"n_trials": 13}, r"tuning.n_trials: 13 is above tuning.max_trials 12"),
        ({"max_trials": 5000}, r"tuning.max_trials: 5000 is greater than the maximum of 1000"),
        ({"metric": "logloss"}, r"tuning.metric: 'logloss' is not one of \['f1'"),
        (
            {"space": {"class_weight": {"low": 0, "high": 1}}},
            r"class_weight takes one of \['balanced', 'none'\]: give choices",
        ),
        (
            {"space": {"class_weight": {"choices": ["balanced", "balanced_subsample"]}}},
            r"choice 'balanced_subsample' is invalid",
        ),
        (
            {"space": {"max_depth": {"low": 2.5, "high": 6}}},
            r"max_depth is an integer: low, high and step must be whole",
        ),
        ({"space": {"learning_rate": {"low": 0.1, "high": 2}}}, r"2 is outside the hyperparameter's bounds"),
        (
            {"space": {"subsample": {"low": 0.5, "high": 1, "log": True, "step": 0.1}}},
            r"log and step exclude each other",
        ),
        ({"space": {"subsample": {"low": 0.5}}}, r"a range needs low and high"),
        (
            {"space": {"subsample": {"low": 0.5, "high": 0.9, "choices": [0.5]}}},
            r"either choices or a low/high range",
        ),
        ({"space": {}}, r"tuning.space: {} should be non-empty|does not have enough properties"),
        ({"space": {"subsample": {"low": 0.5, "high": 0.9, "scale": "log"}}}, r"'scale' was unexpected"),
    ],
    ids=lambda value: str(value)[:60],
)
def test_bad_search_spaces_are_refused_when_the_spec_loads(tuned, tuning, problem):
    with pytest.raises(SpecError, match=problem):
        build_spec(_with_tuning(tuned, **tuning), path="x.yaml")


def test_a_good_space_loads_with_defaults_and_no_tuning_section_means_none(tuned):
    assert tuned.tuning["n_trials"] == 6 and tuned.tuning["timeout_minutes"] is None
    assert tuned.tuning["pruning"] is True
    raw = copy.deepcopy(dict(tuned.raw))
    del raw["tuning"]
    assert build_spec(raw).tuning is None
    lightgbm = copy.deepcopy(dict(tuned.raw))
    lightgbm["estimator"] = {"kind": "lightgbm", "params": {}}
    lightgbm["tuning"]["space"] = {
        "num_leaves": {"low": 8, "high": 64, "log": True},
        "max_depth": {"low": -1, "high": 8},
    }
    assert build_spec(lightgbm).tuning["space"]["num_leaves"]["log"] is True


def test_the_trigger_may_change_n_trials_within_the_specs_cap_only(tuned):
    from cmms_pm.params import run_config, training_params, validate_conf

    form = training_params(tuned)
    assert form["n_trials"]["minimum"] == 1 and form["n_trials"]["maximum"] == 12
    assert form["estimator"]["enum"] == ["xgboost"]  # the space is this estimator's
    assert run_config(tuned, validate_conf(form, {"n_trials": 9})).n_trials == 9
    assert run_config(tuned, validate_conf(form, {})).n_trials == 6
    for bad in ({"n_trials": 0}, {"n_trials": 13}, {"n_trials": 2.5}, {"estimator": "lightgbm"}):
        with pytest.raises(InvalidParamsError, match=next(iter(bad))):
            validate_conf(form, bad)


def test_an_untuned_spec_has_no_tuning_field_and_no_trials(shipped_spec):
    from cmms_pm.params import run_config, training_params

    form = training_params(shipped_spec)
    assert "n_trials" not in form and "xgboost" in form["estimator"]["enum"]
    assert run_config(shipped_spec, {}).n_trials is None


def test_chains_cut_the_slots_in_order():
    from cmms_pm.tuning import chains

    assert chains(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chains(2, 5) == [[0, 1]]


def _trial(slot: int, value: float | None, params: dict, space, state="COMPLETE", rounds=None):
    from optuna.trial import TrialState, create_trial

    return create_trial(
        state=TrialState[state],
        value=value,
        params=params,
        distributions={k: space[k] for k in params},
        user_attrs={"slot": slot},
        intermediate_values=rounds or {},
    )


def test_a_slots_parameters_depend_on_seed_slot_and_history_only(tuned):
    from cmms_pm.tuning import distributions, suggest

    space = distributions("xgboost", tuned.tuning["space"])
    first = suggest(space, [], seed=7, slot=0, startup_trials=2)
    assert first == suggest(space, [], seed=7, slot=0, startup_trials=2)
    assert first != suggest(space, [], seed=7, slot=1, startup_trials=2)
    assert first != suggest(space, [], seed=8, slot=0, startup_trials=2)
    assert set(first) == set(tuned.tuning["space"])
    assert 2 <= first["max_depth"] <= 6 and isinstance(first["max_depth"], int)
    history = [
        _trial(s, 0.5 + s / 10, suggest(space, [], seed=7, slot=s, startup_trials=2), space) for s in range(3)
    ]
    after = suggest(space, history, seed=7, slot=3, startup_trials=2)
    # TPE after its startup trials: the same history in any order gives the same suggestion.
    assert after == suggest(space, list(reversed(history)), seed=7, slot=3, startup_trials=2)


def test_the_best_trial_is_the_highest_value_ties_to_the_lowest_slot(tuned):
    from cmms_pm.exceptions import TuningError
    from cmms_pm.tuning import best_trial, distributions, require_best, slot_of

    space = distributions("xgboost", tuned.tuning["space"])
    params = {"max_depth": 3}
    trials = [
        _trial(4, 0.9, params, space),
        _trial(2, 0.9, params, space),
        _trial(0, 0.7, params, space),
        _trial(1, None, params, space, state="PRUNED"),
    ]
    assert slot_of(best_trial(trials)) == 2
    assert best_trial(trials[3:]) is None
    with pytest.raises(TuningError, match=r"no trial completed \(\{'PRUNED': 1\}\)"):
        require_best(trials[3:], "s")


def test_the_pruner_stops_a_trial_clearly_below_its_chains_median_after_warm_up(tuned):
    import optuna

    from cmms_pm.tuning import PRUNE_WARMUP_ROUNDS, ChainPruner, distributions

    space = distributions("xgboost", tuned.tuning["space"])
    rounds = {step: 0.8 for step in range(0, 60)}
    history = [_trial(s, 0.8, {"max_depth": 3}, space, rounds=rounds) for s in range(3)]
    good = ChainPruner(history)
    for step in range(60):
        good(step, 0.85)  # never pruned
    bad = ChainPruner(history)
    with pytest.raises(optuna.TrialPruned, match=f"round {PRUNE_WARMUP_ROUNDS}"):
        for step in range(60):
            bad(step, 0.2)
    assert max(bad.values) == PRUNE_WARMUP_ROUNDS  # nothing pruned during the warm-up
    off = ChainPruner(history, enabled=False)
    for step in range(60):
        off(step, 0.2)
    assert set(off.reported()) == {0, 10, 20, 30, 40, 50, 59}


@pytest.mark.parametrize(
    "kind", ["random_forest", "hist_gradient_boosting", "logistic_regression", "xgboost", "lightgbm"]
)
def test_a_trial_runs_single_threaded_only_where_the_estimator_takes_a_thread_count(kind):
    """Trials run side by side, so a booster's trial gets one thread; an estimator without the
    setting gets none added (a logistic regression's trials all failed on an unexpected n_jobs)."""
    from cmms_pm.estimators import estimator, validate_hyperparameters
    from cmms_pm.tuning import trial_hyperparameters

    defaults = estimator(kind).defaults()
    merged = trial_hyperparameters(kind, defaults, {})
    assert validate_hyperparameters(kind, merged) == merged  # every key is the estimator's own
    assert ("n_jobs" in merged) == ("n_jobs" in defaults)
    if "n_jobs" in merged:
        assert merged["n_jobs"] == 1
    tunable = estimator(kind).tunable
    assert tunable
    chosen = {tunable[0]: defaults[tunable[0]]}
    assert trial_hyperparameters(kind, {}, chosen).items() >= chosen.items()  # the trial's value wins
