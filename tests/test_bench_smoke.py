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


class _Early:
    """The two longest benches, started when this module starts and run beside the others (each
    spends most of its time waiting on Airflow's loops or its own processes): about 1.5 min less
    of the suite's wall time. A test whose bench was not started early (run alone) runs it then."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: dict[str, tuple[subprocess.Popen, float]] = {}

    def start(self, name: str, args: tuple[str, ...], timeout: float) -> None:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        out, err = (open(self.folder / f"{name}.{kind}", "w") for kind in ("out", "err"))  # noqa: SIM115
        with out, err:
            process = subprocess.Popen(
                [sys.executable, *args], stdout=out, stderr=err, text=True, env=env, cwd=PROJECT_DIR,
                start_new_session=True,
            )  # fmt: skip
        self.started[name] = (process, timeout)

    def result(self, name: str, args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess:
        if name not in self.started:
            return _run_bench(*args, timeout=timeout)
        process, _ = self.started.pop(name)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            raise
        out, err = ((self.folder / f"{name}.{kind}").read_text() for kind in ("out", "err"))
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def stop(self) -> None:
        for process, _ in self.started.values():
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait()


def _year_args(csv: Path) -> tuple[str, ...]:
    return (
        str(PROJECT_DIR / "bench" / "simulated_year.py"), "--nights", "3", "--rows", "1000",
        "--out", str(csv), "--reads-again",
    )  # fmt: skip


SCORING_ARGS = (
    str(PROJECT_DIR / "bench" / "scoring_throughput.py"), "--sizes", "2000", "--train-rows", "3000",
)  # fmt: skip
#: test name → the bench started early for it (when the test is selected).
EARLY = {
    "test_scoring_throughput_bench_prints_dags_test_and_scheduler_tables_at_a_tiny_size": "scoring",
    "test_simulated_year_bench_prints_its_tables_and_one_full_csv_row_per_night": "year",
}


@pytest.fixture(scope="module")
def early(request, tmp_path_factory):
    runner = _Early(tmp_path_factory.mktemp("early-benches"))
    selected = {item.name for item in request.session.items if item.module is request.module}
    if "scoring" in {EARLY[n] for n in selected if n in EARLY}:
        runner.start("scoring", SCORING_ARGS, 900)
    if "year" in {EARLY[n] for n in selected if n in EARLY}:
        runner.start("year", _year_args(runner.folder / "year.csv"), 600)
    yield runner
    runner.stop()


@pytest.fixture(autouse=True)
def _start_early_benches(early):
    """Every test of the module asks for ``early``, so the long benches start with the first one."""


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
    """One of its three DAGs (each is one more ``airflow dags test`` process, ~10 s here)."""
    bench = str(PROJECT_DIR / "bench" / "dags_test_floor.py")
    out = _run_bench(bench, "--repeat", "1", "--dags", "bench_noop_9", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"^\|\s+bench_noop_9 \|\s+\d+\.\d+ \|", out.stdout, re.M), out.stdout[-2000:]
    assert "bench_noop_1 |" not in out.stdout  # only what was asked
    refused = _run_bench(bench, "--dags", "bench_noop_2", timeout=60)
    assert refused.returncode == 2 and "--dags: bench_noop_2; choose from" in refused.stderr, refused.stderr


def test_timed_run_reports_the_child_peak_not_the_benchs_own(tmp_path):
    """Linux carries a parent's peak RSS into a child across fork and exec (``ru_maxrss``): the
    bench must read the child's own peak, or every small step reports the bench's size."""
    sys.path.insert(0, str(PROJECT_DIR / "bench"))
    from lib import clean_env, timed_run

    ballast = bytearray(400 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # resident, not just reserved
    child = "import time; b = bytearray(40 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)"
    out = timed_run([sys.executable, "-c", child], clean_env(), log=tmp_path / "run.log")
    del ballast
    assert out.returncode == 0
    assert 40 < out.maxrss_mb < 300, out.maxrss_mb


@pytest.mark.services  # PostgreSQL and an Airflow deployment / model servers
def test_scoring_throughput_bench_prints_dags_test_and_scheduler_tables_at_a_tiny_size(early):
    """bare vs ``airflow dags test`` vs a real scheduler (after its warm-up run) on 2,000 rows."""
    out = early.result("scoring", SCORING_ARGS, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Scoring throughput (dags-test)" in out.stdout
    assert "Scoring throughput (scheduler)" in out.stdout
    assert "warm-up run (2000 rows, untimed)" in out.stdout
    scheduler_table = out.stdout.split("Scoring throughput (scheduler)")[1]
    assert "|    2000 |" in scheduler_table or "| 2000 |" in scheduler_table
    assert "predict" in scheduler_table  # the operator's phases came back through the REST API


@pytest.mark.slow
def test_tuning_quality_bench_prints_tuned_against_untuned_f1_at_a_tiny_size():
    """bench/tuning.py's quality part (no Airflow): one seed, 2,000 rows, 4 trials per booster."""
    out = _run_bench(
        str(PROJECT_DIR / "bench" / "tuning.py"), "--part", "quality", "--rows", "2000", "--seeds", "0",
        "--quality-trials", "4", "--max-rounds", "100", timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Holdout F1 at threshold 0.5" in out.stdout
    for row in ("random_forest (defaults)", "xgboost (tuned, 4 trials)", "lightgbm (tuned, 4 trials)"):
        assert row in out.stdout
    assert re.search(r"xgboost tuned vs random forest: F1 \d\.\d{3} vs \d\.\d{3}", out.stdout)


@pytest.mark.services  # PostgreSQL and an Airflow deployment / model servers
def test_predict_latency_bench_prints_both_servers_and_the_ratios_at_a_tiny_size():
    """Our predict route vs ``mlflow models serve`` of the same champion, 4 clients, 1 and 10 rows."""
    out = _run_bench(
        str(PROJECT_DIR / "bench" / "predict_latency.py"),
        "--requests", "8", "--clients", "4", "--sizes", "1,10", "--train-rows", "2000",
        timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = out.stdout.split("Predict, 4 concurrent clients")[1]
    for size in ("1", "10"):
        for server in ("ours (Airflow api-server)", "mlflow models serve", "ours / MLflow"):
            assert re.search(rf"^\|\s+{size} \|\s+{re.escape(server)} \|", table, re.M), table
    # Every request of both servers answered 200 (the errors column).
    failed = r"\| (ours \(Airflow api-server\)|mlflow models serve) \|\s+\d+ \|\s+[1-9]"
    assert not re.search(failed, table), table


def test_leakage_bench_prints_its_table_and_finds_the_planted_leaks():
    bench = str(PROJECT_DIR / "bench" / "leakage.py")
    out = _run_bench(bench, "--sizes", "5000", "--repeat", "1", timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Leakage guard, 51 feature columns" in out.stdout
    assert re.search(r"\|\s+5,000 \|\s+51 \|\s+5000 \| mode_0, mode_1, status \|", out.stdout), out.stdout


def test_registry_growth_bench_prints_every_read_and_pages_the_history_whole():
    bench = str(PROJECT_DIR / "bench" / "registry_growth.py")
    out = _run_bench(bench, "--sizes", "3,6", "--repeat", "2", timeout=600)
    # 0: every read within the target; 3: measured, over it (timings are not asserted here).
    assert out.returncode in (0, 3), out.stdout[-3000:] + out.stderr[-3000:]
    assert "Registry reads by model age" in out.stdout
    for read in ("snapshot (every write path)", "history last page (50)", "GET production (uncached)"):
        assert read in out.stdout
    assert re.search(r"History of growth_6 paged 50 at a time: \d+ events in 1 pages, duplicates 0, "
                     r"ordered True, complete True", out.stdout), out.stdout[-2000:]  # fmt: skip


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


def test_issue_19_benches_print_the_decision_and_the_reasons_tables_at_a_tiny_size():
    decision = _run_bench(
        str(PROJECT_DIR / "bench" / "decision_quality.py"), "--seeds", "1", "--rows", "3000",
        "--synthetic-rows", "3000", "--estimators", "random_forest", timeout=600,
    )  # fmt: skip
    assert decision.returncode == 0, decision.stderr[-3000:]
    assert re.search(r"^\|\s+ai4i \|\s+random_forest \|", decision.stdout, re.M), decision.stdout[-2000:]
    assert "F1 @ chosen (after)" in decision.stdout and "Brier after" in decision.stdout
    reasons = _run_bench(
        str(PROJECT_DIR / "bench" / "reasons_cost.py"), "--sizes", "2000", "--train-rows", "3000",
        "--estimators", "logistic_regression,hist_gradient_boosting", timeout=600,
    )  # fmt: skip
    assert reasons.returncode == 0, reasons.stderr[-3000:]
    assert re.search(r"^\|\s+hist_gradient_boosting \|\s+2000 \|", reasons.stdout, re.M), reasons.stdout[
        -2000:
    ]


@pytest.mark.slow
def test_simulated_year_bench_prints_its_tables_and_one_full_csv_row_per_night(early):
    """Three nights through ``dag.test()`` in one process: a plain night, a rejected challenger, a
    drifted night rolled back after it (~50 s)."""
    import pandas as pd

    csv = early.folder / "year.csv"
    out = early.result("year", _year_args(csv), timeout=600)
    # 0: every target met; 3: measured, one over it (timings are not asserted here).
    assert out.returncode in (0, 3), out.stdout[-3000:] + out.stderr[-3000:]
    for title in ("Time per night", "Registry reads after the night", "Disk (MB) by night"):
        assert title in out.stdout, out.stdout[-3000:]
    for read in ("snapshot (every write path)", "Models page: champion", "GET production (uncached)"):
        assert re.search(rf"^\|\s+{re.escape(read)} \|\s+\d+\.\d+ \|\s+\d+\.\d+ \|", out.stdout, re.M), read
    paged = (
        r"History of \w+ paged 50 at a time .*: \d+ events in 1 pages"
        r", duplicates 0, ordered True, complete True"
    )
    assert re.search(paged, out.stdout), out.stdout[-2000:]
    again = out.stdout.split("Registry reads on the stores of night 3, timed again")[1]
    assert re.search(r"^\|\s+snapshot \(every write path\) \|\s+\d+\.\d+ \|\s+\d+\.\d+ \|", again, re.M)
    frame = pd.read_csv(csv, keep_default_na=False)
    assert list(frame["night"]) == [1, 2, 3]
    assert not (frame == "").any().any(), frame.T
    assert list(frame["decision"]) == ["promoted", "rejected", "promoted"]
    assert list(frame["events"]) == ["none", "rejected", "drift+rollback"]
    assert re.search(r"^\|\s+CPU s \|\s+\d+\.\d+ \|", out.stdout, re.M), out.stdout[-3000:]
    assert frame["rollback_s"].iloc[2] > 0 and (frame["versions"] == [1, 2, 3]).all()
    assert frame["drift_max_psi"].iloc[2] > 0.25 > frame["drift_max_psi"].iloc[1], frame["drift_max_psi"]
