"""Hyperparameter tuning with Optuna: a spec's search space, trials in deterministic chains.

A run's ``n_trials`` are numbered slots ``0 … n-1``, cut into chains of ``trials_per_task``
consecutive slots; each chain is one Airflow task, and chains run side by side on the executor's
workers. A chain asks TPE for the parameters of its next slot given **its own earlier trials only**,
with a sampler seeded by ``(seed, slot)``, and prunes a trial against the same trials. So a slot's
parameters depend on the seed, the spec, the data and the chain's earlier results — never on which
worker ran which chain, in which order, or how often a task was retried. Every trial is written to
one Optuna study (shared storage), and the best trial is the one with the highest value, ties going
to the lowest slot (not Optuna's trial number, which is the order of arrival). Hence the guarantee:
the same batch, spec and ``n_trials`` give the same trials and the same best parameters on one
worker or twenty, on retry, on a cleared run and on a backfill — unless ``timeout_minutes`` cut the
search short (then how far it got depends on the machine; the run says so).

The price: a chain learns nothing from the chains that run beside it (``k`` independent TPE searches
of ``n/k`` trials instead of one of ``n``). ``trials_per_task`` trades adaptivity for parallelism.

Pure domain code: no Airflow or MLflow here; Optuna is imported when used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cmms_pm.exceptions import TuningError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

    from cmms_pm.spec import FeatureSpec

#: Trial user attributes that key a trial to its place in the run (never Optuna's trial number).
SLOT_ATTR = "slot"
CHAIN_ATTR = "chain"
KEY_ATTR = "key"
HOST_ATTR = "host"
#: Pruning: rounds before a trial may be pruned, rounds between checks, finished trials of the chain
#: needed before any pruning (MedianPruner).
PRUNE_WARMUP_ROUNDS = 20
PRUNE_INTERVAL_ROUNDS = 10
PRUNE_STARTUP_TRIALS = 2


def distributions(kind: str, space: Mapping[str, Mapping[str, Any]]) -> dict[str, BaseDistribution]:
    """Optuna distributions of a validated search space (integer hyperparameters get integer ranges)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from cmms_pm.estimators import estimator

    schemas = estimator(kind).hyperparameters
    found: dict[str, BaseDistribution] = {}
    for name, entry in sorted(space.items()):
        if "choices" in entry:
            found[name] = CategoricalDistribution(tuple(entry["choices"]))
        elif schemas[name]["type"] == "integer":
            found[name] = IntDistribution(
                int(entry["low"]),
                int(entry["high"]),
                log=bool(entry.get("log")),
                step=int(entry.get("step", 1)),
            )
        else:
            found[name] = FloatDistribution(
                float(entry["low"]), float(entry["high"]), log=bool(entry.get("log")), step=entry.get("step")
            )
    return found


def chains(n_trials: int, per_task: int) -> list[list[int]]:
    """The slots of each chain: consecutive runs of ``per_task`` slots (the last may be shorter)."""
    return [list(range(start, min(start + per_task, n_trials))) for start in range(0, n_trials, per_task)]


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short, stable digest of everything that decides a study's trials (JSON, sorted keys)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def trial_seed(seed: int, slot: int) -> int:
    """The sampler seed of one slot: distinct per slot, the same on every worker and retry."""
    digest = hashlib.sha256(f"{seed}:{slot}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _chain_study(history: Sequence[FrozenTrial], sampler: Any = None, pruner: Any = None) -> Any:
    """An in-memory study holding ``history`` (finished trials, in slot order): what one slot sees."""
    import optuna

    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for trial in sorted(history, key=slot_of):
        study.add_trial(trial)
    return study


def suggest(
    space: Mapping[str, BaseDistribution],
    history: Sequence[FrozenTrial],
    *,
    seed: int,
    slot: int,
    startup_trials: int,
) -> dict[str, Any]:
    """The parameters of ``slot``: TPE (seeded by seed and slot) over the chain's finished trials."""
    import optuna

    with _quiet_optuna():
        sampler = optuna.samplers.TPESampler(
            seed=trial_seed(seed, slot), n_startup_trials=startup_trials, multivariate=True
        )
        trial = _chain_study(history, sampler=sampler).ask(dict(space))
        return dict(trial.params)


class ChainPruner:
    """Decides, round by round, whether a trial is hopeless next to its chain's earlier trials
    (Optuna's MedianPruner over the validation PR-AUC of each boosting round)."""

    def __init__(self, history: Sequence[FrozenTrial], *, enabled: bool = True) -> None:
        import optuna

        self.enabled = enabled
        self.values: dict[int, float] = {}
        with _quiet_optuna():
            pruner = optuna.pruners.MedianPruner(
                n_startup_trials=PRUNE_STARTUP_TRIALS,
                n_warmup_steps=PRUNE_WARMUP_ROUNDS,
                interval_steps=PRUNE_INTERVAL_ROUNDS,
            )
            self._trial = _chain_study(history, pruner=pruner).ask()

    def __call__(self, iteration: int, value: float) -> None:
        """The fit's monitor: records the round's value; raises ``optuna.TrialPruned`` to stop it."""
        import optuna

        if not math.isfinite(value):
            return
        self.values[iteration] = value
        if not self.enabled:
            return
        self._trial.report(value, iteration)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {iteration} (validation PR-AUC {value:.4f})")

    def reported(self) -> dict[int, float]:
        """The values to store with the trial: every ``PRUNE_INTERVAL_ROUNDS``-th round and the last."""
        if not self.values:
            return {}
        last = max(self.values)
        return {i: v for i, v in self.values.items() if i % PRUNE_INTERVAL_ROUNDS == 0 or i == last}


@dataclass
class Prepared:
    """A chain's data, prepared once for all its trials: the fitted preprocessor (it depends on no
    hyperparameter), the classifier's train and validation inputs."""

    kind: str
    model: Any
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def prepare(
    train: pd.DataFrame, validation: pd.DataFrame, *, features: FeatureSpec, target: str, kind: str,
    hyperparameters: Mapping[str, Any],
) -> Prepared:  # fmt: skip
    from cmms_pm.training import fit_preprocessor, transform_in_chunks

    model, x, y = fit_preprocessor(
        train, features=features, target=target, estimator=kind, hyperparameters=hyperparameters
    )
    x_val = transform_in_chunks(model.named_steps["preprocess"], validation, dtype=str(x.dtype))
    numeric = (*features.numeric, *features.integer)
    return Prepared(
        kind, model, features.categorical, numeric, x, y, x_val, validation[target].to_numpy(copy=True)
    )


def evaluate(
    prepared: Prepared, hyperparameters: Mapping[str, Any], *, monitor: Callable[[int, float], None] | None
) -> dict[str, float]:
    """Fit one trial's classifier (early stopping and pruning on the validation split) and return
    its validation metrics; the preprocessor is the chain's, already fitted."""
    from sklearn.pipeline import Pipeline

    from cmms_pm.estimators import build_pipeline
    from cmms_pm.training import classification_metrics, fit_classifier

    fresh = build_pipeline(
        prepared.kind, hyperparameters, categorical=prepared.categorical, numeric=prepared.numeric
    )
    model = Pipeline(
        [
            ("preprocess", prepared.model.named_steps["preprocess"]),
            ("classifier", fresh.named_steps["classifier"]),
        ]
    )
    fit_classifier(
        model, prepared.x, prepared.y, validation=(prepared.x_val, prepared.y_val), monitor=monitor
    )
    proba = model.named_steps["classifier"].predict_proba(prepared.x_val)[:, 1]
    return classification_metrics(prepared.y_val, proba)


def slot_of(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(SLOT_ATTR, -1))


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The complete trial with the highest value; ties go to the lowest slot (deterministic)."""
    from optuna.trial import TrialState

    complete = [(t.value, t) for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    return min(complete, key=lambda pair: (-float(pair[0]), slot_of(pair[1])))[1]


def one_per_slot(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trial that counts for each slot (a finished one before an abandoned one), slot order."""
    from optuna.trial import TrialState

    rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 1, TrialState.RUNNING: 2}
    chosen: dict[int, FrozenTrial] = {}
    for trial in sorted(trials, key=lambda t: (slot_of(t), rank.get(t.state, 3), t.number)):
        chosen.setdefault(slot_of(trial), trial)
    return [chosen[slot] for slot in sorted(chosen) if slot >= 0]


def require_best(trials: Sequence[FrozenTrial], study: str) -> FrozenTrial:
    best = best_trial(trials)
    if best is None:
        states = pd.Series([t.state.name for t in trials], dtype=object).value_counts().to_dict()
        raise TuningError(f"study {study!r}: no trial completed ({states or 'no trials'}); nothing to train")
    return best


def trials_frame(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """One row per slot: chain, state, value, parameters, host, duration (for the run's artifacts)."""
    rows = []
    for trial in one_per_slot(trials):
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append(
            {
                "slot": slot_of(trial),
                "chain": trial.user_attrs.get(CHAIN_ATTR),
                "state": trial.state.name,
                "value": trial.value,
                **{f"params_{k}": v for k, v in sorted(trial.params.items())},
                "host": trial.user_attrs.get(HOST_ATTR),
                "seconds": duration,
            }
        )
    return pd.DataFrame(rows)


def importances(trials: Sequence[FrozenTrial], *, seed: int) -> dict[str, float]:
    """fANOVA importance of each searched parameter over the complete trials (seeded; ``{}`` when
    fewer than two trials completed or no parameter varied)."""
    import optuna
    from optuna.trial import TrialState

    complete = [t for t in one_per_slot(trials) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    with _quiet_optuna():
        study = _chain_study(complete)
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
            )
        except (RuntimeError, ValueError, ZeroDivisionError):
            return {}
    return {name: float(value) for name, value in found.items()}


def summary(trials: Sequence[FrozenTrial], *, study: str, metric: str, seed: int) -> dict[str, Any]:
    """What a training run records of its study: best slot, value and params, counts by state,
    parameter importances."""
    counted = one_per_slot(trials)
    best = require_best(counted, study)
    assert best.value is not None  # require_best returns a complete trial, which has a value
    states = pd.Series([t.state.name for t in counted], dtype=object).value_counts().to_dict()
    return {
        "study": study,
        "metric": metric,
        "best_slot": slot_of(best),
        "best_value": float(best.value),
        "best_params": dict(best.params),
        "trials": len(counted),
        "states": {str(k): int(v) for k, v in states.items()},
        "importances": importances(counted, seed=seed),
    }


def plot_history(trials: Sequence[FrozenTrial], metric: str, path: str | os.PathLike[str]) -> str:
    """Optimisation history: each trial's validation value by slot, and the best so far."""
    from cmms_pm.plots import _figure, _save

    frame = trials_frame(trials)
    figure = _figure(7.0, 4.5)
    axes = figure.add_subplot()
    done = frame[frame["state"] == "COMPLETE"]
    pruned = frame[frame["state"] == "PRUNED"]
    axes.scatter(done["slot"], done["value"], color="#3b75af", label="trial", zorder=3)
    if len(pruned):
        axes.scatter(pruned["slot"], [done["value"].min() if len(done) else 0] * len(pruned),
                     marker="x", color="#999999", label="pruned", zorder=2)  # fmt: skip
    if len(done):
        best = done.sort_values("slot")["value"].cummax()
        axes.step(done.sort_values("slot")["slot"], best, where="post", color="#d62728", label="best so far")
    axes.set_xlabel("trial (slot)")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title("Optimisation history")
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_importances(found: Mapping[str, float], path: str | os.PathLike[str]) -> str:
    """Horizontal bars of the parameter importances (an empty chart says why when there are none)."""
    from cmms_pm.plots import _figure, _save

    figure = _figure(6.0, max(2.5, 0.4 * len(found) + 1.2))
    axes = figure.add_subplot()
    names = sorted(found, key=lambda n: found[n])
    axes.barh(names, [found[n] for n in names], color="#3b75af")
    if not found:
        axes.text(0.5, 0.5, "fewer than two trials completed", ha="center", va="center")
    axes.set_xlabel("importance (fANOVA)")
    axes.set_title("Hyperparameter importances")
    return _save(figure, path)


def run_in_memory(
    prepared: Prepared,
    space: Mapping[str, Mapping[str, Any]],
    *,
    hyperparameters: Mapping[str, Any],
    n_trials: int,
    trials_per_task: int,
    startup_trials: int,
    seed: int,
    metric: str = "pr_auc",
    pruning: bool = True,
) -> list[FrozenTrial]:
    """The whole search in this process, chain after chain (a notebook's or a benchmark's view):
    the same slots, suggestions, pruning and values as the Airflow tasks give for the same inputs."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from cmms_pm.estimators import estimator

    distributions_ = distributions(prepared.kind, space)
    prunable = pruning and estimator(prepared.kind).fit is not None
    trials: list[FrozenTrial] = []
    for index, slots in enumerate(chains(n_trials, trials_per_task)):
        for slot in slots:
            history = [t for t in trials if t.user_attrs[CHAIN_ATTR] == index]
            params = suggest(distributions_, history, seed=seed, slot=slot, startup_trials=startup_trials)
            pruner = ChainPruner(history, enabled=prunable)
            started = pd.Timestamp.now(tz="UTC").to_pydatetime()
            try:
                value: float | None = evaluate(
                    prepared, {**hyperparameters, **params, "n_jobs": 1}, monitor=pruner
                )[metric]
                state = TrialState.COMPLETE
            except optuna.TrialPruned:
                value, state = None, TrialState.PRUNED
            trial = create_trial(
                state=state,
                value=value,
                params=params,
                distributions={k: distributions_[k] for k in params},
                user_attrs={SLOT_ATTR: slot, CHAIN_ATTR: index},
                intermediate_values=pruner.reported(),
            )
            trial.datetime_start = started
            trial.datetime_complete = pd.Timestamp.now(tz="UTC").to_pydatetime()
            trials.append(trial)
    return trials
