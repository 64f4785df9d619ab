"""One MLflow run per Airflow training task: params, metrics, plots, dataset input and model.

The run is keyed by the Airflow task that made it (tags ``airflow.dag_id``/``airflow.run_id``/
``airflow.task_id``): a retry finds the finished run and returns it instead of training again,
and closes a run a killed attempt left ``RUNNING``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow.hooks.mlflow_hook import PROJECT_DIR
from cmms_mlflow.registry.model_registry import DECISION_THRESHOLD_TAG
from cmms_mlflow.tracking.card_logging import log_card, training_card_facts

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from cmms_mlflow.records import DataReport, TrainingResult
    from cmms_pm.batch import Manifest
    from cmms_pm.calibration import Decided
    from cmms_pm.contract import DataContract
    from cmms_pm.spec import ModelSpec

log = logging.getLogger(__name__)

TAG_DAG_ID = "airflow.dag_id"
TAG_RUN_ID = "airflow.run_id"
TAG_TASK_ID = "airflow.task_id"
MODEL_ARTIFACT = "model"

#: What the logged model needs to load and score: pinned to the versions that trained it. Passed
#: explicitly because MLflow's inference of the list starts a Python subprocess that imports
#: mlflow and reloads the model (~13 s per training task here), and it picked up unrelated
#: packages (pytest, rich, psutil) from the worker's imports.
MODEL_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")


def model_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """``MODEL_REQUIREMENTS`` pinned to the installed versions (unpinned if one is missing), plus
    the distributions that provide the ``extra`` import names (an estimator's library, e.g.
    ``xgboost``, installed here as the ``xgboost-cpu`` distribution)."""
    from importlib.metadata import packages_distributions

    distributions = packages_distributions() if extra else {}
    packages = [*MODEL_REQUIREMENTS]
    for name in extra:
        packages.extend(d for d in distributions.get(name, [name]) if d not in packages)
    pinned = []
    for package in packages:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pinned.append(package)
    return pinned


def airflow_tags(context: Any) -> dict[str, str]:
    """Tags that tie an MLflow object to the Airflow task instance that wrote it."""
    ti = context["ti"]
    dag_run = context["dag_run"]
    log_url = getattr(ti, "log_url", "") or ""
    run_type = getattr(dag_run, "run_type", "")  # an enum: its value is "backfill", "scheduled", ...
    return {
        TAG_DAG_ID: ti.dag_id,
        TAG_RUN_ID: ti.run_id,
        TAG_TASK_ID: ti.task_id,
        "airflow.try_number": str(ti.try_number),
        "airflow.run_type": str(getattr(run_type, "value", run_type) or ""),
        "airflow.run_url": log_url.split("/tasks/")[0] if log_url else "",
        **retrain_tags(context),
    }


#: Run tag (copied to the model version) of a run triggered by a retraining request.
RETRAIN_REASON_TAG = "retrain_reason"


def retrain_tags(context: Any) -> dict[str, str]:
    """``retrain_reason``: why the run was asked for, when a retraining request (the spec's retrain
    Asset, ``cmms_mlflow.integrations.assets.retrain_asset``) triggered it; empty otherwise."""
    reasons = [
        str((event.extra or {}).get("reason") or "")
        for events in (context.get("triggering_asset_events") or {}).values()
        for event in events
        if str(getattr(getattr(event, "asset", None), "uri", "")).startswith("cmms://")
        and str(event.asset.uri).endswith("/retrain")
    ]
    reasons = [r for r in reasons if r]
    return {RETRAIN_REASON_TAG: reasons[-1][:2000]} if reasons else {}


def git_commit() -> str | None:
    """Commit of the project checkout, if it is a git checkout (best effort, 2 s)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def find_task_runs(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[Run]:
    """Runs in ``experiment_id`` written by the same Airflow task of the same DAG run, oldest first."""
    filter_string = " and ".join(
        f"tags.`{key}` = '{tags[key]}'" for key in (TAG_DAG_ID, TAG_RUN_ID, TAG_TASK_ID)
    )
    runs = client.search_runs([experiment_id], filter_string=filter_string, max_results=50)
    return sorted(runs, key=lambda r: r.info.start_time or 0)


def resume_or_close(client: MlflowClient, runs: list[Run]) -> Run | None:
    """Return a finished run of an earlier attempt; mark runs left RUNNING by killed attempts FAILED."""
    finished = None
    for run in runs:
        status = run.info.status
        if status == "FINISHED" and finished is None:
            finished = run
        elif status in ("RUNNING", "SCHEDULED"):
            log.warning("Closing MLflow run %s left %s by an earlier attempt", run.info.run_id, status)
            client.set_terminated(run.info.run_id, status="FAILED")
    return finished


#: Where the data contract learned from the training split lives in the run (and the model's
#: MLmodel ``metadata`` points at it): scoring and the next validate_data read it from the champion.
CONTRACT_ARTIFACT = "data_contract/contract.json"
#: The batch checks of validate_data (contract check, drift table, HTML and PNG report).
CHECKS_ARTIFACT_DIR = "data_checks"


def log_training_run(
    client: MlflowClient,
    *,
    experiment_id: str,
    manifest: Manifest,
    spec: ModelSpec,
    estimator: str,
    hyperparameters: Mapping[str, Any],
    tags: dict[str, str],
    run_name: str,
    checks: DataReport | None = None,
    run_id: str | None = None,
    tuning: Mapping[str, Any] | None = None,
) -> TrainingResult:
    """Train on the manifest's train split, evaluate on validation, log everything; return ids.

    ``run_id``: log into this existing run (a tuning study's training run) instead of a new one.
    ``tuning``: that study's summary (best trial, counts, importances), for the model card.

    Logged: params and validation metrics in one batch; feature importances and curves; the data
    contract of the training split; validate_data's checks (drift report) when given; the model
    (skops with the estimator's trusted types) with a signature of what ``pyfunc.predict`` returns.
    """
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.models import infer_signature

    from cmms_mlflow.tracking.model_loading import (
        MODEL_DIGEST_TAG,
        import_skops,
        model_data_digest,
        quiet_airflow_shims,
    )
    from cmms_pm import plots, training
    from cmms_pm.batch import manifest_features, split_params
    from cmms_pm.contract import derive_contract
    from cmms_pm.csv_export import write_csv
    from cmms_pm.data import read_split, release_freed_memory
    from cmms_pm.estimators import estimator as estimator_kind
    from cmms_pm.estimators import trusted_types

    target = spec.target
    features = manifest_features(spec, manifest)
    train = read_split(manifest["splits"]["train"]["uri"], sha256=manifest["splits"]["train"]["sha256"])
    # The run exists while the model trains, as users expect to see it in the MLflow UI; a killed
    # attempt leaves it RUNNING and the retry closes it (resume_or_close).
    if run_id is None:
        run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    else:  # a run made before training (a tuning study's parent), or a failed attempt's: reopened
        client.update_run(run_id, status="RUNNING", name=run_name)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    try:
        # Everything that needs the training frame comes first, so that it can go before the
        # classifier grows (it is ~0.7x of the batch in memory); the validation split is read
        # once the classifier's input matrix has gone too.
        train_rows = len(train)
        contract = derive_contract(
            train, target=target, feature_kinds={c: features.kind_of(c) for c in features.declared}
        )
        client.log_dict(run_id, contract.to_dict(), CONTRACT_ARTIFACT)
        client.log_inputs(run_id, datasets=[_dataset_input(manifest, train)])
        example = train[list(features.declared)].head(5).copy()  # a copy: a slice would keep train
        model, x, y = training.fit_preprocessor(
            train, features=features, target=target, estimator=estimator, hyperparameters=hyperparameters
        )
        del train
        release_freed_memory()
        validation = None
        split = manifest["splits"]["validation"]
        if estimator_kind(estimator).fit is not None:  # boosting: early stopping reads validation
            validation = read_split(split["uri"], sha256=split["sha256"])
            training.fit_classifier(model, x, y, validation=(validation, validation[target].to_numpy()))
        else:
            training.fit_classifier(model, x, y)
        del x, y
        if validation is None:
            validation = read_split(split["uri"], sha256=split["sha256"])
        # Calibrated on the validation split, threshold from its out-of-fold risks; a split with no
        # failure (or a strategy that must not fall back) fails here, before anything is logged.
        decided = decide(model, validation, spec=spec, manifest=manifest)
        model = decided.model
        threshold = decided.threshold["threshold"]
        proba, y_val = decided.proba_after, decided.y
        metrics = training.classification_metrics(y_val, proba, threshold)
        importances = training.feature_importances(model, validation, target=target)
        explanation = global_explanation(model, validation, seed=int(manifest.get("seed", 0)))
        params = {
            **hyperparameters,
            **split_params(manifest),
            "estimator": estimator,
            "features": len(features.declared),
            "train_rows": train_rows,
            "validation_rows": len(validation),
            **_boosting_rounds(model),
            **decision_params(decided),
        }
        card = training_card_facts(
            spec=spec, manifest=manifest, features=features, estimator=estimator, decided=decided,
            contract=contract, validation=validation, checks=checks, run_id=run_id,
        )  # fmt: skip
        del validation
        client.log_batch(
            run_id,
            metrics=[
                *(Metric(f"val_{k}", float(v), 0, 0) for k, v in metrics.items()),
                *(Metric(k, float(v), 0, 0) for k, v in decision_metrics(decided).items()),
            ],
            params=[Param(k, str(v)) for k, v in sorted(params.items())],
            tags=[
                RunTag("mlflow.note.content", _run_note(manifest, estimator, metrics, threshold)),
                RunTag(DECISION_THRESHOLD_TAG, repr(threshold)),
            ],
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            write_csv(importances, out / "feature_importances.csv")
            plots.plot_feature_importances(importances, out / "feature_importances.png")
            write_csv(explanation, out / "global_explanation.csv")
            plots.plot_global_explanation(explanation, out / "global_explanation.png")
            plots.plot_confusion_matrix(y_val, (proba >= threshold).astype(int), out / "confusion_matrix.png")
            plots.plot_roc_curve(y_val, proba, out / "roc_curve.png")
            plots.plot_pr_curve(y_val, proba, out / "pr_curve.png")
            plots.plot_reliability(y_val, decided.proba_before, proba, out / "reliability_diagram.png")
            (out / "decision.json").write_text(
                json.dumps({"threshold": decided.threshold, "calibration": decided.calibration}, indent=2)
            )
            client.log_artifacts(run_id, str(out), artifact_path="evaluation")
        if tuning is not None:
            card["tuning"] = {k: v for k, v in tuning.items() if not k.startswith("_")}
        log_card(client, run_id, card)
        if checks is not None:
            log_checks(
                client, run_id, checks, title=f"{spec.registered_model}: batch {manifest['data_version']}"
            )
        import_skops()  # mlflow.sklearn saves with skops.io: import it the fast way, not by its scan
        with mlflow.start_run(run_id=run_id), quiet_airflow_shims():
            info = mlflow.sklearn.log_model(
                model,
                name=MODEL_ARTIFACT,
                serialization_format="skops",
                skops_trusted_types=trusted_types(estimator),
                # pyfunc.predict returns the classifier's predict(): 0/1 per row, not a probability.
                signature=infer_signature(example, model.predict(example)),
                input_example=example,
                pip_requirements=model_requirements(estimator_kind(estimator).requirements),
                metadata={
                    "spec": spec.name,
                    "estimator": estimator,
                    "target": target,
                    "positive_label": str(spec.positive_label),
                    "predict_output": "1 = failure (the spec's positive label), 0 otherwise",
                    "data_contract": f"runs:/{run_id}/{CONTRACT_ARTIFACT}",
                    "decision_threshold": threshold,
                    "calibration": decided.calibration["method"],
                    "risk_output": "predict_proba[:, 1] is the (calibrated) probability of failure; an "
                    "alert is a probability >= decision_threshold (predict() cuts at 0.5)",
                },
            )
        # What the loader compares before it parses the artifact (model_loading.MODEL_DIGEST_TAG).
        client.set_tag(run_id, MODEL_DIGEST_TAG, model_data_digest(client, info.model_id))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_uri": info.model_uri,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "threshold": threshold,
    }


def log_checks(client: MlflowClient, run_id: str, checks: DataReport, *, title: str) -> None:
    """validate_data's report as artifacts people open: the contract check, the drift table, HTML, PNG."""
    from cmms_pm.csv_export import write_csv
    from cmms_pm.drift import DriftReport, drift_table, plot_drift, render_drift_html

    client.log_dict(run_id, checks.get("contract_check") or {}, f"{CHECKS_ARTIFACT_DIR}/contract_check.json")
    if checks.get("leakage"):  # the leakage guard's findings (cmms_pm.leakage.guard_record)
        client.log_dict(run_id, checks["leakage"], f"{CHECKS_ARTIFACT_DIR}/leakage.json")
    drift = checks.get("drift")
    if not drift:
        return
    report = DriftReport.from_dict(drift)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_csv(drift_table(report), out / "drift.csv")
        (out / "drift.html").write_text(render_drift_html(report, title=title), encoding="utf-8")
        plot_drift(report, out / "drift.png")
        (out / "drift.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        client.log_artifacts(run_id, str(out), artifact_path=CHECKS_ARTIFACT_DIR)


def load_contract(client: MlflowClient, run_id: str) -> DataContract | None:
    """The data contract a training run logged, or None for a run from before contracts existed."""
    from mlflow.exceptions import MlflowException

    from cmms_pm.contract import DataContract

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, CONTRACT_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return DataContract.from_dict(json.loads(Path(path).read_text()))


def run_result(client: MlflowClient, run: Run) -> TrainingResult:
    """The same result :func:`log_training_run` returns, read back from a finished run."""
    logged = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    if not logged:
        raise LookupError(f"run {run.info.run_id!r} finished without a logged model")
    # A run reopened after a failed attempt (a tuning study's) may hold that attempt's model too.
    ready = [m for m in logged if str(getattr(m, "status", "")).endswith("READY")] or logged
    newest = max(ready, key=lambda m: m.creation_timestamp or 0)
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "model_uri": f"models:/{newest.model_id}",
        "metrics": {k[len("val_") :]: v for k, v in run.data.metrics.items() if k.startswith("val_")},
        "threshold": run_threshold(run),
    }


def _dataset_input(manifest: Manifest, train: Any) -> Any:
    """The training data as a run input (context ``training``), as ``mlflow.log_input`` logs it.

    Through the client, because ``mlflow.log_input`` needs an active run, whose end would mark
    the run FINISHED before its model exists.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    config = _dataset(manifest, train).to_dict()
    fields = ("name", "digest", "source_type", "source", "schema", "profile")
    return DatasetInput(
        dataset=Dataset(**{field: config.get(field) for field in fields}),
        tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value="training")],
    )


def _dataset(manifest: Manifest, train: Any) -> Any:
    """The training data as an MLflow dataset, named by data version and keyed by content digest."""
    import mlflow.data

    dataset = mlflow.data.from_pandas(
        train,
        source=manifest["splits"]["train"]["uri"],
        targets=manifest["target"],
        name=f"{manifest.get('spec', 'telemetry')}-{manifest['data_version']}",
        digest=manifest["digest"][:32],
    )
    # ``schema`` is a cached_property: filled here, MLflow does not infer it itself.
    dataset.schema = dataset_schema(train)
    return dataset


#: Rows a column's MLflow type is read from when its dtype alone decides it (every non-object dtype).
SCHEMA_SAMPLE_ROWS = 1000


def dataset_schema(frame: Any) -> Any:
    """The schema MLflow infers for a pandas dataset, without its Python loop over every value.

    ``PandasDataset.schema`` (``mlflow.types.utils._infer_schema``) tests each value of each column
    for None/NaN in Python to decide ``required``: ~20 s of train_model at 1M rows, linear in rows.
    Same result here: ``required`` from a vectorised ``isna``; the type from a sample of the
    column when its dtype decides the type (NumPy numbers, pandas strings), from every value of
    an ``object`` column (whose values decide it) or of a column whose sample is all missing.
    """
    from mlflow.types.schema import ColSpec, Schema
    from mlflow.types.utils import _infer_pandas_column

    columns = []
    for name, column in frame.items():
        sample = column.head(SCHEMA_SAMPLE_ROWS)
        if column.dtype == object or sample.isna().all():
            sample = column
        columns.append(
            ColSpec(type=_infer_pandas_column(sample), name=name, required=not bool(column.isna().any()))
        )
    return Schema(columns)


def _boosting_rounds(model: Any) -> dict[str, int]:
    """``{"best_iteration": n}`` for a booster that stopped early on the validation split."""
    from cmms_pm.training import base_classifier

    classifier = base_classifier(model)  # under the calibration wrapper
    for attribute in ("best_iteration", "best_iteration_"):  # XGBoost, LightGBM
        try:
            value = getattr(classifier, attribute)
        except (AttributeError, ValueError):  # XGBoost raises when it did not stop early
            continue
        if isinstance(value, int) and value > 0:
            return {"best_iteration": value}
    return {}


def _run_note(manifest: Manifest, estimator: str, metrics: dict[str, float], threshold: float = 0.5) -> str:
    return (
        f"{estimator} trained on {manifest['splits']['train']['rows']} rows of "
        f"{manifest['data_version']} (digest {manifest['digest'][:12]}); validation F1 "
        f"{metrics['f1']:.4f} at threshold {threshold:.4f}, ROC-AUC {metrics['roc_auc']:.4f}."
    )


# --- decision threshold, calibration and explanation of a training run (issue 19) ----------------

#: Validation rows the global explanation (mean |SHAP| per feature) is computed on: SHAP on a
#: 100-tree forest costs ~5 ms a row, and the ranking is stable well below this.
GLOBAL_EXPLANATION_ROWS = 500


def decide(model: Any, validation: Any, *, spec: ModelSpec, manifest: Manifest) -> Decided:
    """``cmms_pm.calibration.calibrate_and_choose`` with the spec's settings and the batch's time and
    entity columns (a time-split batch's ``manifest["split"]``), seeded by the batch."""
    from cmms_pm.calibration import calibrate_and_choose
    from cmms_pm.thresholds import DecisionPolicy

    split = dict(manifest.get("split") or {})
    return calibrate_and_choose(
        model,
        validation,
        target=spec.target,
        policy=DecisionPolicy.from_spec(spec.decision),
        method=spec.calibration["method"],
        seed=int(manifest.get("seed", 0)),
        time_column=split.get("time_column"),
        # A time-series batch has several snapshots of an asset a day: its alerts count once.
        entity_column=split.get("entity_column") or (spec.timeseries.entity if spec.timeseries else None),
    )


def decision_params(decided: Decided) -> dict[str, Any]:
    """Run params that say how the threshold and the calibration were chosen."""
    return {
        "decision_strategy": decided.threshold["strategy"],
        "decision_chosen_by": decided.threshold["chosen_by"],
        "calibration_method": decided.calibration["method"],
    }


def decision_metrics(decided: Decided) -> dict[str, float]:
    """Run metrics of the threshold and the calibration (validation rows, out of fold)."""
    return {
        "decision_threshold": decided.threshold["threshold"],
        "val_expected_cost": decided.threshold["expected_cost"],
        "val_brier_before_calibration": decided.calibration["brier_before"],
        "val_brier_after_calibration": decided.calibration["brier_after"],
    }


def global_explanation(model: Any, validation: Any, *, seed: int) -> Any:
    """Mean |contribution| per feature on a sample of the validation split (``cmms_pm.explain``)."""
    from cmms_pm.explain import global_importance

    sample = validation.sample(n=min(len(validation), GLOBAL_EXPLANATION_ROWS), random_state=seed % 2**32)
    return global_importance(model, sample)


def run_threshold(run: Run) -> float:
    """The threshold a finished training run chose (0.5 for a run from before thresholds)."""
    from cmms_pm.thresholds import DEFAULT_THRESHOLD, valid_threshold

    return valid_threshold(run.data.tags.get(DECISION_THRESHOLD_TAG)) or DEFAULT_THRESHOLD
