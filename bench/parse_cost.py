"""P1 — parse cost of each DAG file beyond ``import airflow.sdk``.

For every file in dags/, and for a minimal DAG file that imports only ``airflow.sdk``, time
``runpy.run_path`` in fresh processes (``airflow.sdk`` imported before the clock starts) and
print the median, the cost beyond the minimal file, and the ratio to the 0.10 s budget.

    make bench            # or: source scripts/env.sh && python bench/parse_cost.py --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
BUDGET_S = 0.10
#: Exit status when a DAG file is over budget; distinct from 1, which a crash (traceback) returns.
EXIT_OVER_BUDGET = 3
MINIMAL_DAG = """
from airflow.sdk import dag, task
import pendulum

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def minimal():
    @task
    def noop():
        return None
    noop()

minimal()
"""
TIMER = (
    "import runpy, sys, time; import airflow.sdk; t = time.perf_counter(); "
    "runpy.run_path(sys.argv[1]); print(time.perf_counter() - t)"
)


def parse_seconds(path: Path, runs: int) -> float:
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", TIMER, str(path)], capture_output=True, text=True, check=True
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


SPEC_COUNTS = (1, 10, 50)


def spec_scaling(runs: int, baseline: float) -> float:
    """Parse time of the DAG factory with 1, 10 and 50 specs (copies of the shipped one); returns the
    worst cost per DAG beyond the minimal file. Each spec gives two DAGs (training, scoring)."""
    import os

    shipped = (PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml").read_text()
    factory = PROJECT_DIR / "dags" / "model_pipelines.py"
    print(f"\nP1 with N model specs (dags/model_pipelines.py, 2 DAGs per spec), baseline {baseline:.3f} s")
    print(
        f"{'specs':>6} {'DAGs':>5} {'parse s':>8} {'beyond s':>9} {'per DAG s':>10} {'/budget':>8}  verdict"
    )
    worst = 0.0
    for count in SPEC_COUNTS:
        with tempfile.TemporaryDirectory() as models:
            for index in range(count):
                name = f"model_{index:03d}"
                text = shipped.replace("name: predictive_maintenance\n", f"name: {name}\n", 1)
                text = text.replace(
                    "registered_model: predictive_maintenance_rf", f"registered_model: {name}"
                )
                (Path(models) / f"{name}.yaml").write_text(text)
            os.environ["CMMS_MODELS_DIR"] = models
            try:
                seconds = parse_seconds(factory, runs)
            finally:
                del os.environ["CMMS_MODELS_DIR"]
        per_dag = max(seconds - baseline, 0.0) / (2 * count)
        worst = max(worst, per_dag)
        verdict = "ok" if per_dag <= BUDGET_S else "OVER"
        print(
            f"{count:6d} {2 * count:5d} {seconds:8.3f} {max(seconds - baseline, 0.0):9.3f} {per_dag:10.4f} "
            f"{per_dag / BUDGET_S:8.2f}  {verdict}"
        )
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per file (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        minimal = Path(tmp) / "minimal_dag.py"
        minimal.write_text(MINIMAL_DAG)
        baseline = parse_seconds(minimal, args.runs)
    print(f"P1 parse cost, median of {args.runs} fresh processes, baseline (minimal DAG) {baseline:.3f} s")
    print(f"{'DAG file':45} {'parse s':>8} {'beyond s':>9} {'/budget':>8}  verdict")
    worst = 0.0
    for dag_file in sorted((PROJECT_DIR / "dags").glob("*.py")):
        seconds = parse_seconds(dag_file, args.runs)
        beyond = max(seconds - baseline, 0.0)
        worst = max(worst, beyond)
        verdict = "ok" if beyond <= BUDGET_S else "OVER"
        print(f"{dag_file.name:45} {seconds:8.3f} {beyond:9.3f} {beyond / BUDGET_S:8.2f}  {verdict}")
    worst = max(worst, spec_scaling(args.runs, baseline))
    return 0 if worst <= BUDGET_S else EXIT_OVER_BUDGET


if __name__ == "__main__":
    sys.exit(main())
