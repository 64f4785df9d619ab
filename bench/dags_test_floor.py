"""The fixed cost of ``airflow dags test`` itself: what mode (c) of bench/pipeline.py pays before
and around any work of this project's tasks.

Issue 13 asks for (c) − (a) ≤ 10 s. This bench measures, on the same bundle (this project's DAG
files, so Airflow parses and serializes the same DAGs as in (c)) and the same configuration,
``airflow dags test`` of three DAGs that do no work of ours:

  noop_1     one task that returns at once
  noop_9     nine such tasks in a chain: the training DAG's shape (9 tasks run per training run)
  imports_1  one task that imports what the training tasks import (MLflow and its SQL store,
             scikit-learn's forest, skops the way the tasks import it, matplotlib, pyarrow) —
             (a) pays scikit-learn's import too, so the difference to (a) is the rest

Each DAG runs ``--repeat`` times (one fresh ``airflow dags test`` process each, distinct logical
dates); the table gives the median wall and CPU seconds. Example:

    source scripts/env.sh && python bench/dags_test_floor.py --repeat 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import PROJECT_DIR, airflow_env, machine, setup_airflow, table, timed_run  # noqa: E402

_FLOOR_DAGS = '''
"""Bench-only DAGs that do no work of this project (bench/dags_test_floor.py)."""
from airflow.sdk import chain, dag, task


@task
def noop() -> None:
    return None


@task
def imports() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import mlflow.sklearn  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.ensemble  # noqa: F401

    from cmms_mlflow.tracking.model_loading import import_skops

    import_skops()


@dag(dag_id="bench_noop_1", schedule=None, catchup=False)
def noop_1():
    noop()


@dag(dag_id="bench_noop_9", schedule=None, catchup=False)
def noop_9():
    chain(*[noop.override(task_id=f"noop_{i}")() for i in range(9)])


@dag(dag_id="bench_imports_1", schedule=None, catchup=False)
def imports_1():
    imports()


noop_1()
noop_9()
imports_1()
'''

DAGS = ("bench_noop_1", "bench_noop_9", "bench_imports_1")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--dags", default=",".join(DAGS), help=f"comma-separated subset of {', '.join(DAGS)} (default: all)"
    )
    args = parser.parse_args()
    chosen = [name for name in args.dags.split(",") if name]
    unknown = sorted(set(chosen) - set(DAGS))
    if unknown or not chosen:
        parser.error(f"--dags: {', '.join(unknown) or 'none given'}; choose from {', '.join(DAGS)}")

    work = Path(tempfile.mkdtemp(prefix="cmms-floor-"))
    log = work / "bench.log"
    print(f"Machine: {machine()}")
    dags = work / "dags"
    dags.mkdir()
    for path in sorted((PROJECT_DIR / "dags").glob("*.py")):  # the project's bundle, as (c) parses it
        (dags / path.name).symlink_to(path)
    (dags / "bench_floor.py").write_text(_FLOOR_DAGS)
    home = work / "airflow"
    home.mkdir()
    env = airflow_env(
        home,
        sql_alchemy_conn=f"sqlite:///{home / 'airflow.db'}",
        mlflow_uri=f"sqlite:///{work / 'mlflow.db'}",
        data_root=work / "data",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
    )
    setup_airflow(env, log)
    rows = []
    try:
        for dag_id in chosen:
            walls, cpus = [], []
            for attempt in range(args.repeat):
                logical_date = f"2026-01-{attempt + 1:02d}T00:00:00+00:00"
                out = timed_run(["airflow", "dags", "test", dag_id, logical_date], env, log=log)
                if out.returncode:
                    raise RuntimeError(f"airflow dags test {dag_id} failed; see {log}")
                walls.append(out.seconds)
                cpus.append(out.cpu_s)
            rows.append([dag_id, statistics.median(walls), min(walls), max(walls), statistics.median(cpus)])
            print(f"  {dag_id}: {', '.join(f'{w:.1f}' for w in walls)} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        table(
            f"airflow dags test of DAGs that do no work of ours (same bundle, {args.repeat} runs each):"
            " median wall s, min, max, median CPU s",
            ["DAG", "wall s", "min", "max", "CPU s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
