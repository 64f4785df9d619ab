"""P2 (a): bare scikit-learn in one process — the same data, model, fit and scores as the DAG, nothing else.

Generates the batch of a data interval exactly as ``extract_data`` does (same seed, same split),
fits the project's pipeline on the train split and scores validation and holdout. Prints one JSON
line with its phase timings. Used by bench/pipeline.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

started = time.perf_counter()

from cmms_pm.data import generate_telemetry, interval_seed, split_frame  # noqa: E402
from cmms_pm.spec import PROJECT_DIR, load_spec  # noqa: E402
from cmms_pm.training import fit_model, score_model  # noqa: E402

SPEC = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--interval-start", required=True)
    parser.add_argument("--interval-end", required=True)
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--estimator", default="random_forest")
    args = parser.parse_args()
    imported = time.perf_counter()
    seed = interval_seed(args.interval_start, args.interval_end)
    splits = split_frame(generate_telemetry(args.rows, seed), seed)
    generated = time.perf_counter()
    hyperparameters = (
        {"n_estimators": args.n_estimators, "max_depth": args.max_depth}
        if args.estimator == "random_forest"
        else {}
    )
    model = fit_model(
        splits["train"],
        features=SPEC.features,
        target=SPEC.target,
        estimator=args.estimator,
        hyperparameters=hyperparameters,
    )
    fitted = time.perf_counter()
    validation = score_model(model, splits["validation"], target=SPEC.target)
    holdout = score_model(model, splits["holdout"], target=SPEC.target)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": imported - started,
                "data_s": generated - imported,
                "fit_s": fitted - generated,
                "score_s": done - fitted,
                "validation_f1": validation["f1"],
                "holdout_f1": holdout["f1"],
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
