"""CI smoke of the benchmarks: they run and print their tables (timings are not asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]


def test_parse_cost_bench_prints_a_row_per_dag_file():
    out = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "bench" / "parse_cost.py"), "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    for dag_file in (PROJECT_DIR / "dags").glob("*.py"):
        assert dag_file.name in out.stdout
    assert "baseline (minimal DAG)" in out.stdout
