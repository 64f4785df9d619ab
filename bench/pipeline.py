"""P2 orchestration overhead, P3 scaling and P4 API latency of the training pipeline.

For every size (rows of synthetic telemetry), side by side in one run, on the same data
(same data interval, hence the same seed and split):

  (a) bare scikit-learn: generate, fit, score validation + holdout in one process (bare_sklearn.py)
  (b) a plain script in the seed's style: (a) + log to MLflow, register, transition (seed_style.py)
  (c) the whole DAG with ``airflow dags test`` (fresh process, throwaway SQLite Airflow home)
  (d) the whole DAG under a real scheduler: api-server + scheduler + dag-processor, LocalExecutor,
      Airflow metadata on a throwaway PostgreSQL; timed from the run's queued_at to its end_date

P3 takes per-task wall time (Airflow's task durations) and peak RSS (a bench-only listener in
each task process, bench/airflow_plugins) from the (d) runs, or durations only from (c).
P4 (when (d) ran) times the plugin API beside MLflow's own REST API with 50 concurrent clients.

Every store (Airflow homes, PostgreSQL, MLflow, data) lives in one temporary folder, removed at
the end unless --keep. Examples:

    make bench                                     # P1, then this at 10k,100k,1M, then P5
    source scripts/env.sh && python bench/pipeline.py --sizes 10000 --modes a,b,c
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import (  # noqa: E402
    BENCH_DIR,
    DAG_ID,
    Cluster,
    Postgres,
    airflow_env,
    last_json,
    loglog_slope,
    machine,
    setup_airflow,
    table,
    timed_run,
)

# A nightly run at logical date D 02:00 UTC covers the day before (CronDataIntervalTimetable).
# Each size gets its own day (Airflow allows one run per logical date); every mode of that size
# uses that day, hence the same seed and the same rows.
FIRST_DAY = date(2026, 11, 25)


def interval(index: int) -> tuple[str, str, str]:
    """(logical date, interval start, interval end) of the ``index``-th size, ISO with +00:00."""
    end = FIRST_DAY - timedelta(days=index)
    start = end - timedelta(days=1)
    stamp = "{}T02:00:00+00:00"
    return stamp.format(end), stamp.format(start), stamp.format(end)


TASKS = (
    "extract_data",
    "validate_data",
    "train_model",
    "register_model",
    "stage_model",
    "validate_model",
    "decide",
    "promote_model",
    "reject_model",
    "report",
)
TRAINING_TASKS = {"train_model"}
#: The shipped spec's registered model, which every (c) and (d) run trains, and the suffix of its
#: history experiment (cmms_mlflow.registry.history.EXPERIMENT_SUFFIX).
SPEC_MODEL = "predictive_maintenance_rf"
HISTORY_SUFFIX = "__history"
MODES = {
    "a": "bare sklearn",
    "b": "seed-style script",
    "c": "airflow dags test",
    "d": "scheduler + LocalExecutor",
}


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.log = work / "bench.log"
        self.mlflow_dir = work / "mlflow"
        self.mlflow_uri = f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"
        self.artifacts = (self.mlflow_dir / "artifacts").as_uri()
        self.results: dict[int, dict[str, dict]] = {}
        self.interval: dict[int, tuple[str, str, str]] = {}
        self.cluster: Cluster | None = None
        self.first_run: dict | None = None
        self.postgres: Postgres | None = None

    def conf(self, mode: str, rows: int) -> dict:
        # A run trains the spec's own registered model (a spec writes no other); each run's model is
        # set aside under its own name afterwards (set_aside), so every run starts without a champion.
        return {
            "n_samples": rows,
            "experiment_name": f"bench_{mode}",
            "n_estimators": self.args.n_estimators,
            "max_depth": self.args.max_depth,
            "estimator": self.args.estimator,
        }

    def set_aside(self, name: str) -> None:
        """Rename the shipped spec's model (and its history experiment) to ``name``, outside every
        timing: the next run starts with no champion, as each size and mode did with a model of its own."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=self.mlflow_uri, registry_uri=self.mlflow_uri)
        try:
            client.rename_registered_model(SPEC_MODEL, name)
        except MlflowException:  # the run registered nothing (it failed early)
            return
        history = client.get_experiment_by_name(f"{SPEC_MODEL}{HISTORY_SUFFIX}")
        if history is not None:
            client.rename_experiment(history.experiment_id, f"{name}{HISTORY_SUFFIX}")

    def prepare_mlflow(self) -> None:
        """Create the shared MLflow store's schema once, outside every timing."""
        self.mlflow_dir.mkdir(parents=True, exist_ok=True)
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=self.mlflow_uri).search_experiments(max_results=1)

    def common_args(self, rows: int) -> list[str]:
        _, start, end = self.interval[rows]
        return [
            "--rows",
            str(rows),
            "--interval-start",
            start,
            "--interval-end",
            end,
            "--n-estimators",
            str(self.args.n_estimators),
            "--max-depth",
            str(self.args.max_depth),
            "--estimator",
            self.args.estimator,
        ]

    def run_a(self, rows: int) -> dict:
        env = airflow_env(
            self.work / "unused",
            sql_alchemy_conn="sqlite://",
            mlflow_uri=self.mlflow_uri,
            data_root=self.work,
        )
        out = timed_run(
            [sys.executable, str(BENCH_DIR / "bare_sklearn.py"), *self.common_args(rows)], env, log=self.log
        )
        return self._result(out, "a", rows)

    def run_b(self, rows: int) -> dict:
        env = airflow_env(
            self.work / "unused",
            sql_alchemy_conn="sqlite://",
            mlflow_uri=self.mlflow_uri,
            data_root=self.work,
        )
        cmd = [
            sys.executable,
            str(BENCH_DIR / "seed_style.py"),
            *self.common_args(rows),
            "--tracking-uri",
            self.mlflow_uri,
            "--artifact-location",
            self.artifacts,
            "--model-name",
            f"bench_b_{rows}",
        ]
        return self._result(timed_run(cmd, env, log=self.log), "b", rows)

    def run_c(self, rows: int) -> dict:
        home = self.work / f"airflow-c-{rows}"
        env = airflow_env(
            home,
            sql_alchemy_conn=f"sqlite:///{home / 'airflow.db'}",
            mlflow_uri=self.mlflow_uri,
            data_root=self.work / "data-c",
            CMMS_MLFLOW_ARTIFACT_ROOT=self.artifacts,
        )
        home.mkdir(parents=True)
        setup_airflow(env, self.log)
        logical_date = self.interval[rows][0]
        cmd = ["airflow", "dags", "test", DAG_ID, logical_date, "--conf", json.dumps(self.conf("c", rows))]
        out = timed_run(cmd, env, log=self.log)
        result = self._result(out, "c", rows, check_json=False)
        with sqlite3.connect(home / "airflow.db") as db:
            state = db.execute("select state from dag_run where dag_id = ?", (DAG_ID,)).fetchone()
            result["state"] = state[0] if state else "missing"
            result["tasks"] = {
                task_id: {"seconds": duration, "state": ti_state, "start": start, "end": end}
                for task_id, duration, ti_state, start, end in db.execute(
                    "select task_id, duration, state, start_date, end_date from task_instance"
                    " where dag_id = ?",
                    (DAG_ID,),
                )
            }
            row = db.execute(
                "select value from xcom where dag_id = ? and task_id = 'validate_model'"
                " and key = 'return_value'",
                (DAG_ID,),
            ).fetchone()
        result["holdout_f1"] = _holdout_f1(row[0] if row else None)
        self.set_aside(f"bench_c_{rows}")
        if result["state"] != "success":
            raise RuntimeError(f"(c) at {rows} rows ended {result['state']}; see {self.log}")
        return result

    def start_cluster(self) -> None:
        self.postgres = Postgres().start()
        conn = self.postgres.create_database("airflow_bench")
        started = time.perf_counter()
        self.cluster = Cluster.start(
            self.work / "airflow-d",
            sql_alchemy_conn=conn,
            mlflow_uri=self.mlflow_uri,
            data_root=self.work / "data-d",
            plugins=BENCH_DIR / "airflow_plugins",
        )
        self.cluster.env["CMMS_MLFLOW_ARTIFACT_ROOT"] = self.artifacts
        print(
            f"(d) deployment ready in {time.perf_counter() - started:.0f} s (not part of any timing)",
            flush=True,
        )
        if self.args.warmup_rows:
            self.warm_up(self.args.warmup_rows)

    def warm_up(self, rows: int) -> None:
        """One small run before the timed ones, reported apart: the first run after a scheduler start
        also pays the forkserver's preload (airflow.cfg) and the api-server's first requests, which
        a long-running deployment pays once, not per nightly run."""
        assert self.cluster is not None
        # Before every size's day and after the DAG's start_date (2026-01-01).
        logical_date = (FIRST_DAY - timedelta(days=300)).isoformat() + "T02:00:00Z"
        conf = {**self.conf("d", rows), "experiment_name": "bench_warmup"}
        run = self.cluster.wait_for_run(self.cluster.trigger(logical_date, conf))
        self.set_aside("bench_warmup")
        seconds = _iso_seconds(run["end_date"]) - _iso_seconds(run["queued_at"] or run["start_date"])
        self.first_run = {"rows": rows, "seconds": seconds, "state": run["state"]}
        state = run["state"]
        print(f"(d) first run after start ({rows} rows, warm-up, untimed): {seconds:.1f} s, {state}")

    def run_d(self, rows: int) -> dict:
        assert self.cluster is not None
        run_id = self.cluster.trigger(self.interval[rows][0].replace("+00:00", "Z"), self.conf("d", rows))
        run = self.cluster.wait_for_run(run_id)
        self.set_aside(f"bench_d_{rows}")
        tis = self.cluster.task_instances(run_id)
        stats = {}
        stats_file = Path(self.cluster.env["CMMS_BENCH_TASK_STATS"])
        if stats_file.exists():
            for line in stats_file.read_text().splitlines():
                item = json.loads(line)
                if item["run_id"] == run_id:
                    stats[item["task_id"]] = item
        seconds = _iso_seconds(run["end_date"]) - _iso_seconds(run["queued_at"] or run["start_date"])
        result = {
            "seconds": seconds,
            "queued_at": run["queued_at"] or run["start_date"],
            "state": run["state"],
            "maxrss_mb": max((s["maxrss_mb"] for s in stats.values()), default=None),
            # Task processes only (the scheduler's own work is not in it).
            "cpu_s": sum(s["cpu_s"] for s in stats.values()) or None,
            "run_id": run_id,
            "tasks": {
                task_id: {
                    "seconds": ti.get("duration"),
                    "state": ti.get("state"),
                    "maxrss_mb": stats.get(task_id, {}).get("maxrss_mb"),
                    "cpu_s": stats.get(task_id, {}).get("cpu_s"),
                    "start": ti.get("start_date"),
                    "end": ti.get("end_date"),
                }
                for task_id, ti in tis.items()
            },
        }
        status, xcom = self.cluster.request(
            "GET",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/validate_model/xcomEntries/return_value",
        )
        result["holdout_f1"] = _holdout_f1(xcom.get("value") if status == 200 and xcom else None)
        if run["state"] != "success":
            raise RuntimeError(f"(d) at {rows} rows ended {run['state']}; see {self.cluster.home}")
        return result

    def _result(self, out, mode: str, rows: int, *, check_json: bool = True) -> dict:
        if out.returncode != 0:
            raise RuntimeError(f"({mode}) at {rows} rows exited {out.returncode}; see {self.log}")
        result = {"seconds": out.seconds, "maxrss_mb": out.maxrss_mb, "cpu_s": out.cpu_s}
        if check_json:
            result.update(last_json(out.stdout))
        return result

    def run(self, sizes: list[int], modes: list[str]) -> None:
        if "d" in modes:
            self.start_cluster()
        for index, rows in enumerate(sizes):
            self.interval[rows] = interval(index)
            self.results[rows] = {}
            for mode in modes:
                print(f"  {rows:>9} rows  ({mode}) {MODES[mode]} ...", end="", flush=True)
                result = getattr(self, f"run_{mode}")(rows)
                self.results[rows][mode] = result
                print(f" {result['seconds']:.1f} s", flush=True)


def _holdout_f1(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
        if isinstance(value, str):  # serialized twice by the XCom backend
            value = json.loads(value)
    try:
        return float(value["challenger_metrics"]["f1"])
    except (KeyError, TypeError, ValueError):
        return None


def _iso_seconds(stamp: str) -> float:
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    # Airflow's SQLite columns hold naive UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _ratio(results: dict, top: str, bottom: str) -> float | None:
    if top in results and bottom in results and results[bottom]["seconds"]:
        return results[top]["seconds"] / results[bottom]["seconds"]
    return None


def p2_table(results: dict[int, dict[str, dict]], modes: list[str]) -> str:
    headers = ["rows", *(f"({m}) s" for m in modes), "(c)/(a)", "(c)/(b)", "(d)/(a)", "holdout F1 a/b/c/d"]
    rows = []
    for size, by_mode in results.items():
        f1s = "/".join(
            f"{by_mode[m]['holdout_f1']:.3f}" if by_mode.get(m, {}).get("holdout_f1") is not None else "-"
            for m in "abcd"
        )
        rows.append(
            [
                size,
                *(by_mode[m]["seconds"] for m in modes),
                _ratio(by_mode, "c", "a"),
                _ratio(by_mode, "c", "b"),
                _ratio(by_mode, "d", "a"),
                f1s,
            ]
        )
    legend = ", ".join(f"({m}) {MODES[m]}" for m in modes)
    return table(
        f"P2 orchestration overhead: wall seconds, {legend}. "
        "Targets at 1M rows: (c)/(a) <= 1.25, (c)/(b) <= 1.10",
        headers,
        rows,
    )


def p2_cpu_table(results: dict[int, dict[str, dict]], modes: list[str]) -> str:
    """The same ratios in CPU seconds, which other load on a shared machine barely moves."""
    rows = []
    for size, by_mode in results.items():
        cpu = {m: by_mode.get(m, {}).get("cpu_s") for m in modes}

        def ratio(top: str, bottom: str, cpu=cpu) -> float | None:
            return cpu[top] / cpu[bottom] if cpu.get(top) and cpu.get(bottom) else None

        rows.append(
            [size, *(cpu[m] for m in modes), ratio("c", "a"), ratio("c", "b"), ratio("d", "a")]
            if all(m in cpu for m in "abcd")
            else [size, *(cpu[m] for m in modes), *(ratio(*pair) for pair in (("c", "a"), ("c", "b")))]
        )
    headers = ["rows", *(f"({m}) CPU s" for m in modes), "(c)/(a)", "(c)/(b)"]
    if all(m in modes for m in "abcd"):
        headers.append("(d)/(a)")
    return table(
        "P2 in CPU seconds (user + system of the process tree; (d): its task processes only)",
        headers,
        rows,
    )


def p2_overhead(results: dict[int, dict[str, dict]], modes: list[str]) -> str:
    """Where (c) and (d) spend their wall time outside the tasks' own durations."""
    rows = []
    for size, by_mode in results.items():
        for mode in ("c", "d"):
            result = by_mode.get(mode)
            if mode not in modes or not result:
                continue
            ran = [t for t in result.get("tasks", {}).values() if t.get("seconds") and t.get("start")]
            in_tasks = sum(t["seconds"] for t in ran)
            first = last = None
            if ran and all(t.get("end") for t in ran):
                first = min(_iso_seconds(t["start"]) for t in ran)
                last = max(_iso_seconds(t["end"]) for t in ran)
            queued = result.get("queued_at")
            start_delay = first - _iso_seconds(queued) if first and queued else None
            between = (last - first - in_tasks) if first and last else None
            a = by_mode.get("a", {}).get("seconds")
            rows.append(
                [
                    size,
                    f"({mode})",
                    result["seconds"],
                    result["seconds"] - a if a else None,
                    in_tasks,
                    result["seconds"] - in_tasks,
                    start_delay,
                    between,
                    len(ran),
                ]
            )
    return table(
        "P2 overhead: wall s, minus (a), the sum of task durations, wall outside tasks; (d): queued -> first "
        "task start, and the gaps between tasks (first start to last end minus the task durations)",
        ["rows", "mode", "wall s", "- (a) s", "in tasks s", "outside s", "to 1st task s", "gaps s", "tasks"],
        rows,
    )


def p2_detail(results: dict[int, dict[str, dict]]) -> str:
    """Where (a) and (b) spend their time, to read the ratios against."""
    rows = []
    for size, by_mode in results.items():
        a = by_mode.get("a")
        if a:
            rows.append([size, "(a)", a["import_s"], a["data_s"], a["fit_s"], a["score_s"], a["maxrss_mb"]])
    return table(
        "P2 detail: phases of (a) in seconds (import, generate + split, fit, score both splits), peak RSS MB",
        ["rows", "mode", "import", "data", "fit", "score", "peak RSS MB"],
        rows,
    )


def p3_table(results: dict[int, dict[str, dict]], data_mb: dict[int, float]) -> str:
    source = "d" if all("d" in r for r in results.values()) else "c"
    sizes = sorted(results)
    headers = [
        "task",
        *(f"{s} s" for s in sizes),
        *(f"{s} MB" for s in sizes),
        "exponent",
        "top exp.",
        "RSS/data",
        "+RSS/+data",
    ]
    rows = []
    worst_exp = 0.0
    worst_rss = 0.0
    for task in TASKS:
        secs = [(results[s][source]["tasks"].get(task) or {}).get("seconds") for s in sizes]
        rss = [(results[s][source]["tasks"].get(task) or {}).get("maxrss_mb") for s in sizes]
        if all(v is None for v in secs):
            continue
        points = [(s, v) for s, v in zip(sizes, secs, strict=True) if v]
        exponent = loglog_slope([p[0] for p in points], [p[1] for p in points])
        top = loglog_slope([p[0] for p in points[-2:]], [p[1] for p in points[-2:]])
        ratio = rss[-1] / data_mb[sizes[-1]] if rss[-1] and data_mb.get(sizes[-1]) else None
        # Growth of peak RSS over growth of the data, smallest to largest size: what the data
        # costs beyond the fixed price of the task's imports.
        grown = data_mb[sizes[-1]] - data_mb[sizes[0]] if len(sizes) > 1 else 0.0
        extra = (rss[-1] - rss[0]) / grown if grown > 0 and rss[-1] and rss[0] else None
        if task not in TRAINING_TASKS:
            worst_exp = max(worst_exp, top or 0.0, exponent or 0.0)
        worst_rss = max(worst_rss, ratio or 0.0)
        rows.append([task, *secs, *rss, exponent, top, ratio, extra])
    rows.append(
        ["data in memory", *([None] * len(sizes)), *(data_mb.get(s) for s in sizes), None, None, None, None]
    )
    title = (
        f"P3 scaling from ({source}): task wall seconds and peak RSS MB per size; exponent = log-log "
        "slope over all sizes, top exp. = between the two largest; RSS/data = peak RSS / in-memory "
        "data at the largest size; +RSS/+data = (peak RSS growth) / (data growth), smallest to largest. "
        f"Targets: exponent <= 1.1 outside training (worst here {worst_exp:.2f}), peak RSS <= 3x data "
        f"(worst here {worst_rss:.1f}x)"
    )
    return table(title, headers, rows)


def data_sizes_mb(sizes: list[int]) -> dict[int, float]:
    """In-memory size (pandas, deep) of each size's generated frame.

    Above 1M rows it is extrapolated from 1M (bytes per row are constant: fixed-width columns and
    categories), so printing the tables of a 10M run does not generate 10M rows again.
    """
    from cmms_pm.data import generate_telemetry, interval_seed

    seed = interval_seed(*interval(0)[1:])
    measured = {
        s: float(generate_telemetry(s, seed).memory_usage(deep=True).sum()) / 1e6
        for s in sorted({min(s, MEASURED_ROWS) for s in sizes})
    }
    return {s: measured[min(s, MEASURED_ROWS)] * s / min(s, MEASURED_ROWS) for s in sizes}


MEASURED_ROWS = 1_000_000


def print_tables(results: dict[int, dict[str, dict]], modes: list[str]) -> None:
    print(p2_table(results, modes))
    if any(r.get(m, {}).get("cpu_s") for r in results.values() for m in modes):
        print(p2_cpu_table(results, modes))
    if "c" in modes or "d" in modes:
        print(p2_overhead(results, modes))
    if "a" in modes:
        print(p2_detail(results))
    if "c" in modes or "d" in modes:
        print(p3_table(results, data_sizes_mb(sorted(results))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated row counts")
    parser.add_argument("--modes", default="a,b,c,d", help="subset of a,b,c,d")
    parser.add_argument("--quick", action="store_true", help="sizes 10000,100000 (no 1M run)")
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument(
        "--estimator",
        default="random_forest",
        choices=("random_forest", "hist_gradient_boosting", "logistic_regression"),
        help="estimator of every mode (the spec's form override for (c)/(d))",
    )
    parser.add_argument(
        "--warmup-rows",
        type=int,
        default=2000,
        help="(d): one untimed run of this size first (0: none); its time is printed apart",
    )
    parser.add_argument("--no-api", action="store_true", help="skip P4 even when (d) runs")
    parser.add_argument("--api-requests", type=int, default=2000, help="P4 requests per server")
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores)")
    parser.add_argument("--from-json", type=Path, help="only print the tables of a --json file")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results = {int(size): by_mode for size, by_mode in saved["results"].items()}
        print(f"Machine: {saved['machine']}\n")
        print_tables(results, [m for m in "abcd" if all(m in r for r in results.values())])
        return 0
    sizes = [10_000, 100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    modes = [m for m in "abcd" if m in args.modes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="cmms-bench-"))
    bench = Bench(work, args)
    print(f"Machine: {machine()}")
    print(f"Work folder {work} (log: {bench.log})", flush=True)
    api_report = None
    try:
        bench.prepare_mlflow()
        bench.run(sizes, modes)
        if bench.cluster is not None and not args.no_api:
            from api_latency import measure

            api_report = measure(
                bench.cluster,
                mlflow_uri=bench.mlflow_uri,
                artifacts=bench.artifacts,
                model_name=f"bench_d_{sizes[-1]}",
                requests=args.api_requests,
                work=work,
            )
    finally:
        if bench.cluster is not None:
            bench.cluster.stop()
        if bench.postgres is not None:
            bench.postgres.stop()
    print()
    print_tables(bench.results, modes)
    if api_report is not None:
        print(api_report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine(), "results": bench.results, "first_run": bench.first_run}, indent=2
            )
        )
    if args.keep:
        print(f"Kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
