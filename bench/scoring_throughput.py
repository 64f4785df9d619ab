"""Scoring throughput: rows/s of the scoring DAG / rows/s of a bare ``predict_proba`` on the same Parquet.

For every size, side by side in one run, on the same input file and the same champion:

  bare   a fresh process reads the Parquet with pandas and calls ``predict_proba`` of the champion's
         pipeline (loaded straight from its skops file); timed: read + predict (imports and the
         model load are reported, not counted)
  dag    ``airflow dags test predictive_maintenance_scoring`` on a throwaway SQLite Airflow home,
         the spec's scoring source pointed at that file; timed: the ``score_fleet`` task's duration
         (Airflow's), which includes the task's imports, the champion's trusted load, the contract
         check and flags of every row, writing the predictions and the MLflow summary run

  scheduler  the nightly path: a real deployment (api-server + scheduler + dag-processor,
         LocalExecutor on a throwaway PostgreSQL, tasks forked from the forkserver that preloads
         skops/sklearn/pandas/mlflow), the DAG triggered through the REST API; one untimed warm-up
         run first pays the forkserver's preload once, as a long-running scheduler does; timed:
         the ``score_fleet`` task's duration (Airflow's), peak RSS from bench/airflow_plugins

ratio = task rows/s / bare rows/s = bare seconds / task seconds (target >= 0.8 at 1M rows), for
``dags test`` and the scheduler separately.

The champion is the shipped spec's estimator (random forest, 100 trees, depth 10) trained once on
``--train-rows`` synthetic rows, registered and promoted as the tests do (tests/support.py). Every
store lives in one temporary folder, removed unless --keep. Example:

    source scripts/env.sh
    flock /tmp/cmms-bench.lock python bench/scoring_throughput.py --sizes 100000,1000000
    flock /tmp/cmms-bench.lock python bench/scoring_throughput.py --modes scheduler
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import (  # noqa: E402
    BENCH_DIR,
    PROJECT_DIR,
    Cluster,
    Postgres,
    airflow_env,
    clean_env,
    last_json,
    machine,
    setup_airflow,
    table,
    timed_run,
)

sys.path.insert(0, str(PROJECT_DIR / "tests"))
from support import training_provenance  # noqa: E402 - the test harness's provenance tags

SCORING_DAG = "predictive_maintenance_scoring"
MODEL_NAME = "bench_scoring_rf"
AS_OF = "2026-11-26T06:00:00+00:00"
MODES = ("dags-test", "scheduler")
#: The scheduler's spec reads this file; each size's input is hard-linked here before its run.
SCHEDULED_INPUT = "fleet-scheduled.parquet"


def prepare(work: Path, sizes: list[int], train_rows: int) -> dict:
    """Champion (trained, registered, promoted), one input file per size, a spec scoring that file."""
    import yaml
    from mlflow import MlflowClient

    from cmms_mlflow.registry import model_registry
    from cmms_mlflow.registry.promotion import change_stage
    from cmms_mlflow.tracking.training_run import log_training_run
    from cmms_pm.batch import prepare_batch
    from cmms_pm.data import write_frame
    from cmms_pm.fleet import latest_telemetry
    from cmms_pm.spec import load_spec

    spec = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
    mlflow_uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    artifacts = (work / "mlflow" / "artifacts").as_uri()
    (work / "mlflow").mkdir(parents=True)
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    manifest = prepare_batch(
        spec=spec, frame=None, source="synthetic", n_samples=train_rows, target_column=spec.target,
        interval_start="2026-11-24T02:00:00+00:00", interval_end="2026-11-25T02:00:00+00:00",
        out_uri=str(work / "train-batch"),
    )  # fmt: skip
    experiment_id = client.create_experiment("bench_scoring_training", artifact_location=artifacts)
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    trained = log_training_run(
        client, experiment_id=experiment_id, manifest=manifest, spec=spec, estimator="random_forest",
        hyperparameters=dict(spec.estimator_params), tags=training_provenance(spec), run_name="champion",
    )  # fmt: skip
    version = model_registry.register_version(
        client, name=MODEL_NAME, source=trained["model_uri"], run_id=trained["run_id"],
        description="scoring throughput bench", tags={"decision_threshold": repr(trained["threshold"])},
    )  # fmt: skip
    change_stage(
        client, name=MODEL_NAME, version=str(version.version), stage="Production",
        lock_dir=work / "locks", actor="bench", reason="scoring throughput bench", at=AS_OF,
    )  # fmt: skip
    model_dir = Path(mlflow.artifacts.download_artifacts(trained["model_uri"], dst_path=str(work / "model")))
    inputs = {}
    for rows in sizes:
        inputs[rows] = write_frame(
            latest_telemetry(AS_OF, n_units=rows), str(work / "data" / "incoming" / f"fleet-{rows}.parquet")
        )
    raw = yaml.safe_load((PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml").read_text())
    raw["registered_model"] = MODEL_NAME
    return {
        "mlflow_uri": mlflow_uri,
        "artifacts": artifacts,
        "skops": str(next(model_dir.rglob("*.skops"))),
        "inputs": inputs,
        "raw_spec": raw,
        "version": str(version.version),
    }


def run_bare(work: Path, skops_path: str, parquet: str, log: Path) -> dict:
    cmd = [sys.executable, __file__, "--bare", skops_path, parquet]
    out = timed_run(cmd, clean_env(), log=log, cwd=work)
    if out.returncode != 0:
        raise RuntimeError(f"bare scoring exited {out.returncode}; see {log}")
    return {**last_json(out.stdout), "process_s": out.seconds, "maxrss_mb": out.maxrss_mb}


def bare_worker(skops_path: str, parquet: str) -> None:
    """The floor: read the file, predict; nothing else (run in its own process)."""
    started = time.perf_counter()
    import pandas as pd
    import skops.io

    from cmms_pm.estimators import trusted_types

    imported = time.perf_counter()
    model = skops.io.load(skops_path, trusted=trusted_types("random_forest"))
    loaded = time.perf_counter()
    frame = pd.read_parquet(parquet)
    read = time.perf_counter()
    proba = model.predict_proba(frame)[:, 1]
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "rows": len(frame),
                "import_s": imported - started,
                "load_s": loaded - imported,
                "read_s": read - loaded,
                "predict_s": done - read,
                "seconds": done - loaded,
                "mean_proba": float(proba.mean()),
            }
        )
    )


def run_dag(work: Path, setup: dict, rows: int, index: int, log: Path) -> dict:
    import yaml

    home = work / f"airflow-{rows}"
    models = work / f"models-{rows}"
    models.mkdir()
    raw = dict(setup["raw_spec"])
    raw["scoring"] = {**raw["scoring"], "source": {"kind": "file", "path": setup["inputs"][rows]}}
    (models / "predictive_maintenance.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = airflow_env(
        home,
        sql_alchemy_conn=f"sqlite:///{home / 'airflow.db'}",
        mlflow_uri=setup["mlflow_uri"],
        data_root=work / "data",
        CMMS_MLFLOW_ARTIFACT_ROOT=setup["artifacts"],
        CMMS_MODELS_DIR=str(models),
        CMMS_LOCK_DIR=str(work / "locks"),
    )
    home.mkdir(parents=True)
    setup_airflow(env, log)
    logical_date = f"2026-11-26T{index:02d}:00:00+00:00"
    cmd = [
        "airflow",
        "dags",
        "test",
        SCORING_DAG,
        logical_date,
        "--conf",
        json.dumps({"model_name": MODEL_NAME}),
    ]
    out = timed_run(cmd, env, log=log)
    with sqlite3.connect(home / "airflow.db") as db:
        state, seconds = db.execute(
            "select state, duration from task_instance where dag_id = ? and task_id = 'score_fleet'",
            (SCORING_DAG,),
        ).fetchone()
        xcom = db.execute(
            "select value from xcom where dag_id = ? and task_id = 'score_fleet' and key = 'return_value'",
            (SCORING_DAG,),
        ).fetchone()
    phases = _phases(xcom[0] if xcom else None)
    if out.returncode != 0 or state != "success":
        raise RuntimeError(f"scoring DAG at {rows} rows: exit {out.returncode}, task {state}; see {log}")
    predictions = next((work / "data" / SCORING_DAG).rglob("predictions.parquet"))
    import pyarrow.parquet as pq

    scored = pq.ParquetFile(predictions).metadata.num_rows
    shutil.rmtree(predictions.parent.parent)  # the next size finds its own file
    return {
        "seconds": seconds,
        "phases": phases,
        "execute_s": sum(phases.values()),
        "process_s": out.seconds,
        "maxrss_mb": out.maxrss_mb,
        "scored": scored,
    }


class Scheduled:
    """The scoring DAG under a real scheduler (lib.Cluster on PostgreSQL), one run per size."""

    def __init__(self, work: Path, setup: dict) -> None:
        self.work, self.setup = work, setup
        self.postgres: Postgres | None = None
        self.cluster: Cluster | None = None
        self.warm_up_s: float | None = None

    def start(self, warm_up_rows: int) -> None:
        import yaml

        models = self.work / "models-scheduler"
        models.mkdir()
        raw = dict(self.setup["raw_spec"])
        source = {"kind": "file", "path": str(self.work / "data" / "incoming" / SCHEDULED_INPUT)}
        raw["scoring"] = {**raw["scoring"], "source": source}
        (models / "predictive_maintenance.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        self.postgres = Postgres().start()
        started = time.perf_counter()
        self.cluster = Cluster.start(
            self.work / "airflow-scheduler",
            sql_alchemy_conn=self.postgres.create_database("airflow_bench"),
            mlflow_uri=self.setup["mlflow_uri"],
            data_root=self.work / "data",
            plugins=BENCH_DIR / "airflow_plugins",
            CMMS_MLFLOW_ARTIFACT_ROOT=self.setup["artifacts"],
            CMMS_MODELS_DIR=str(models),
            CMMS_LOCK_DIR=str(self.work / "locks"),
        )
        print(f"  scheduler ready in {time.perf_counter() - started:.0f} s (untimed)", flush=True)
        # The first task after a scheduler start also pays the forkserver's preload: untimed.
        self.warm_up_s = self.run(warm_up_rows, "2026-11-20T06:00:00Z")["seconds"]
        print(f"  warm-up run ({warm_up_rows} rows, untimed): score_fleet {self.warm_up_s:.1f} s", flush=True)

    def run(self, rows: int, logical_date: str) -> dict:
        assert self.cluster is not None
        target = self.work / "data" / "incoming" / SCHEDULED_INPUT
        target.unlink(missing_ok=True)  # (renaming a link over a link to the same file does nothing)
        os.link(self.setup["inputs"][rows], target)  # the same bytes, no copy
        run_id = self.cluster.trigger(logical_date, {"model_name": MODEL_NAME}, dag_id=SCORING_DAG)
        run = self.cluster.wait_for_run(run_id, dag_id=SCORING_DAG)
        ti = self.cluster.task_instances(run_id, dag_id=SCORING_DAG)["score_fleet"]
        if run["state"] != "success":
            raise RuntimeError(f"scheduled scoring at {rows} rows: {run['state']}; see {self.cluster.home}")
        status, xcom = self.cluster.request(
            "GET",
            f"/api/v2/dags/{SCORING_DAG}/dagRuns/{run_id}/taskInstances/score_fleet/xcomEntries/return_value",
        )
        phases = _phases(xcom.get("value") if status == 200 and xcom else None)
        stats = {}
        stats_file = Path(self.cluster.env["CMMS_BENCH_TASK_STATS"])
        for line in stats_file.read_text().splitlines() if stats_file.exists() else []:
            item = json.loads(line)
            if item["run_id"] == run_id and item["task_id"] == "score_fleet":
                stats = item
        predictions = next((self.work / "data" / SCORING_DAG).rglob("predictions.parquet"))
        import pyarrow.parquet as pq

        scored = pq.ParquetFile(predictions).metadata.num_rows
        shutil.rmtree(predictions.parent.parent)
        return {
            "seconds": ti["duration"],
            "phases": phases,
            "execute_s": sum(phases.values()),
            "maxrss_mb": stats.get("maxrss_mb"),
            "cpu_s": stats.get("cpu_s"),
            "scored": scored,
        }

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.postgres is not None:
            self.postgres.stop()


def _phases(value: bytes | str | list | None) -> dict[str, float]:
    """The score_fleet task's seconds per phase (read, load, contract, predict, write, log)."""
    while isinstance(value, bytes | str):  # the XCom backend may serialize twice
        value = json.loads(value)
    seconds = dict(value[0]["seconds"]) if value else {}
    order = ("read", "load", "contract", "predict", "write", "log")  # the REST API sorts the keys
    return dict(sorted(seconds.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99))


TITLES = {
    "dags-test": "task = score_fleet duration under `airflow dags test` (Airflow's task start included)",
    "scheduler": "task = score_fleet duration under a real scheduler (LocalExecutor, forkserver "
    "preload, after one untimed warm-up run)",
}


def print_table(results: dict[int, dict], mode: str) -> None:
    rows = []
    for size, result in results.items():
        if mode not in result:
            continue
        bare, dag = result["bare"], result[mode]
        phases = dag["phases"]
        rows.append(
            [
                size,
                bare["read_s"],
                bare["predict_s"],
                bare["seconds"],
                dag["seconds"],
                dag["execute_s"],
                " ".join(f"{k} {v:.2f}" for k, v in phases.items()),
                size / bare["seconds"],
                size / dag["seconds"],
                bare["seconds"] / dag["seconds"],
                bare["seconds"] / dag["execute_s"] if dag["execute_s"] else None,
                (bare["load_s"] + bare["seconds"]) / dag["execute_s"] if dag["execute_s"] else None,
                dag["maxrss_mb"],
            ]
        )
    print(
        table(
            f"Scoring throughput ({mode}): bare = read Parquet + predict_proba (fresh process, after imports "
            f"and model load); {TITLES[mode]}; execute = the operator's own phases (read, trusted load + "
            "contract download, contract check + row flags, predict, write, MLflow summary run). "
            "ratio = bare s / task s; ratio (execute) = bare s / execute s. Target: ratio >= 0.8 at 1M rows",
            [
                "rows",
                "bare read s",
                "bare predict s",
                "bare s",
                "task s",
                "execute s",
                "execute phases s",
                "bare rows/s",
                "task rows/s",
                "ratio",
                "ratio (execute)",
                "ratio (execute, bare incl. load)",
                "task peak RSS MB",
            ],
            rows,
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--train-rows", type=int, default=100_000, help="rows the champion is trained on")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    parser.add_argument(
        "--repeat", type=int, default=1, help="scheduler runs per size (the median run is reported)"
    )
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--bare", nargs=2, metavar=("SKOPS", "PARQUET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_worker(*args.bare)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = [m for m in MODES if m in args.modes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="cmms-bench-scoring-"))
    log = work / "bench.log"
    print(f"Machine: {machine()}")
    print(f"Work folder {work} (log: {log})", flush=True)
    results: dict[int, dict] = {}
    scheduled: Scheduled | None = None
    try:
        setup = prepare(work, sizes, args.train_rows)
        # dags test first: the deployment's own processes (idle or not) would share its cores.
        for index, rows in enumerate(sizes):
            print(f"  {rows:>9} rows  bare ...", end="", flush=True)
            bare = run_bare(work, setup["skops"], setup["inputs"][rows], log)
            results[rows] = {"bare": bare}
            print(f" {bare['seconds']:.1f} s", end="", flush=True)
            if "dags-test" in modes:
                results[rows]["dags-test"] = run_dag(work, setup, rows, index, log)
                print(f"; dags test {results[rows]['dags-test']['seconds']:.1f} s", end="", flush=True)
            print(flush=True)
        if "scheduler" in modes:
            scheduled = Scheduled(work, setup)
            scheduled.start(min(sizes))
            for index, rows in enumerate(sizes):
                runs = [
                    scheduled.run(rows, f"2026-11-{26 - repeat:02d}T{index:02d}:00:00Z")
                    for repeat in range(args.repeat)
                ]
                result = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]  # the median run
                results[rows]["scheduler"] = {**result, "all_seconds": [run["seconds"] for run in runs]}
                shown = ", ".join(f"{run['seconds']:.1f}" for run in runs)
                print(f"  {rows:>9} rows  scheduler {shown} s (median {result['seconds']:.1f})", flush=True)
        for rows, result in results.items():
            scored = [result[m]["scored"] for m in modes]
            if any(n != rows for n in scored) or result["bare"]["rows"] != rows:
                raise RuntimeError(f"scored {scored} and {result['bare']['rows']} rows, not {rows}")
    finally:
        if scheduled is not None:
            scheduled.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for mode in modes:
        print_table(results, mode)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    if args.keep:
        print(f"Kept {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
