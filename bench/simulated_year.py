"""A simulated year: N nightly training runs of the shipped spec back to back (issue 20, section 3).

Every night is ``dag.test()`` of the spec's training DAG in this one process (a throwaway SQLite
Airflow home, an embedded MLflow on SQLite, its own data root), at consecutive logical dates
(02:00 UTC, so each run has its own data interval and data), on ``--rows`` rows, with the spec's
``retention`` section set (``keep_batches`` 3, ``keep_archived_versions`` 2) and scripted events:

* drift episodes: the night trains on a file (under ``<data root>/incoming``) whose sensors are
  shifted (temperature +15 °C, vibration ×1.6, load +10 %): the drift check measures it (PSI);
* rejected challengers: a night whose run conf asks for an F1 of 0.99;
* no approval timeout: ``dag.test()`` parks a human-in-the-loop task in ``awaiting_input`` and waits
  for an answer from outside forever (Airflow 3.3.2 ``DAG.test``: no triggerer, so the step's
  timeout never fires); it needs the real scheduler and triggerer (tests/dags/test_approval.py);
* rollbacks: after the night, ``dag.test()`` of the ``model_promotion`` DAG with
  ``version = previous`` (the registry's rollback path).

After each night it times (median of ``--repeat`` calls) the registry reads of
bench/registry_growth.py on the real model — snapshot, plan, apply (``registry.execute``, one
bench event), history append / first page, the Models page's list row and version views,
``GET …/production`` uncached — and measures the disk used by the data root, the MLflow artifact
folder and the MLflow DB file. One CSV row per night (``--out``, written after every night through
``cmms_pm.csv_export.write_csv``); at the end it prints the summary: first vs last month median time
per night (target ≤ 1.2×), registry latencies at day 1 / 90 / 365 (target ≤ 200 ms), and the disk
curve with its least-squares slope over the last 300 nights (target ≈ flat).

Resumable: with ``--work DIR`` the stores live in DIR; a second call with the same ``--work`` and
``--out`` continues after the last night in the CSV. ``--stop-after-minutes`` ends the run early
(after a whole night) and prints the summary of what ran. Example::

    source scripts/env.sh && python bench/simulated_year.py --nights 365 --rows 2000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import PROJECT_DIR, clean_env, machine, table  # noqa: E402

TARGET_MS = 200.0
TARGET_RATIO = 1.2
FIRST_NIGHT = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
RETENTION = {"keep_batches": 3, "keep_archived_versions": 2}
#: The reads of bench/registry_growth.py kept per night (CSV column → its label there).
READS = {
    "snapshot_ms": "snapshot (every write path)",
    "prune_snapshot_ms": "snapshot (pruning, keep 5 archived)",
    "plan_ms": "plan (pure)",
    "apply_ms": "apply (snapshot+plan+write+event)",
    "history_append_ms": "history append",
    "history_first_page_ms": "history first page (50)",
    "models_list_ms": "Models page: list row",
    "models_old_version_ms": "Models page: old version",
    "models_champion_ms": "Models page: champion",
    "get_production_ms": "GET production (uncached)",
}
WRITES = ("apply_ms", "history_append_ms")
DISK = ("data_root_mb", "artifacts_mb", "mlflow_db_mb")


def events(nights: int) -> dict[int, set[str]]:
    """Night number (1-based) → scripted events, placed at the same share of any run length."""

    def at(day: int) -> int:  # a day of the 365-night script, scaled to ``nights``
        return min(max(1, round(day * nights / 365)), nights)

    script: dict[int, set[str]] = {}
    for start, end in ((60, 74), (200, 214)):  # two drift episodes of two weeks
        for day in range(at(start), at(end) + 1):
            script.setdefault(day, set()).add("drift")
    for day in range(37, 366, 45):  # a rejected challenger every ~6 weeks
        script.setdefault(at(day), set()).add("rejected")
    for day in (100, 250, 320):
        script.setdefault(at(day), set()).add("rollback")
    if nights < 2:
        script.pop(1, None)
    elif nights <= 3:  # the smoke: a rejection, then a drifted night that is rolled back
        script = {2: {"rejected"}, 3: {"drift", "rollback"}}
    return script


def write_spec(models: Path) -> None:
    """The shipped spec with its ``retention`` section set, as the only spec of ``models``."""
    import yaml

    spec = yaml.safe_load((PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml").read_text())
    spec["retention"] = dict(RETENTION)
    models.mkdir(parents=True, exist_ok=True)
    (models / "predictive_maintenance.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def environment(work: Path) -> dict[str, str]:
    mlflow_uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    return clean_env(
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW_CONFIG=str(PROJECT_DIR / "airflow.cfg"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_DIR / "dags"),
        CMMS_PROJECT_DIR=str(PROJECT_DIR),
        CMMS_DATA_ROOT=str(work / "data"),
        CMMS_MODELS_DIR=str(work / "models"),
        CMMS_MLFLOW_HOME=str(work / "mlflow"),
        AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )


def prepare(work: Path) -> None:
    """Stores of a fresh year (skipped when resuming): spec, Airflow DB and pools, MLflow schema."""
    if (work / "airflow" / "airflow.db").exists():
        return
    (work / "airflow").mkdir(parents=True, exist_ok=True)
    (work / "mlflow").mkdir(parents=True, exist_ok=True)
    write_spec(work / "models")
    env = {**environment(work)}
    with open(work / "setup.log", "a") as sink:
        subprocess.run([str(PROJECT_DIR / "scripts" / "setup_airflow.sh")], env=env, stdout=sink,
                       stderr=subprocess.STDOUT, check=True, timeout=600)  # fmt: skip
        subprocess.run([sys.executable, "-c", "from mlflow import MlflowClient; import sys; "
                        "MlflowClient(tracking_uri=sys.argv[1]).search_experiments(max_results=1)",
                        f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"], env=env, stdout=sink,
                       stderr=subprocess.STDOUT, check=True, timeout=600)  # fmt: skip


def drifted_file(work: Path, night: int, rows: int) -> str:
    """A drifted batch for ``night`` under the source allow-list; its path relative to the data root."""
    from cmms_pm.data import generate_telemetry

    frame = generate_telemetry(rows, seed=10_000 + night)
    frame["temperature_c"] = (frame["temperature_c"] + 15.0).clip(upper=180.0)
    frame["vibration_mm_s"] = (frame["vibration_mm_s"] * 1.6).clip(upper=80.0)
    frame["load_pct"] = (frame["load_pct"] + 10.0).clip(upper=140.0)
    incoming = work / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    for old in incoming.glob("drift_*.parquet"):  # the inputs of past nights are not the bench's disk
        old.unlink()
    path = incoming / f"drift_{night:03d}.parquet"
    frame.to_parquet(path, index=False)
    return f"incoming/{path.name}"


def disk_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 2**20


def load_dag_file(path: Path, attr: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"simyear_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attr)


class Year:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        from mlflow import MlflowClient

        from cmms_mlflow.factory import build_dags
        from cmms_mlflow.hooks.mlflow_hook import MlflowHook
        from cmms_pm.params import training_params
        from cmms_pm.spec import load_spec

        self.work, self.args = work, args
        self.spec = load_spec(work / "models" / "predictive_maintenance.yaml")
        self.name = self.spec.registered_model
        dags = build_dags(work / "models")
        self.training = dags[f"{self.spec.name}_training"]
        self.promotion = load_dag_file(PROJECT_DIR / "dags" / "model_promotion.py", "model_promotion")()
        self.defaults = {name: p["default"] for name, p in training_params(self.spec).items()}
        uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.hook = MlflowHook()

    def night(self, night: int, todo: set[str]) -> dict[str, Any]:
        from cmms_mlflow.registry import model_registry
        from cmms_pm.registry_plan import PRUNED, RETENTION_TAG

        when = FIRST_NIGHT + timedelta(days=night - 1)
        # dag.test() keeps a conf key of one call in the DAG's params for the next: pass every key.
        conf = {**self.defaults, "n_samples": self.args.rows}
        if "drift" in todo:
            conf["data_source"] = drifted_file(self.work, night, self.args.rows)
        if "rejected" in todo:
            conf["f1_threshold"] = 0.99
        began, cpu = time.perf_counter(), time.process_time()
        run = self.training.test(logical_date=when, run_after=when, run_conf=conf)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        tis = run.get_task_instances()
        states = {ti.task_id: str(ti.state) for ti in tis}
        # dag.test() stamps the run's own start_date with its logical date: the tasks' span instead.
        ran = [ti for ti in tis if ti.start_date and ti.end_date]
        tasks_s = (max(ti.end_date for ti in ran) - min(ti.start_date for ti in ran)).total_seconds()
        rollback_s = None
        if "rollback" in todo and model_registry.get_version_by_alias(
            self.client, self.name, "previous_champion"
        ):
            began = time.perf_counter()
            back = self.promotion.test(
                logical_date=when + timedelta(hours=6), run_after=when + timedelta(hours=6),
                run_conf={"model_name": self.name, "version": "previous", "stage": "Production",
                          "reason": f"simulated year: rollback on night {night}", "override_approval": False},
            )  # fmt: skip
            rollback_s = time.perf_counter() - began
            if str(back.state) != "success":
                raise RuntimeError(f"rollback of night {night} ended {back.state}; see {self.work}")
        versions = self.client.search_model_versions(f"name = '{self.name}'", max_results=10_000)
        newest = max(versions, key=lambda v: int(v.version), default=None)
        row: dict[str, Any] = {
            "night": night,
            "logical_date": when.date().isoformat(),
            "events": "+".join(sorted(todo)) or "none",
            "run_state": str(run.state),
            "decision": _decision(states),
            "wall_s": round(wall, 2),
            "tasks_s": round(tasks_s, 2),
            # dag.test() runs the tasks in this process: its CPU seconds barely move with the machine's
            # load, unlike wall time (the robust first-vs-last-month ratio on a shared machine).
            "cpu_s": round(cpu, 2),
            "rollback_s": round(rollback_s, 2) if rollback_s is not None else 0.0,
            "champion": model_registry.champion_version(self.client, self.name) or "",
            "versions": len(versions),
            "pruned_versions": sum(1 for v in versions if (v.tags or {}).get(RETENTION_TAG) == PRUNED),
            # The night's version: what its drift check measured against the champion's training data
            # (a night with no champion to compare with: status "no champion", PSI 0).
            "drift_status": (newest.tags.get("drift_status") if newest else None) or "no champion",
            "drift_max_psi": float((newest.tags.get("drift_max_psi") if newest else None) or 0.0),
        }
        row |= self.reads()
        row |= {
            "history_events": self.history_events(),
            "data_root_mb": round(disk_mb(self.work / "data"), 3),
            "artifacts_mb": round(disk_mb(self.work / "mlflow" / "artifacts"), 3),
            "mlflow_db_mb": round(disk_mb(self.work / "mlflow" / "mlflow.db"), 3),
        }
        return row

    def reads(self) -> dict[str, float]:
        from registry_growth import reads

        from cmms_mlflow.registry import model_registry

        champion = model_registry.champion_version(self.client, self.name)
        calls = reads(self.client, self.hook, self.name, champion)
        out: dict[str, float] = {}
        for column, label in READS.items():
            fn = calls.get(label)
            if fn is None:
                out[column] = float("nan")
                continue
            times = []
            # A write leaves a history event: timed once a night, not --repeat times.
            for _ in range(1 if column in WRITES else self.args.repeat):
                began = time.perf_counter()
                fn()
                times.append((time.perf_counter() - began) * 1000)
            out[column] = round(statistics.median(times), 2)
        return out

    def history_events(self) -> int:
        from cmms_mlflow.registry import history

        events, _ = history.read_page(self.client, self.name, limit=1)
        return int(events[0]["seq"]) if events else 0


def _decision(states: dict[str, str]) -> str:
    if states.get("promote_model") == "success":
        return "promoted"
    if states.get("reject_model") == "success":
        return "rejected"
    return "other"


def summary(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """The three tables of issue 20 and whether every target was met."""
    n = len(rows)
    month = min(30, max(1, n // 3))
    first = statistics.median(r["wall_s"] for r in rows[:month])
    last = statistics.median(r["wall_s"] for r in rows[-month:])
    ratio = last / first if first else float("nan")
    ok = ratio <= TARGET_RATIO
    time_rows = [["wall s", first, last, ratio, "ok" if ok else "OVER"]]
    if all("cpu_s" in r for r in rows):
        cpu_first = statistics.median(r["cpu_s"] for r in rows[:month])
        cpu_last = statistics.median(r["cpu_s"] for r in rows[-month:])
        cpu_ratio = cpu_last / cpu_first if cpu_first else float("nan")
        verdict = "ok" if cpu_ratio <= TARGET_RATIO else "OVER"
        time_rows.append(["CPU s", cpu_first, cpu_last, cpu_ratio, verdict])
    out = [table(
        f"Time per night over {n} nights (dag.test(), median over {month} nights)",
        ["time", f"first {month}", f"last {month}", "last/first", f"<= {TARGET_RATIO}x"],
        time_rows,
    )]  # fmt: skip
    days = sorted({d for d in (1, 90, 365, n) if d <= n})
    read_rows = []
    for column, label in READS.items():
        values = [rows[d - 1][column] for d in days]
        verdict = "ok" if values[-1] <= TARGET_MS else "OVER"
        ok = ok and verdict == "ok"
        read_rows.append([label, *values, verdict])
    out.append(table("Registry reads after the night (median ms)", ["read", *(f"day {d}" for d in days),
                     f"<= {TARGET_MS:.0f} ms"], read_rows))  # fmt: skip
    tail = rows[-min(300, max(2, n - n // 6)) :] if n > 1 else rows
    marks = sorted({d for d in (1, 7, 30, 90, 180, 270, 365, n) if d <= n})
    disk_rows = []
    for column in DISK:
        slope = _slope([float(r["night"]) for r in tail], [float(r[column]) for r in tail])
        disk_rows.append([column, *(rows[d - 1][column] for d in marks),
                          f"{slope:+.4f}" if slope is not None else "-"])  # fmt: skip
    out.append(table(f"Disk (MB) by night; slope = least squares over the last {len(tail)} nights (MB/night)",
                     ["store", *(f"day {d}" for d in marks), "slope"], disk_rows))  # fmt: skip
    kinds: dict[str, int] = {}
    for r in rows:
        for kind in r["events"].split("+"):
            kinds[kind] = kinds.get(kind, 0) + 1
    decisions = {d: sum(1 for r in rows if r["decision"] == d) for d in ("promoted", "rejected", "other")}
    out.append(
        f"Nights by event: {kinds}; decisions: {decisions}; versions {rows[-1]['versions']} "
        f"({rows[-1]['pruned_versions']} pruned), history events {rows[-1]['history_events']}\n"
    )
    return "\n".join(out), ok


def _slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if not path.exists():
        return []
    frame = pd.read_csv(path, dtype={"champion": str, "logical_date": str, "events": str})
    return frame.to_dict("records")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--rows", type=int, default=2000, help="rows per night (>= 1000, the form's minimum)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per registry read (median)")
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_DIR / "bench" / "results" / "simulated_year.csv",
        help="per-night CSV (default bench/results/, ignored by git)",
    )
    parser.add_argument("--work", type=Path, help="stores folder (kept; reuse it to resume)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores folder")
    parser.add_argument("--stop-after-minutes", type=float, help="end after the night that passes it")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cmms-bench-year-"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}\nWork folder {work}; CSV {out}", flush=True)
    prepare(work)
    # This process runs the tasks: the year's stores only, nothing of the calling shell's.
    ours = ("AIRFLOW", "MLFLOW_", "CMMS_")
    for key in [k for k in os.environ if k.startswith(ours)]:
        del os.environ[key]
    os.environ.update({k: v for k, v in environment(work).items() if k.startswith(ours)})
    import logging

    logging.basicConfig(level=logging.WARNING)
    from cmms_pm.csv_export import write_csv

    rows = read_rows(out) if args.work else []
    if rows:
        print(f"resuming after night {rows[-1]['night']}", flush=True)
    script = events(args.nights)
    year = Year(work, args)
    started = time.monotonic()
    try:
        import pandas as pd

        for night in range(len(rows) + 1, args.nights + 1):
            row = year.night(night, script.get(night, set()))
            rows.append(row)
            write_csv(pd.DataFrame(rows), out)
            print(f"night {night:3d} {row['events']:>16} {row['decision']:>8} {row['wall_s']:6.1f} s "
                  f"champion v{row['champion']} data {row['data_root_mb']:.1f} MB art "
                  f"{row['artifacts_mb']:.1f} MB db {row['mlflow_db_mb']:.1f} MB "
                  f"snapshot {row['snapshot_ms']:.0f} ms", flush=True)  # fmt: skip
            if args.stop_after_minutes and time.monotonic() - started > 60 * args.stop_after_minutes:
                print(f"stopping after night {night} (--stop-after-minutes {args.stop_after_minutes})")
                break
        from registry_growth import page_through

        paging = page_through(year.client, year.name, 50)
    finally:
        if not (args.work or args.keep):
            shutil.rmtree(work, ignore_errors=True)
    text, ok = summary(rows)
    print()
    print(text)
    print(
        f"History of {year.name} paged 50 at a time (history.read_page, what GET …/history serves): "
        f"{paging['events']} events in {paging['pages']} pages, duplicates {paging['duplicates']}, "
        f"ordered {paging['ordered']}, complete {paging['complete']}"
    )
    whole = paging["duplicates"] == 0 and paging["ordered"] and paging["complete"]
    return 0 if ok and whole else 3


if __name__ == "__main__":
    sys.exit(main())
