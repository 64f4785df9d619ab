"""Trials across tasks, for real: a study in Optuna storage (a journal file, or PostgreSQL through the
``cmms_optuna`` connection), trials as MLflow child runs (SQLite), chains run in any order, a task
killed between its two writes, a time budget, and pruning with LightGBM.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from cmms_mlflow.exceptions import MlflowConfigurationError
from cmms_mlflow.tracking import tuning_study

SPACE = {"max_depth": {"low": 2, "high": 5}, "min_child_weight": {"low": 0.5, "high": 5.0, "log": True}}


def _spec(shipped_spec, kind: str = "xgboost", **tuning_settings):
    from cmms_pm.spec import build_spec

    raw = copy.deepcopy(dict(shipped_spec.raw))
    raw["estimator"] = {
        "kind": kind,
        "params": {"n_estimators": 60, "learning_rate": 0.2, "early_stopping_rounds": 10},
    }
    raw["tuning"] = {"n_trials": 4, "trials_per_task": 2, "startup_trials": 1, "seed": 3, "space": SPACE}
    raw["tuning"].update(tuning_settings)
    return build_spec(raw)


@pytest.fixture
def journal(monkeypatch, tmp_path):
    monkeypatch.setenv(tuning_study.OPTUNA_STORAGE_ENV, "journal")
    monkeypatch.setenv(tuning_study.OPTUNA_HOME_ENV, str(tmp_path / "optuna"))
    return tmp_path / "optuna"


@pytest.fixture(scope="module")
def prepared_for(small_batch):
    """``prepared_for(spec)``: the chain's data (train and validation prepared once)."""
    from cmms_pm import tuning as search
    from cmms_pm.batch import manifest_features
    from cmms_pm.data import read_split
    from cmms_pm.params import run_config

    cache = {}

    def prepare(spec):
        if spec.estimator not in cache:
            cache[spec.estimator] = search.prepare(
                read_split(small_batch["splits"]["train"]["uri"]),
                read_split(small_batch["splits"]["validation"]["uri"]),
                features=manifest_features(spec, small_batch), target=spec.target, kind=spec.estimator,
                hyperparameters=run_config(spec, {}).hyperparameters,
            )  # fmt: skip
        return cache[spec.estimator]

    return prepare


def _study(client, spec, batch, run_id: str, **params):
    from support import training_provenance

    from cmms_pm.params import run_config

    config = run_config(spec, params)
    experiment = client.get_experiment_by_name("tuning-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("tuning-tests")
    plan, chains = tuning_study.create_study(
        client, spec=spec, config=config, manifest=batch, experiment_id=experiment_id,
        tags=training_provenance(spec), dag_id="tuning_tests", run_id=run_id, run_name="train_model-test",
    )  # fmt: skip
    return plan, chains, config


def _run(client, spec, plan, chain, prepared, config):
    tags = {
        "airflow.dag_id": "tuning_tests",
        "airflow.run_id": plan["study"].split(".")[1],
        "airflow.task_id": "tune",
    }
    return tuning_study.run_chain(
        client, spec=spec, plan=plan, chain=chain, prepared=prepared, hyperparameters=config.hyperparameters,
        airflow_tags=tags, map_index=chain["chain"],
    )  # fmt: skip


def _trials(plan):
    from cmms_pm.tuning import slot_of

    study, _ = tuning_study.load_study(plan["study"])
    return sorted(study.get_trials(deepcopy=False), key=slot_of)


def test_chains_give_the_same_trials_and_best_whatever_order_they_run_in(
    journal, client, shipped_spec, small_batch, prepared_for
):
    """Two runs of the same batch: chains 0 then 1 (one worker) and 1 then 0 (another schedule).
    Every slot gets the same parameters and value, so the best trial is the same (the backfill
    guarantee); Optuna's own trial numbers differ, which is why slots key everything."""
    from cmms_pm.tuning import best_trial, slot_of

    spec = _spec(shipped_spec)
    prepared = prepared_for(spec)
    outcomes = {}
    for run_id, order in (("run_a", (0, 1)), ("run_b", (1, 0))):
        plan, chains, config = _study(client, spec, small_batch, run_id)
        for index in order:
            _run(client, spec, plan, chains[index], prepared, config)
        trials = _trials(plan)
        outcomes[run_id] = {slot_of(t): (t.params, t.value, t.number) for t in trials}
        outcomes[run_id + "_best"] = slot_of(best_trial(trials))
    a, b = outcomes["run_a"], outcomes["run_b"]
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert {s: v[:2] for s, v in a.items()} == {s: v[:2] for s, v in b.items()}
    assert [a[s][2] for s in range(4)] != [b[s][2] for s in range(4)]  # arrival order did differ
    assert outcomes["run_a_best"] == outcomes["run_b_best"]
    assert len({json.dumps(v[0], sort_keys=True) for v in a.values()}) == 4  # four distinct trials
    # A notebook's in-process search gives the very same trials.
    from cmms_pm.params import run_config
    from cmms_pm.tuning import run_in_memory

    settings = spec.tuning
    local = run_in_memory(
        prepared, settings["space"], hyperparameters=run_config(spec, {}).hyperparameters, n_trials=4,
        trials_per_task=2, startup_trials=settings["startup_trials"], seed=settings["seed"],
    )  # fmt: skip
    assert {slot_of(t): (t.params, t.value) for t in local} == {s: v[:2] for s, v in a.items()}


def test_a_task_killed_between_its_mlflow_record_and_optunas_adds_no_trial_and_no_refit(
    journal, client, shipped_spec, small_batch, prepared_for, monkeypatch
):
    from cmms_pm import tuning as search

    spec = _spec(shipped_spec)
    plan, chains, config = _study(client, spec, small_batch, "run_killed")
    prepared = prepared_for(spec)
    fits = []
    evaluate = search.evaluate

    def counting(*args, **kwargs):
        fits.append(1)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(search, "evaluate", counting)
    tell = tuning_study._tell

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(tuning_study, "_tell", killed)
    with pytest.raises(SystemExit):
        _run(client, spec, plan, chains[0], prepared, config)
    [trial] = _trials(plan)
    assert trial.state.name == "RUNNING" and len(fits) == 1
    monkeypatch.setattr(tuning_study, "_tell", tell)
    result = _run(client, spec, plan, chains[0], prepared, config)  # the retry
    assert len(fits) == 2  # slot 1 only: slot 0 was completed from its MLflow record
    trials = _trials(plan)
    assert [t.user_attrs["slot"] for t in trials] == [0, 1] and {t.state.name for t in trials} == {"COMPLETE"}
    children = client.search_runs(
        [plan["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{plan['parent_run_id']}'"
    )
    assert len(children) == 2
    by_slot = {int(c.data.tags["cmms.trial_slot"]): c for c in children}
    assert trials[0].value == pytest.approx(by_slot[0].data.metrics["val_pr_auc"])
    assert [t["reused"] for t in result["trials"]] == [True, False]
    # Retried once more, the chain does nothing at all.
    again = _run(client, spec, plan, chains[0], prepared, config)
    assert len(fits) == 2 and all(t["reused"] for t in again["trials"]) and len(_trials(plan)) == 2


def test_a_task_killed_before_its_trial_run_existed_reuses_the_running_trial(
    journal, client, shipped_spec, small_batch, prepared_for, monkeypatch
):
    spec = _spec(shipped_spec)
    plan, chains, config = _study(client, spec, small_batch, "run_early_kill")
    create_child = tuning_study._create_child

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(tuning_study, "_create_child", killed)
    with pytest.raises(SystemExit):
        _run(client, spec, plan, chains[1], prepared_for(spec), config)
    [running] = _trials(plan)
    monkeypatch.setattr(tuning_study, "_create_child", create_child)
    _run(client, spec, plan, chains[1], prepared_for(spec), config)
    trials = _trials(plan)
    assert [t.user_attrs["slot"] for t in trials] == [2, 3]
    assert trials[0].number == running.number and trials[0].state.name == "COMPLETE"


def test_a_spent_time_budget_starts_no_trial_and_train_model_refuses_an_empty_study(
    journal, client, shipped_spec, small_batch, prepared_for
):
    from cmms_pm.exceptions import TuningError

    spec = _spec(shipped_spec, timeout_minutes=5)
    plan, chains, config = _study(client, spec, small_batch, "run_budget")
    assert datetime.fromisoformat(plan["deadline"]) > datetime.now(UTC) + timedelta(minutes=4)
    spent = {**plan, "deadline": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    result = _run(client, spec, spent, chains[0], prepared_for(spec), config)
    assert [t["state"] for t in result["trials"]] == ["SKIPPED", "SKIPPED"]
    assert _trials(plan) == []
    with pytest.raises(TuningError, match="no trial completed"):
        tuning_study.best_hyperparameters(plan, config.hyperparameters)


def test_lightgbm_trials_report_their_rounds_and_may_be_pruned(
    journal, client, shipped_spec, small_batch, prepared_for
):
    space = {
        "num_leaves": {"low": 2, "high": 64, "log": True},
        "learning_rate": {"low": 0.001, "high": 0.5, "log": True},
    }
    spec = _spec(shipped_spec, "lightgbm", n_trials=4, trials_per_task=4, space=space)
    plan, chains, config = _study(client, spec, small_batch, "run_lightgbm")
    result = _run(client, spec, plan, chains[0], prepared_for(spec), config)
    trials = _trials(plan)
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert all(t.intermediate_values and min(t.intermediate_values) == 0 for t in trials)
    assert {t["state"] for t in result["trials"]} == {t.state.name for t in trials}
    hyperparameters, summary = tuning_study.best_hyperparameters(plan, config.hyperparameters)
    assert hyperparameters["num_leaves"] == summary["best_params"]["num_leaves"]
    assert hyperparameters["n_estimators"] == 60 and hyperparameters["n_jobs"] == 2
    child = client.search_runs(
        [plan["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{plan['parent_run_id']}'"
    )[0]
    history = client.get_metric_history(child.info.run_id, "val_pr_auc_by_round")
    assert [m.step for m in history][:2] == [0, 10]


def test_the_study_lives_in_postgresql_through_the_cmms_optuna_connection(monkeypatch, postgres_server):
    import optuna
    import psycopg2

    password = "Opt%una@pw/1"
    postgres_server.create_password_role("optuna_user", password)
    admin = psycopg2.connect(host="127.0.0.1", port=postgres_server.port, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("CREATE DATABASE optuna_tests OWNER optuna_user")
    admin.close()
    connection = {
        "conn_type": "postgres", "host": "127.0.0.1", "port": postgres_server.port, "login": "optuna_user",
        "password": password, "schema": "optuna_tests",
    }  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_CMMS_OPTUNA", json.dumps(connection))
    monkeypatch.setenv(tuning_study.OPTUNA_STORAGE_ENV, "postgres")
    storage, where = tuning_study.open_storage("s1")
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert where.startswith("postgresql+psycopg2://optuna_user:***@127.0.0.1") and password not in where
    optuna.create_study(study_name="s1", storage=storage).set_user_attr("k", 1)
    study, _ = tuning_study.load_study("s1")  # a second storage object: what another worker sees
    assert study.user_attrs == {"k": 1}
    monkeypatch.delenv("AIRFLOW_CONN_CMMS_OPTUNA")
    with pytest.raises(MlflowConfigurationError, match="connection 'cmms_optuna' does not exist"):
        tuning_study.open_storage("s1")
    monkeypatch.setenv("AIRFLOW_CONN_CMMS_OPTUNA", json.dumps({**connection, "conn_type": "mysql"}))
    with pytest.raises(MlflowConfigurationError, match="is not 'postgres'"):
        tuning_study.open_storage("s1")
    monkeypatch.setenv(tuning_study.OPTUNA_STORAGE_ENV, "sometimes")
    with pytest.raises(MlflowConfigurationError, match="use auto, postgres or journal"):
        tuning_study.open_storage("s1")


def test_a_training_run_reopened_after_a_failed_fit_ends_with_one_ready_model(
    client, mlflow_conn, shipped_spec, small_batch, monkeypatch
):
    """train_model logs the tuned model into the run create_study made; when an attempt dies after
    logging part of it, the retry reopens the same run, logs the same values again (MLflow accepts
    equal params) and the run's result is the retry's model."""
    import mlflow.sklearn
    from support import training_provenance

    from cmms_mlflow.tracking import training_run

    experiment_id = client.create_experiment(f"reopen-{datetime.now(UTC).timestamp()}")
    run_id = client.create_run(experiment_id, tags=training_provenance(shipped_spec)).info.run_id
    kwargs = dict(
        experiment_id=experiment_id, manifest=small_batch, spec=shipped_spec, estimator="xgboost",
        hyperparameters={"n_estimators": 20}, tags=training_provenance(shipped_spec), run_name="train",
        run_id=run_id,
    )  # fmt: skip
    log_model = mlflow.sklearn.log_model

    def dies(*args, **kw):
        log_model(*args, **kw)
        raise SystemExit("killed after the model was logged")

    from cmms_mlflow.hooks.client_context import client_settings

    settings = {"MLFLOW_TRACKING_URI": mlflow_conn, "MLFLOW_REGISTRY_URI": mlflow_conn}
    monkeypatch.setattr(mlflow.sklearn, "log_model", dies)
    with client_settings(settings), pytest.raises(SystemExit):
        training_run.log_training_run(client, **kwargs)
    assert client.get_run(run_id).info.status == "FAILED"
    monkeypatch.setattr(mlflow.sklearn, "log_model", log_model)
    with client_settings(settings):
        result = training_run.log_training_run(client, **kwargs)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and result["run_id"] == run_id
    assert training_run.run_result(client, run)["model_uri"] == result["model_uri"]
    logged = client.search_logged_models(experiment_ids=[experiment_id])
    assert len(logged) == 2  # the dead attempt's model stays, unused
