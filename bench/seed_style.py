"""P2 (b): a plain script in the seed's style — train, log to MLflow, register, transition stage.

No Airflow. The same data and model as the DAG (see bare_sklearn.py), logged with MLflow's fluent
API the way a notebook or cron script would: params, validation metrics and the model (skops, the
same trusted types), then ``register_model`` and a transition to Production. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings

started = time.perf_counter()

import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from cmms_pm.data import generate_telemetry, interval_seed, split_frame  # noqa: E402
from cmms_pm.estimators import trusted_types  # noqa: E402
from cmms_pm.schema import FEATURES  # noqa: E402
from cmms_pm.spec import PROJECT_DIR, load_spec  # noqa: E402
from cmms_pm.training import fit_model, score_model  # noqa: E402

SPEC = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--interval-start", required=True)
    parser.add_argument("--interval-end", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--artifact-location", required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--estimator", default="random_forest")
    args = parser.parse_args()
    imported = time.perf_counter()

    mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("bench_seed_style")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("bench_seed_style", artifact_location=args.artifact_location)
    )
    seed = interval_seed(args.interval_start, args.interval_end)
    splits = split_frame(generate_telemetry(args.rows, seed), seed)
    params = (
        {"n_estimators": args.n_estimators, "max_depth": args.max_depth}
        if args.estimator == "random_forest"
        else {}
    )
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(params)
        model = fit_model(
            splits["train"],
            features=SPEC.features,
            target=SPEC.target,
            estimator=args.estimator,
            hyperparameters=params,
        )
        metrics = score_model(model, splits["validation"], target=SPEC.target)
        mlflow.log_metrics({f"val_{k}": v for k, v in metrics.items()})
        mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=trusted_types(args.estimator),
            input_example=splits["train"][FEATURES].head(5),
        )
    holdout = score_model(model, splits["holdout"], target=SPEC.target)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", args.model_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(
            args.model_name, version.version, "Production", archive_existing_versions=True
        )
    print(
        json.dumps(
            {
                "import_s": imported - started,
                "total_in_process_s": time.perf_counter() - imported,
                "validation_f1": metrics["f1"],
                "holdout_f1": holdout["f1"],
                "version": version.version,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
