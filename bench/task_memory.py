"""Peak RSS of each data-handling step of the training pipeline, one fresh process per step.

The steps call the same functions the tasks call, without Airflow or MLflow around them, so a
size the whole DAG cannot reach in a bench slot (10M rows on 2 cores) still gets its memory
figure; ``bench/pipeline.py`` (P3) gives the same per task under a real scheduler.

  extract        prepare_batch: generate, label, split, write the Parquet batch (extract_data)
  validate_data  validate_batch, then the whole batch against a contract: check_batch + drift_report
                 (validate_data with a champion)
  contract       read the train split, derive_contract (train_model's data work besides the fit)
  fit            read the train split, fit the spec's random forest (--n-estimators; memory barely
                 depends on it: two trees grow at once), score the validation split (train_model)
  train_model    train_model's own function (``log_training_run``: reads, fit, contract, dataset,
                 plots, skops model) against a throwaway SQLite MLflow, with --estimator
  holdout        read the holdout split, predict_proba and metrics with the fitted model, twice as
                 for challenger and champion (validate_model)

Each step reports its RSS after imports and its peak (``ru_maxrss``); the table gives peak/data
and (peak - after imports)/data, data = the in-memory size of the batch (pandas, deep).

    source scripts/env.sh
    flock /tmp/cmms-bench.lock python bench/task_memory.py --sizes 1000000,10000000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import PROJECT_DIR, clean_env, last_json, machine, table, timed_run  # noqa: E402

STEPS = ("extract", "contract", "validate_data", "fit", "holdout", "train_model")
NEEDS = {
    "contract": "extract",
    "validate_data": "contract",
    "fit": "extract",
    "holdout": "fit",
    "train_model": "extract",
}
INTERVAL = ("2026-11-24T02:00:00+00:00", "2026-11-25T02:00:00+00:00")


def _mib() -> float:
    """This process's peak RSS so far (VmHWM). Not ``ru_maxrss``: Linux carries that over from the
    parent across fork and exec, so a child started by a big parent reports the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step(name: str, rows: int, work: Path, n_estimators: int, estimator_kind: str = "random_forest") -> dict:
    """One step in this process; returns its figures (printed as JSON by ``main``)."""
    import pandas as pd  # noqa: F401 - the imports every step's task pays anyway
    import pyarrow.parquet  # noqa: F401

    from cmms_pm.batch import manifest_features, prepare_batch, read_batch, validate_batch
    from cmms_pm.contract import DataContract, check_batch, derive_contract
    from cmms_pm.data import read_split
    from cmms_pm.drift import drift_report
    from cmms_pm.spec import load_spec

    spec = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
    manifest_path, contract_path = work / f"manifest-{rows}.json", work / f"contract-{rows}.json"
    model_path = work / f"model-{rows}.skops"
    if name in ("fit", "holdout", "train_model"):
        import sklearn.ensemble  # noqa: F401
        import skops.io  # noqa: F401
    if name == "train_model":
        import mlflow
        from mlflow import MlflowClient

        from cmms_mlflow.tracking.training_run import log_training_run

        mlflow_uri = f"sqlite:///{work / f'mlflow-{rows}.db'}"
        mlflow.set_tracking_uri(mlflow_uri)
        client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
        experiment_id = client.create_experiment(
            f"bench-memory-{rows}", artifact_location=(work / f"artifacts-{rows}").as_uri()
        )
    imported = _mib()
    started = time.perf_counter()
    if name == "extract":
        manifest = prepare_batch(
            spec=spec, frame=None, source="synthetic", n_samples=rows, target_column=spec.target,
            interval_start=INTERVAL[0], interval_end=INTERVAL[1], out_uri=str(work / f"batch-{rows}"),
        )  # fmt: skip
        manifest_path.write_text(json.dumps(manifest))
    manifest = json.loads(manifest_path.read_text())
    features = manifest_features(spec, manifest)
    if name == "contract":
        train = read_split(manifest["splits"]["train"]["uri"])
        contract = derive_contract(
            train, target=spec.target, feature_kinds={c: features.kind_of(c) for c in features.declared}
        )
        contract_path.write_text(json.dumps(contract.to_dict()))
    elif name == "validate_data":
        validate_batch(manifest, spec)
        contract = DataContract.from_dict(json.loads(contract_path.read_text()))
        frame = read_batch(manifest)
        check_batch(frame, contract, ignore=[spec.target, *spec.id_columns])
        drift_report(frame, contract, psi_threshold=spec.drift["psi_threshold"], action=spec.drift["action"])
    elif name == "fit":
        import skops.io

        from cmms_pm import training
        from cmms_pm.estimators import estimator

        train = read_split(manifest["splits"]["train"]["uri"])
        params = {**estimator("random_forest").defaults(), **spec.estimator_params}
        model = training.fit_model(
            train, features=features, target=spec.target, estimator="random_forest",
            hyperparameters={**params, "n_estimators": n_estimators},
        )  # fmt: skip
        del train
        validation = read_split(manifest["splits"]["validation"]["uri"])
        training.score_model(model, validation, target=spec.target)
        skops.io.dump(model, model_path)
    elif name == "train_model":
        params = dict(spec.estimator_params) if estimator_kind == spec.estimator else {}
        if estimator_kind == "random_forest":
            params["n_estimators"] = n_estimators
        log_training_run(
            client, experiment_id=experiment_id, manifest=manifest, spec=spec, estimator=estimator_kind,
            hyperparameters=params, tags={"airflow.task_id": "train_model"}, run_name="bench",
        )  # fmt: skip
    elif name == "holdout":
        import skops.io

        from cmms_pm.estimators import trusted_types
        from cmms_pm.training import score_model

        holdout = read_split(manifest["splits"]["holdout"]["uri"])
        for _ in ("challenger", "champion"):
            model = skops.io.load(model_path, trusted=trusted_types("random_forest"))
            score_model(model, holdout, target=spec.target)
    return {"imported_mb": imported, "peak_mb": _mib(), "seconds": time.perf_counter() - started}


def data_mb(rows: int) -> float:
    from cmms_pm.data import generate_telemetry, interval_seed

    return float(generate_telemetry(rows, interval_seed(*INTERVAL)).memory_usage(deep=True).sum()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    parser.add_argument("--n-estimators", type=int, default=10, help="trees of a random forest")
    parser.add_argument("--estimator", default="random_forest", help="estimator kind of the train_model step")
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    parser.add_argument("--step", nargs=3, metavar=("NAME", "ROWS", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        name, rows, work = args.step[0], int(args.step[1]), Path(args.step[2])
        print(json.dumps(step(name, rows, work, args.n_estimators, args.estimator)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [s for s in STEPS if s in args.steps.split(",")]
    run = set(steps)
    for name in reversed(STEPS):
        if name in run and name in NEEDS:
            run.add(NEEDS[name])
    run = [s for s in STEPS if s in run]  # what the steps asked for read what earlier ones wrote
    work = Path(tempfile.mkdtemp(prefix="cmms-bench-memory-"))
    log = work / "bench.log"
    print(f"Machine: {machine()}\nWork folder {work}", flush=True)
    results: dict[int, dict] = {}
    try:
        for rows in sizes:
            results[rows] = {"data_mb": data_mb(rows)}
            for name in run:
                cmd = [sys.executable, __file__, "--n-estimators", str(args.n_estimators),
                       "--estimator", args.estimator, "--step", name, str(rows), str(work)]  # fmt: skip
                out = timed_run(cmd, clean_env(), log=log)
                if out.returncode != 0:
                    raise RuntimeError(f"{name} at {rows} rows exited {out.returncode}; see {log}")
                results[rows][name] = {**last_json(out.stdout), "wall_s": out.seconds}
                print(f"  {rows:>9} rows  {name}: peak {results[rows][name]['peak_mb']:.0f} MiB", flush=True)
            shutil.rmtree(work / f"batch-{rows}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows_out = []
    for rows, by_step in results.items():
        data = by_step["data_mb"]
        for name in steps:
            if name in by_step:
                r = by_step[name]
                rows_out.append(
                    [rows, name, data, r["imported_mb"], r["peak_mb"], r["peak_mb"] / data,
                     (r["peak_mb"] - r["imported_mb"]) / data, r["seconds"]]
                )  # fmt: skip
    print()
    print(
        table(
            "Peak RSS per step (MiB), one fresh process each: data = batch in memory; "
            "RSS/data = peak / data; "
            "+RSS/+data = (peak - RSS after imports) / data. Target: peak <= 3x data",
            ["rows", "step", "data MiB", "after imports", "peak", "RSS/data", "+RSS/+data", "work s"],
            rows_out,
        )
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
