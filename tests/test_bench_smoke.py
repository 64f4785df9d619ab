"""CI smoke of the benchmarks: they run and print their tables (timings are not asserted here).

Tiny sizes only; the real figures come from ``make bench`` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
EXIT_OVER_BUDGET = 3  # bench/parse_cost.py's status for "measured, over budget"


def _run_bench(*args: str, timeout: float) -> subprocess.CompletedProcess:
    # The suite's throwaway environment; the benches give their own children fresh stores.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=PROJECT_DIR
    )


def test_parse_cost_bench_prints_a_row_per_dag_file():
    out = _run_bench(str(PROJECT_DIR / "bench" / "parse_cost.py"), "--runs", "1", timeout=300)
    # 0: within budget; EXIT_OVER_BUDGET: measured but over (timings are not asserted here).
    # A crash exits 1 and fails this test.
    assert out.returncode in (0, EXIT_OVER_BUDGET), out.stderr[-2000:]
    for dag_file in (PROJECT_DIR / "dags").glob("*.py"):
        assert dag_file.name in out.stdout
    assert "baseline (minimal DAG)" in out.stdout


@pytest.mark.slow
def test_pipeline_bench_prints_overhead_and_scaling_tables_at_a_tiny_size():
    """(a) bare sklearn, (b) seed-style script and (c) ``airflow dags test`` on 2,000 rows."""
    out = _run_bench(
        str(PROJECT_DIR / "bench" / "pipeline.py"),
        "--sizes",
        "2000",
        "--modes",
        "a,b,c",
        "--n-estimators",
        "10",
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "P2 orchestration overhead" in out.stdout
    assert "(c)/(a)" in out.stdout
    assert "P3 scaling from (c)" in out.stdout
    assert "train_model" in out.stdout


@pytest.mark.slow
def test_dags_test_floor_bench_times_the_no_work_dags_in_the_project_bundle():
    out = _run_bench(str(PROJECT_DIR / "bench" / "dags_test_floor.py"), "--repeat", "1", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for dag_id in ("bench_noop_1", "bench_noop_9", "bench_imports_1"):
        assert re.search(rf"^\|\s+{dag_id} \|\s+\d+\.\d+ \|", out.stdout, re.M), out.stdout[-2000:]


def test_timed_run_reports_the_child_peak_not_the_benchs_own(tmp_path):
    """Linux carries a parent's peak RSS into a child across fork and exec (``ru_maxrss``): the
    bench must read the child's own peak, or every small step reports the bench's size."""
    sys.path.insert(0, str(PROJECT_DIR / "bench"))
    from lib import clean_env, timed_run

    ballast = bytearray(400 * 1024 * 1024)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # resident, not just reserved
    child = "import time; b = bytearray(40 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)"
    out = timed_run([sys.executable, "-c", child], clean_env(), log=tmp_path / "run.log")
    del ballast
    assert out.returncode == 0
    assert 40 < out.maxrss_mb < 300, out.maxrss_mb


def test_scoring_throughput_bench_prints_dags_test_and_scheduler_tables_at_a_tiny_size():
    """bare vs ``airflow dags test`` vs a real scheduler (after its warm-up run) on 2,000 rows."""
    out = _run_bench(
        str(PROJECT_DIR / "bench" / "scoring_throughput.py"),
        "--sizes",
        "2000",
        "--train-rows",
        "3000",
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Scoring throughput (dags-test)" in out.stdout
    assert "Scoring throughput (scheduler)" in out.stdout
    assert "warm-up run (2000 rows, untimed)" in out.stdout
    scheduler_table = out.stdout.split("Scoring throughput (scheduler)")[1]
    assert "|    2000 |" in scheduler_table or "| 2000 |" in scheduler_table
    assert "predict" in scheduler_table  # the operator's phases came back through the REST API


def test_leakage_bench_prints_its_table_and_finds_the_planted_leaks():
    bench = str(PROJECT_DIR / "bench" / "leakage.py")
    out = _run_bench(bench, "--sizes", "5000", "--repeat", "1", timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Leakage guard, 51 feature columns" in out.stdout
    assert re.search(r"\|\s+5,000 \|\s+51 \|\s+5000 \| mode_0, mode_1, status \|", out.stdout), out.stdout


def test_timeseries_features_bench_prints_the_three_modes_and_the_ratios_at_a_tiny_size():
    """pipeline, the same query typed into DuckDB, and pandas rolling windows on 20 assets x 30 days."""
    out = _run_bench(
        str(PROJECT_DIR / "bench" / "timeseries_features.py"), "--assets", "20", "--days", "30", timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Time-series feature build" in out.stdout
    for mode in ("pipeline", "engine", "pandas"):
        assert re.search(rf"\|\s+20 \|\s+\d+ \|\s+{mode} \|\s+\d+\.\d+ \|", out.stdout), out.stdout[-3000:]
    assert "engine query (pipeline/engine)" in out.stdout
