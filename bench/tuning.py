"""Tuning benchmarks (issue 21): the same trials on 1 and 2 Celery workers, the Airflow overhead per
trial task, and the F1 of tuned XGBoost/LightGBM against an untuned random forest.

Part 1 (``--part celery``) starts a real deployment — PostgreSQL (Airflow metadata and the Optuna
study), Redis, api-server, scheduler, dag-processor and N one-slot Celery workers — and runs a tuned
XGBoost spec on AI4I-like data twice, once with 1 worker and once with 2. Both runs tune the same
batch with the same seed, so they run exactly the same trials (the determinism guarantee; the bench
checks it). Reported: the tune phase's wall time (first trial task start → last trial task end),
the scaling efficiency T1 / (2 x T2), and per trial task its duration next to the trials' own time
(fit + score, from the study), the difference being Airflow's overhead (process start, imports,
reading the batch, MLflow and Optuna calls), and the queue wait.

Part 2 (``--part quality``) needs no Airflow: the pipeline's own code on AI4I-like data (the steps
of bench/foreign_estimators.py), the search in one process (``cmms_pm.tuning.run_in_memory``, the
same trials the tasks run), holdout F1 at the threshold main uses today (0.5).

    source scripts/env.sh && python bench/tuning.py [--part celery|quality|all] [--trials 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import (  # noqa: E402
    PROJECT_DIR,
    Cluster,
    Postgres,
    free_port,
    machine,
    port_open,
    start_process,
    stop_processes,
    table,
    wait_until_ready,
)

sys.path.insert(0, str(PROJECT_DIR / "tests"))  # the test suite's dataset builder, not a copy

from datasets import ai4i_like  # noqa: E402

TUNED_DAG = "ai4i_bench_tuned_training"
#: The quality bench's search spaces (boosting rounds capped by early stopping on validation).
SPACES = {
    "xgboost": {
        "max_depth": {"low": 2, "high": 8},
        "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
        "min_child_weight": {"low": 0.5, "high": 10, "log": True},
        "subsample": {"low": 0.6, "high": 1.0},
        "colsample_bytree": {"low": 0.6, "high": 1.0},
        "class_weight": {"choices": ["balanced", "none"]},
    },
    "lightgbm": {
        "num_leaves": {"low": 4, "high": 128, "log": True},
        "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
        "min_child_samples": {"low": 5, "high": 100, "log": True},
        "subsample": {"low": 0.6, "high": 1.0},
        "colsample_bytree": {"low": 0.6, "high": 1.0},
        "class_weight": {"choices": ["balanced", "none"]},
    },
}
FIXED = {"n_estimators": 1000, "early_stopping_rounds": 50}


def _tuned_spec(folder: Path, *, n_trials: int, per_task: int) -> None:
    import yaml

    spec = yaml.safe_load((PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "ai4i_tuned.yaml").read_text())
    spec.update(name="ai4i_bench_tuned", registered_model="ai4i_bench_tuned", experiment="ai4i_bench_tuned")
    spec["estimator"] = {"kind": "xgboost", "params": {"n_estimators": 300, "early_stopping_rounds": 30}}
    spec["tuning"].update(n_trials=n_trials, max_trials=max(n_trials, 12), trials_per_task=per_task)
    spec["tuning"]["space"] = {k: v for k, v in SPACES["xgboost"].items() if k != "class_weight"}
    (folder / "ai4i_bench_tuned.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def _start_workers(cluster: Cluster, count: int) -> list[subprocess.Popen]:
    """``count`` one-slot Celery workers, each on a host name of its own where this machine allows
    it (``unshare --uts``, root), as on separate machines."""
    own_hosts = subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0
    workers = []
    for index in range(count):
        worker = f"airflow celery worker --skip-serve-logs --concurrency 1 --celery-hostname bench{index}@%h"
        command = ["unshare", "--uts", "sh", "-c", f"hostname bench-worker-{index} && exec {worker}"]
        if not own_hosts:
            command = worker.split()
        workers.append(
            start_process(command, env=cluster.env, log=cluster.home / f"worker-{count}-{index}.log")
        )
    time.sleep(15)  # connected to the broker before the run is triggered
    return workers


def _stop(processes: list[subprocess.Popen]) -> None:
    stop_processes(processes, timeout=30)


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else float("nan")


#: Both runs tune the batch of this data interval (the same splits, hence the same trials).
LOGICAL_DATE = "2026-07-01T03:00:00+00:00"


def _tuned_run(cluster: Cluster, workers: int, n_trials: int, optuna_url: str) -> dict:
    import urllib.parse

    import optuna

    from cmms_pm.tuning import slot_of

    model = f"ai4i_bench_{workers}w"
    conf = {"model_name": model, "experiment_name": model, "n_trials": n_trials}
    # Its own run id (its own study: nothing to resume), the same logical date (the same batch).
    body = {"dag_run_id": f"bench_{workers}_workers", "logical_date": LOGICAL_DATE, "conf": conf}
    status, answer = cluster.request("POST", f"/api/v2/dags/{TUNED_DAG}/dagRuns", body)
    if status != 200:
        raise RuntimeError(f"trigger refused ({status}): {answer}")
    run_id = answer["dag_run_id"]
    run = cluster.wait_for_run(run_id, timeout=3600, dag_id=TUNED_DAG)
    base = f"/api/v2/dags/{TUNED_DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    tis = cluster.request("GET", f"{base}/taskInstances?limit=100")[1]["task_instances"]
    tune = [ti for ti in tis if ti["task_id"] == "tune"]
    [summary] = [s for s in optuna.study.get_all_study_summaries(optuna_url) if f".{run_id}." in s.study_name]
    trials = optuna.load_study(study_name=summary.study_name, storage=optuna_url).get_trials(deepcopy=False)
    # The next run takes the same logical date (the same batch): this one must go first.
    cluster.request("DELETE", base)
    own = {}
    for trial in trials:
        own.setdefault(trial.user_attrs["chain"], 0.0)
        own[trial.user_attrs["chain"]] += (trial.datetime_complete - trial.datetime_start).total_seconds()
    return {
        "state": run["state"],
        "run_seconds": _ts(run["end_date"]) - _ts(run["start_date"]),
        "tune_seconds": max(_ts(t["end_date"]) for t in tune) - min(_ts(t["start_date"]) for t in tune),
        "tasks": [
            {
                "chain": t["map_index"],
                "host": t["hostname"],
                "seconds": _ts(t["end_date"]) - _ts(t["start_date"]),
                "queued": _ts(t["start_date"]) - _ts(t["queued_when"]),
                "trials_seconds": own.get(t["map_index"], float("nan")),
            }
            for t in tune
        ],
        "trials": {slot_of(t): (t.params, t.value) for t in trials},
    }


def celery_part(args: argparse.Namespace) -> None:
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        raise SystemExit("redis-server not found: scripts/install_test_services.sh installs it")
    work = Path(tempfile.mkdtemp(prefix="cmms-bench-tuning-"))
    postgres = Postgres().start()
    redis_port = free_port()
    redis = start_process(
        [redis_binary, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--dir", str(work)],
        env=dict(os.environ), log=work / "redis.log",
    )  # fmt: skip
    wait_until_ready("redis-server", port_open(redis_port), processes=[redis], timeout=30, interval=0.2)
    cluster = None
    try:
        models, data = work / "models", work / "data"
        (data / "incoming").mkdir(parents=True)
        models.mkdir()
        _tuned_spec(models, n_trials=args.trials, per_task=args.per_task)
        shutil.copy(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml", models)
        ai4i_like(args.rows, seed=4).to_csv(data / "incoming" / "ai4i.csv", index=False)
        mlflow_uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
        (work / "mlflow").mkdir()
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=mlflow_uri).search_experiments(max_results=1)  # schema made once
        postgres.create_database("optuna")
        optuna_url = f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/optuna"
        cluster = Cluster.start(
            work / "airflow",
            sql_alchemy_conn=postgres.create_database("airflow"),
            mlflow_uri=mlflow_uri,
            data_root=data,
            plugins=PROJECT_DIR / "plugins",
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CELERY__BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
            AIRFLOW__CELERY__RESULT_BACKEND=f"redis://127.0.0.1:{redis_port}/1",
            AIRFLOW_CONN_CMMS_OPTUNA=f"postgres://postgres@127.0.0.1:{postgres.port}/optuna",
            CMMS_OPTUNA_STORAGE="postgres",
            CMMS_MODELS_DIR=str(models),
        )
        results = {}
        for workers in (1, 2):
            started = _start_workers(cluster, workers)
            try:
                results[workers] = _tuned_run(cluster, workers, args.trials, optuna_url)
            finally:
                _stop(started)
        _report_celery(results, args)
    finally:
        if cluster is not None:
            cluster.stop()
        _stop([redis])
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


def _report_celery(results: dict, args: argparse.Namespace) -> None:
    one, two = results[1], results[2]
    same = one["trials"] == two["trials"]
    rows = [
        [
            f"{workers} worker(s)",
            r["state"],
            r["tune_seconds"],
            r["run_seconds"],
            len({t["host"] for t in r["tasks"]}),
        ]
        for workers, r in results.items()
    ]
    print(
        table(
            f"Tuning wall time: {args.trials} XGBoost trials in chains of {args.per_task}, "
            f"AI4I-like {args.rows} rows, one-slot Celery workers",
            ["deployment", "run", "tune phase s", "whole run s", "hosts"],
            rows,
        )
    )
    speedup = one["tune_seconds"] / two["tune_seconds"]
    print(f"speed-up {speedup:.2f}x, scaling efficiency T1/(2*T2) = {speedup / 2:.0%} on {machine()}")
    print(f"same trials (parameters and values per slot) on 1 and 2 workers: {same}")
    tasks = [t for r in results.values() for t in r["tasks"]]
    per_task = [
        [
            f"{w}w chain {t['chain']}",
            t["seconds"],
            t["trials_seconds"],
            t["seconds"] - t["trials_seconds"],
            t["queued"],
        ]
        for w, r in results.items()
        for t in sorted(r["tasks"], key=lambda t: t["chain"])
    ]
    print(table("Per trial task", ["task", "task s", "trials' own s", "overhead s", "queued s"], per_task))
    overhead = statistics.mean(t["seconds"] - t["trials_seconds"] for t in tasks)
    own = statistics.mean(t["trials_seconds"] / args.per_task for t in tasks)
    print(
        f"Airflow overhead per trial task: {overhead:.1f} s (mean) vs {own:.2f} s of fit + score per trial: "
        f"ratio {overhead / own:.1f} trials' worth per task"
    )


def quality_part(args: argparse.Namespace) -> None:
    from cmms_pm import tuning
    from cmms_pm.batch import manifest_features, prepare_batch
    from cmms_pm.data import read_split
    from cmms_pm.estimators import validate_hyperparameters
    from cmms_pm.spec import load_spec
    from cmms_pm.training import (
        classification_metrics,
        fit_classifier,
        fit_model,
        fit_preprocessor,
        positive_proba,
    )

    spec = load_spec(PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "ai4i.yaml")
    rows: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = prepare_batch(
                spec=spec, frame=ai4i_like(args.rows, seed=seed), source="incoming/ai4i.csv", n_samples=None,
                target_column=spec.target, interval_start=f"2026-05-{seed + 1:02d}T02:00:00+00:00",
                interval_end=f"2026-05-{seed + 2:02d}T02:00:00+00:00", out_uri=tmp,
            )  # fmt: skip
            train, validation, holdout = (
                read_split(manifest["splits"][s]["uri"]) for s in ("train", "validation", "holdout")
            )
            features = manifest_features(spec, manifest)
            y = holdout[spec.target].to_numpy()
            forest = fit_model(
                train, features=features, target=spec.target, estimator="random_forest", hyperparameters={}
            )
            rows.setdefault("random_forest (defaults)", []).append(
                {**classification_metrics(y, positive_proba(forest, holdout)), "seconds": 0.0, "trials": 0}
            )
            for kind in ("xgboost", "lightgbm"):
                fixed = {**FIXED, "n_estimators": args.max_rounds}
                base = validate_hyperparameters(kind, fixed)
                untuned = fit_model(
                    train, features=features, target=spec.target, estimator=kind, hyperparameters=fixed
                )
                rows.setdefault(f"{kind} (defaults, no early stop)", []).append(
                    {
                        **classification_metrics(y, positive_proba(untuned, holdout)),
                        "seconds": 0.0,
                        "trials": 0,
                    }
                )
                started = time.perf_counter()
                prepared = tuning.prepare(train, validation, features=features, target=spec.target, kind=kind,
                                          hyperparameters=base)  # fmt: skip
                trials = tuning.run_in_memory(
                    prepared, SPACES[kind], hyperparameters=base, n_trials=args.quality_trials,
                    trials_per_task=args.quality_trials // 2, startup_trials=5, seed=seed,
                )  # fmt: skip
                best = tuning.best_trial(trials)
                params = validate_hyperparameters(kind, {**base, **best.params})
                model, x, y_train = fit_preprocessor(
                    train, features=features, target=spec.target, estimator=kind, hyperparameters=params
                )
                fit_classifier(model, x, y_train, validation=(validation, validation[spec.target].to_numpy()))
                metrics = classification_metrics(y, positive_proba(model, holdout))
                rows.setdefault(f"{kind} (tuned, {args.quality_trials} trials)", []).append(
                    {**metrics, "seconds": time.perf_counter() - started, "trials": len(trials)}
                )
    table_rows = []
    for name, results in rows.items():
        f1 = [r["f1"] for r in results]
        table_rows.append(
            [
                name,
                statistics.mean(f1),
                f"{min(f1):.3f}-{max(f1):.3f}",
                statistics.mean(r["pr_auc"] for r in results),
                statistics.mean(r["roc_auc"] for r in results),
                statistics.mean(r["seconds"] for r in results),
            ]  # fmt: skip
        )
    print(
        table(
            f"Holdout F1 at threshold 0.5 (main's), AI4I-like {args.rows} rows, seeds {args.seeds}; "
            "tuned on validation PR-AUC, chains of trials as the DAG runs them",
            ["model", "F1 mean", "F1 range", "PR-AUC", "ROC-AUC", "tuning s"],
            table_rows,
        )
    )
    forest = statistics.mean(r["f1"] for r in rows["random_forest (defaults)"])
    for kind in ("xgboost", "lightgbm"):
        tuned = statistics.mean(r["f1"] for r in rows[f"{kind} (tuned, {args.quality_trials} trials)"])
        print(f"{kind} tuned vs random forest: F1 {tuned:.3f} vs {forest:.3f} ({tuned / forest:.2f}x)")
    print(json.dumps({"machine": machine()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--part", choices=("celery", "quality", "all"), default="all")
    parser.add_argument("--trials", type=int, default=8, help="celery part: trials per run")
    parser.add_argument("--per-task", type=int, default=2, help="celery part: trials per mapped task")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seeds", default="0,1,2", help="quality part: dataset seeds")
    parser.add_argument("--quality-trials", type=int, default=30)
    parser.add_argument("--max-rounds", type=int, default=1000, help="quality part: boosting rounds at most")
    args = parser.parse_args()
    if args.part in ("quality", "all"):
        quality_part(args)
    if args.part in ("celery", "all"):
        celery_part(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
