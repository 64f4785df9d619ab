"""Tuning across Airflow tasks: the Optuna study's storage, its trials as MLflow child runs, and the
summary logged with the tuned model. The search itself (spaces, chains, TPE, pruning) is
``cmms_pm.tuning``; the operators are ``cmms_mlflow.operators.tuning_ops``.

**Storage** — where every worker finds the study, decided like the registry lock:

1. the Airflow connection ``cmms_optuna`` (conn type ``postgres``): Optuna's RDB storage on that
   PostgreSQL database (e.g. a database of the Airflow/MLflow server), shared by every host;
2. otherwise a journal file per study under ``$CMMS_OPTUNA_HOME`` (default ``<embedded MLflow
   home>/optuna``): one host only (the embedded default, LocalExecutor).

``CMMS_OPTUNA_STORAGE=postgres`` requires the connection (a Celery or Kubernetes deployment should
set it, so a missing connection fails the run instead of splitting the study per host);
``journal`` forces the file.

**Keys** — a study per Airflow run and settings (``<dag_id>.<run_id>.<digest>``: the digest covers
the estimator, fixed hyperparameters, space, trials, seed, metric and the batch's data digest); a
trial per slot (user attribute ``key`` = ``<run_id>/<map_index>/<slot>``); a child run per slot
(tags ``mlflow.parentRunId`` and ``cmms.trial_slot``). Each trial writes MLflow first (its metrics,
then its end), then Optuna (its state): a retry that finds the MLflow record of a trial Optuna
still calls RUNNING completes the trial from that record instead of fitting again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow.exceptions import MlflowConfigurationError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from cmms_pm.tuning import Prepared

log = logging.getLogger(__name__)

OPTUNA_CONN_ID = "cmms_optuna"
OPTUNA_STORAGE_ENV = "CMMS_OPTUNA_STORAGE"
OPTUNA_HOME_ENV = "CMMS_OPTUNA_HOME"
#: Tags of the training run that owns a study, and of each trial's child run.
STUDY_TAG = "cmms.tuning.study"
PARENT_TAG = "mlflow.parentRunId"
SLOT_TAG = "cmms.trial_slot"
CHAIN_TAG = "cmms.trial_chain"
STATE_TAG = "optuna.trial_state"
HOST_TAG = "cmms.trial_host"
#: Artifacts of the study in the training run.
SUMMARY_DIR = "tuning"
_PG_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "target_session_attrs")


def storage_mode() -> str:
    mode = (os.environ.get(OPTUNA_STORAGE_ENV) or "auto").strip().lower()
    if mode not in ("auto", "postgres", "journal"):
        raise MlflowConfigurationError(f"{OPTUNA_STORAGE_ENV}={mode!r}: use auto, postgres or journal")
    return mode


def _connection() -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(OPTUNA_CONN_ID)
    except AirflowNotFoundException:
        return None


def database_url(conn: Any) -> Any:
    """The SQLAlchemy URL (psycopg2) of a ``postgres`` connection; its password is never rendered."""
    from sqlalchemy.engine import URL

    if (conn.conn_type or "").lower() not in ("postgres", "postgresql"):
        raise MlflowConfigurationError(
            f"connection {OPTUNA_CONN_ID!r}: conn_type {conn.conn_type!r} is not 'postgres'"
        )
    extra = conn.extra_dejson
    return URL.create(
        "postgresql+psycopg2",
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or "localhost",
        port=conn.port or 5432,
        database=conn.schema or "postgres",
        query={k: str(extra[k]) for k in _PG_OPTIONS if extra.get(k)},
    )


def journal_path(study: str) -> Path:
    from cmms_mlflow.hooks.mlflow_hook import embedded_home
    from cmms_pm.spec import safe_path_component

    home = Path(os.environ.get(OPTUNA_HOME_ENV) or embedded_home() / "optuna")
    return home / f"{safe_path_component(study)}.journal"


def open_storage(study: str) -> tuple[Any, str]:
    """(Optuna storage, a description without secrets) for ``study``, per the rules above."""
    import optuna
    import optuna.storages.journal

    mode = storage_mode()
    conn = _connection() if mode != "journal" else None
    if conn is None and mode == "postgres":
        raise MlflowConfigurationError(
            f"{OPTUNA_STORAGE_ENV}=postgres but the Airflow connection {OPTUNA_CONN_ID!r} does not exist"
        )
    if conn is not None:
        url = database_url(conn)
        storage = optuna.storages.RDBStorage(
            url.render_as_string(hide_password=False),
            engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}},
        )
        return storage, url.render_as_string(hide_password=True)
    path = journal_path(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend), f"journal file {path}"


def load_study(name: str) -> tuple[Any, str]:
    import optuna

    storage, where = open_storage(name)
    return optuna.load_study(study_name=name, storage=storage), where


# --- create_study ----------------------------------------------------------------------------------


def study_settings(spec: Any, config: Any, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that decides a study's trials (its digest names the study)."""
    tuning = spec.tuning
    return {
        "estimator": config.estimator,
        "hyperparameters": {k: v for k, v in config.hyperparameters.items() if k != "n_jobs"},
        "space": tuning["space"],
        "n_trials": config.n_trials,
        "trials_per_task": tuning["trials_per_task"],
        "startup_trials": tuning["startup_trials"],
        "seed": tuning["seed"],
        "metric": tuning["metric"],
        "pruning": tuning["pruning"],
        "data_digest": manifest["digest"],
    }


def create_study(
    client: MlflowClient,
    *,
    spec: Any,
    config: Any,
    manifest: Mapping[str, Any],
    experiment_id: str,
    tags: dict[str, str],
    dag_id: str,
    run_id: str,
    run_name: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Create (or find again) the run's study and its training run; return the plan and the chains.

    The training run (the parent of every trial) is created here, RUNNING, so that trials can
    name it; ``train_model`` logs the tuned model into it. Found again by its study tag on retry
    and when the Airflow run is cleared: the same settings give the same study, whose finished
    trials are kept (a cleared run resumes its study; changed settings or data name a new one).
    """
    import optuna

    from cmms_pm import tuning

    settings = study_settings(spec, config, manifest)
    name = f"{dag_id}.{run_id}.{tuning.settings_digest(settings)}"
    storage, where = open_storage(name)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    parent = _find_parent(client, experiment_id, name)
    if parent is None:
        parent = client.create_run(
            experiment_id, run_name=run_name, tags={**tags, STUDY_TAG: name, "cmms.tuning.storage": where}
        )
        log.info("Training run %s created for study %s", parent.info.run_id, name)
    timeout = spec.tuning["timeout_minutes"]
    # The time budget is wall-clock by nature: counted from this attempt of create_study.
    deadline = (datetime.now(UTC) + timedelta(minutes=timeout)).isoformat() if timeout else None
    study.set_user_attr("settings", json.loads(json.dumps(settings, default=str)))
    study.set_user_attr("parent_run_id", parent.info.run_id)
    plan = {
        "study": name,
        "storage": where,
        "experiment_id": experiment_id,
        "parent_run_id": parent.info.run_id,
        "estimator": config.estimator,
        "n_trials": int(config.n_trials),
        "metric": spec.tuning["metric"],
        "seed": spec.tuning["seed"],
        "deadline": deadline,
    }
    chains = [
        {"chain": index, "slots": slots}
        for index, slots in enumerate(tuning.chains(int(config.n_trials), spec.tuning["trials_per_task"]))
    ]
    return plan, chains


def _find_parent(client: MlflowClient, experiment_id: str, study: str) -> Run | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{study}'",
        max_results=10,
        order_by=["start_time ASC"],
    )
    return runs[0] if runs else None


# --- tune: one chain of trials ---------------------------------------------------------------------


def _child_runs(client: MlflowClient, plan: Mapping[str, Any]) -> dict[int, Run]:
    """The trial runs already under the training run, by slot (the first of each slot)."""
    runs = client.search_runs(
        [plan["experiment_id"]],
        filter_string=f"tags.`{PARENT_TAG}` = '{plan['parent_run_id']}'",
        max_results=5000,
        order_by=["start_time ASC"],
    )
    found: dict[int, Run] = {}
    for run in runs:
        slot = run.data.tags.get(SLOT_TAG)
        if slot is not None and slot.isdigit():
            found.setdefault(int(slot), run)
    return found


def run_chain(
    client: MlflowClient,
    *,
    spec: Any,
    plan: Mapping[str, Any],
    chain: Mapping[str, Any],
    prepared: Prepared,
    hyperparameters: Mapping[str, Any],
    airflow_tags: Mapping[str, str],
    map_index: int,
) -> dict[str, Any]:
    """Run the chain's missing trials in slot order; return one record per slot."""
    import optuna
    from optuna.trial import TrialState

    from cmms_pm import tuning
    from cmms_pm.estimators import estimator

    settings = spec.tuning
    study, _ = load_study(plan["study"])
    space = tuning.distributions(plan["estimator"], settings["space"])
    slots = set(chain["slots"])
    children = _child_runs(client, plan)
    deadline = datetime.fromisoformat(plan["deadline"]) if plan.get("deadline") else None
    prunable = settings["pruning"] and estimator(plan["estimator"]).fit is not None
    records = []
    for slot in chain["slots"]:
        trials = [t for t in study.get_trials(deepcopy=False) if tuning.slot_of(t) in slots]
        mine = [t for t in trials if tuning.slot_of(t) == slot]
        finished = [t for t in mine if t.state.is_finished()]
        if finished:
            records.append(_record(finished[0], reused=True))
            continue
        if deadline is not None and datetime.now(UTC) >= deadline:
            records.append({"slot": slot, "state": "SKIPPED", "reason": "time budget spent"})
            continue
        history = [t for t in trials if tuning.slot_of(t) < slot and t.state.is_finished()]
        params = tuning.suggest(
            space, history, seed=plan["seed"], slot=slot, startup_trials=settings["startup_trials"]
        )
        trial_id = _open_trial(study, mine, slot=slot, chain=chain["chain"], params=params, space=space,
                               key=f"{airflow_tags['airflow.run_id']}/{map_index}/{slot}")  # fmt: skip
        child = children.get(slot) or _create_child(
            client, plan, slot=slot, chain=chain["chain"], params=params, airflow_tags=airflow_tags
        )
        if child.info.status != "RUNNING" and child.data.tags.get(STATE_TAG):
            # Killed between the MLflow record and Optuna's: finish the trial from the record.
            state = TrialState[child.data.tags[STATE_TAG]]
            value = child.data.metrics.get(f"val_{plan['metric']}")
            _tell(study, trial_id, state, value if state == TrialState.COMPLETE else None)
            records.append(
                {"slot": slot, "state": state.name, "value": value, "params": params, "reused": True}
            )
            continue
        pruner = tuning.ChainPruner(history, enabled=prunable)
        trial_params = {**hyperparameters, **params, "n_jobs": 1}  # trials run side by side: one thread each
        metrics: dict[str, float] = {}
        error = ""
        try:
            metrics = tuning.evaluate(prepared, trial_params, monitor=pruner)
            state = TrialState.COMPLETE
        except optuna.TrialPruned as pruned:
            state, error = TrialState.PRUNED, str(pruned)
        except Exception as err:  # a combination the library refuses: the trial fails, the chain goes on
            log.warning("Trial %d failed: %s: %s", slot, type(err).__name__, err)
            state, error = TrialState.FAIL, f"{type(err).__name__}: {err}"[:500]
        value = metrics.get(plan["metric"])
        _finish_child(
            client, child.info.run_id, state=state, metrics=metrics, rounds=pruner.reported(), error=error
        )
        for step, round_value in pruner.reported().items():
            study._storage.set_trial_intermediate_value(trial_id, step, round_value)
        _tell(study, trial_id, state, value)
        log.info(
            "Trial %d (chain %d): %s %s = %s %s",
            slot,
            chain["chain"],
            state.name,
            plan["metric"],
            value,
            params,
        )
        records.append({"slot": slot, "state": state.name, "value": value, "params": params, "reused": False})
    return {"chain": chain["chain"], "host": socket.gethostname(), "trials": records}


def _record(trial: Any, *, reused: bool) -> dict[str, Any]:
    from cmms_pm.tuning import slot_of

    return {"slot": slot_of(trial), "state": trial.state.name, "value": trial.value, "params": trial.params,
            "reused": reused}  # fmt: skip


def _open_trial(
    study: Any, mine: list[Any], *, slot: int, chain: int, params: dict, space: dict, key: str
) -> int:
    """The slot's RUNNING trial (left by a killed attempt, same parameters) or a new one."""
    from optuna.trial import TrialState, create_trial

    from cmms_pm import tuning

    storage = study._storage
    for trial in mine:
        if trial.state == TrialState.RUNNING and trial.params == params:
            storage.set_trial_user_attr(trial._trial_id, tuning.HOST_ATTR, socket.gethostname())
            return trial._trial_id
        if (
            trial.state == TrialState.RUNNING
        ):  # another attempt's parameters: cannot happen unless the code changed
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    template = create_trial(
        state=TrialState.RUNNING,
        params=params,
        distributions={name: space[name] for name in params},
        user_attrs={tuning.SLOT_ATTR: slot, tuning.CHAIN_ATTR: chain, tuning.KEY_ATTR: key,
                    tuning.HOST_ATTR: socket.gethostname()},
    )  # fmt: skip
    return storage.create_new_trial(study._study_id, template_trial=template)


def _tell(study: Any, trial_id: int, state: Any, value: float | None) -> None:
    from optuna.trial import TrialState

    values = [float(value)] if state == TrialState.COMPLETE and value is not None else None
    if state == TrialState.COMPLETE and values is None:
        state = TrialState.FAIL
    study._storage.set_trial_state_values(trial_id, state, values)


def _create_child(
    client: MlflowClient, plan: Mapping[str, Any], *, slot: int, chain: int, params: dict,
    airflow_tags: Mapping[str, str],
) -> Run:  # fmt: skip
    from mlflow.entities import Param

    run = client.create_run(
        plan["experiment_id"],
        run_name=f"trial-{slot:03d}",
        tags={
            **airflow_tags,
            PARENT_TAG: plan["parent_run_id"],
            STUDY_TAG: plan["study"],
            SLOT_TAG: str(slot),
            CHAIN_TAG: str(chain),
            HOST_TAG: socket.gethostname(),
        },
    )
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
    return run


def _finish_child(
    client: MlflowClient,
    run_id: str,
    *,
    state: Any,
    metrics: Mapping[str, float],
    rounds: Mapping[int, float],
    error: str,
) -> None:
    from mlflow.entities import Metric, RunTag

    entries = [Metric(f"val_{k}", float(v), 0, 0) for k, v in metrics.items()]
    entries += [Metric("val_pr_auc_by_round", float(v), 0, int(step)) for step, v in rounds.items()]
    tags = [RunTag(STATE_TAG, state.name)]
    if error:
        tags.append(RunTag("mlflow.note.content", error))
    for start in range(0, len(entries), 900):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=entries[start : start + 900], tags=tags if start == 0 else [])
    if not entries:
        client.log_batch(run_id, tags=tags)
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state.name, "FAILED")
    client.set_terminated(run_id, status=status)


# --- train_model: the best trial trains the model ---------------------------------------------------


def best_hyperparameters(plan: Mapping[str, Any], hyperparameters: Mapping[str, Any]) -> tuple[dict, dict]:
    """(the tuned model's hyperparameters, the study summary): the spec's and the run's values with
    the best trial's on top (``TuningError`` when no trial completed)."""
    from cmms_pm import tuning
    from cmms_pm.estimators import validate_hyperparameters

    study, _ = load_study(plan["study"])
    trials = study.get_trials(deepcopy=False)
    summary = tuning.summary(trials, study=plan["study"], metric=plan["metric"], seed=plan["seed"])
    summary["storage"] = plan["storage"]
    chosen = validate_hyperparameters(plan["estimator"], {**hyperparameters, **summary["best_params"]})
    return chosen, {**summary, "_trials": trials}


def log_summary(client: MlflowClient, run_id: str, summary: Mapping[str, Any]) -> None:
    """The study in the training run: params/metrics/tags to search on, and artifacts to read."""
    from mlflow.entities import Metric, Param, RunTag

    from cmms_pm import tuning
    from cmms_pm.csv_export import write_csv

    trials = summary["_trials"]
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    client.log_batch(
        run_id,
        metrics=[Metric(f"tuning_best_{summary['metric']}", float(summary["best_value"]), 0, 0)],
        params=[
            Param("tuning_trials", str(summary["trials"])),
            Param("tuning_metric", summary["metric"]),
            Param("tuning_best_slot", str(summary["best_slot"])),
        ],
        tags=[
            RunTag(STUDY_TAG, summary["study"]),
            RunTag("tuning_states", json.dumps(summary["states"], sort_keys=True)),
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "summary.json").write_text(json.dumps(public, indent=2, sort_keys=True, default=str))
        write_csv(tuning.trials_frame(trials), out / "trials.csv")
        tuning.plot_history(trials, summary["metric"], out / "optimization_history.png")
        tuning.plot_importances(summary["importances"], out / "param_importances.png")
        client.log_artifacts(run_id, str(out), artifact_path=SUMMARY_DIR)
