"""Shared helpers of the benchmarks: clean environments, timed child processes, a throwaway
PostgreSQL, a real Airflow deployment (api-server + scheduler + dag-processor, LocalExecutor),
and printing of tables.

Nothing here touches the developer's own Airflow home, MLflow store or data root: every bench
works in a temporary directory and passes its children an environment without ``AIRFLOW*``,
``MLFLOW_*`` and ``CMMS_*`` variables of the calling shell.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
BENCH_DIR = PROJECT_DIR / "bench"
DAG_ID = "predictive_maintenance_training"
VENV_BIN = str(Path(sys.executable).parent)
#: This checkout's packages, ahead of whatever the venv has installed: a venv shared between
#: worktrees holds an editable install of one of them, and a bench measures its own checkout.
SOURCE_PATH = [str(PROJECT_DIR / "include"), str(PROJECT_DIR / "plugins")]
sys.path[:0] = [path for path in SOURCE_PATH if path not in sys.path]
# tests/ for the process harness the suite shares (starting, waiting for, stopping servers).
if str(PROJECT_DIR / "tests") not in sys.path:
    sys.path.append(str(PROJECT_DIR / "tests"))

from harness import (  # noqa: E402
    PostgresCluster,
    free_port,
    http_answers,
    port_open,
    start_process,
    start_server,
    stop_processes,
    wait_until_ready,
)

# The harness's names the benches use, offered here beside the rest of the benches' helpers.
__all__ = [
    "free_port",
    "http_answers",
    "port_open",
    "start_process",
    "start_server",
    "stop_processes",
    "wait_until_ready",
]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Airflow/MLflow/project variables, venv first on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "MLFLOW_", "CMMS_", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([*SOURCE_PATH, *filter(None, [os.environ.get("PYTHONPATH")])])
    env["MLFLOW_PRINT_MODEL_URLS_ON_CREATION"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Timed:
    """Wall time, peak RSS (the child process's own) and CPU seconds (with its descendants) of one process."""

    seconds: float
    maxrss_mb: float
    returncode: int
    stdout: str
    cpu_s: float = 0.0


def timed_run(
    cmd: Sequence[str], env: dict[str, str], *, log: Path, cwd: Path | None = None, timeout: float = 7200
) -> Timed:
    """Run ``cmd`` to completion (stderr and stdout appended to ``log``); wall time and its peak RSS.

    The peak RSS is the child's own ``VmHWM``, polled while it runs. ``os.wait4``'s ``ru_maxrss``
    is only the fallback (a child that ends before the first poll): Linux carries the parent's
    peak into it across fork and exec, so it reports at least this bench process's own peak.
    """
    with open(log, "a") as sink:
        sink.write(f"\n$ {' '.join(cmd)}\n")
        sink.flush()
        out_path = log.with_suffix(".stdout")
        with open(out_path, "w") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=sink, start_new_session=True)
            deadline = started + timeout
            hwm_kb = 0
            while True:
                hwm_kb = max(hwm_kb, _vm_hwm_kb(proc.pid))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise TimeoutError(f"{cmd} still running after {timeout} s")
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text()
    with open(log, "a") as sink:
        sink.write(stdout)
    # CPU seconds (user + system, the child and its reaped descendants) barely move when other
    # work shares the cores, unlike wall time: the robust ratio on a shared machine.
    cpu = usage.ru_utime + usage.ru_stime
    return Timed(seconds, (hwm_kb or usage.ru_maxrss) / 1024, proc.returncode, stdout, cpu)


def _vm_hwm_kb(pid: int) -> int:
    """Peak RSS (``VmHWM``, kB) of a running process; 0 once it has exited or is a zombie."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def last_json(stdout: str) -> dict:
    """The last line of ``stdout`` that is a JSON object (how the bench workers report)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in output: {stdout[-500:]!r}")


# --- PostgreSQL from the local binaries (as tests/conftest.py's postgres_server) -------------


@dataclass
class Postgres:
    """A throwaway cluster in its own folder under /tmp (reachable by the ``postgres`` user)."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cmms-bench-pg-", dir="/tmp")))
    port: int = 0
    _cluster: PostgresCluster | None = None

    def start(self) -> Postgres:
        """initdb + pg_ctl start on 127.0.0.1 (as the ``postgres`` user when run as root)."""
        self._cluster = PostgresCluster(self.base).start()
        self.port = self._cluster.port
        return self

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        (self._cluster or PostgresCluster(self.base)).stop()


# --- a real Airflow deployment --------------------------------------------------------------


def airflow_env(home: Path, *, sql_alchemy_conn: str, mlflow_uri: str, data_root: Path, **extra: str) -> dict:
    """Environment of every process of one throwaway Airflow deployment."""
    return clean_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW_CONFIG=str(PROJECT_DIR / "airflow.cfg"),
        CMMS_PROJECT_DIR=str(PROJECT_DIR),
        CMMS_DATA_ROOT=str(data_root),
        CMMS_MLFLOW_HOME=str(home / "mlflow-unused"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sql_alchemy_conn,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
        AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(32),
        AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
        **extra,
    )


def setup_airflow(env: dict[str, str], log: Path) -> None:
    """scripts/setup_airflow.sh (migrate + pool) for one Airflow home; not part of any timing."""
    with open(log, "a") as sink:
        subprocess.run(
            [str(PROJECT_DIR / "scripts" / "setup_airflow.sh")],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=600,
        )


@dataclass
class Cluster:
    """api-server + scheduler + dag-processor with LocalExecutor on PostgreSQL, on 127.0.0.1."""

    home: Path
    env: dict[str, str]
    base_url: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    _token: str | None = None

    @classmethod
    def start(
        cls,
        home: Path,
        *,
        sql_alchemy_conn: str,
        mlflow_uri: str,
        data_root: Path,
        plugins: Path,
        **extra: str,
    ):
        """Start the deployment; ``extra`` environment variables reach every process (and task)."""
        port = free_port()
        env = airflow_env(
            home,
            sql_alchemy_conn=sql_alchemy_conn,
            mlflow_uri=mlflow_uri,
            data_root=data_root,
            AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
            CMMS_BENCH_TASK_STATS=str(home / "task_stats.jsonl"),
            **extra,
        )
        home.mkdir(parents=True, exist_ok=True)
        setup_airflow(env, home / "setup.log")
        cluster = cls(home=home, env=env, base_url=f"http://127.0.0.1:{port}")
        commands = {
            "api-server": ["airflow", "api-server", "--port", str(port)],
            "scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
            "dag-processor": ["airflow", "dag-processor"],
        }
        try:
            for name, command in commands.items():
                cluster.processes.append(start_process(command, env=env, log=home / f"{name}.log"))
            cluster.wait_until_ready()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def wait_until_ready(self, timeout: float = 300) -> None:
        """Wait until the api-server serves the training DAG; fail early, with the logs, if a
        component exits."""

        def dag_served() -> bool:
            return self.request("GET", f"/api/v2/dags/{DAG_ID}")[0] == 200

        name = f"Airflow at {self.base_url} ({self.home})"
        wait_until_ready(name, dag_served, processes=self.processes, timeout=timeout, interval=2)

    def token(self) -> str:
        if self._token is None:
            passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
            body = {"username": "admin", "password": passwords["admin"]}
            self._token = self.request("POST", "/auth/token", body, auth=False)[1]["access_token"]
        return self._token

    def request(self, method: str, path: str, body: dict | None = None, *, auth: bool = True):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            try:
                return err.code, json.loads(err.read() or b"null")
            except ValueError:
                return err.code, None

    def trigger(self, logical_date: str, conf: dict, dag_id: str = DAG_ID) -> str:
        status, body = self.request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": conf}
        )
        if status != 200:
            raise RuntimeError(f"trigger refused ({status}): {body}")
        return body["dag_run_id"]

    def wait_for_run(self, run_id: str, timeout: float = 7200, dag_id: str = DAG_ID) -> dict:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, run = self.request("GET", path)
            if status == 200 and run["state"] in ("success", "failed"):
                return run
            time.sleep(1)
        raise TimeoutError(f"run {run_id} not finished after {timeout} s")

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        return {ti["task_id"]: ti for ti in self.request("GET", path)[1]["task_instances"]}

    def stop(self) -> None:
        """Stop every component and what it left behind (the LocalExecutor's workers, forked from the
        scheduler's forkserver, outlive it: idle, holding ~300 MB each, until killed)."""
        stop_processes(self.processes)


# --- reporting ------------------------------------------------------------------------------


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table (Markdown-compatible) with a title line."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = [
        title,
        "",
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
    ]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        lines.append("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) against log(x): the growth exponent (None below two points)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mean_x = sum(p[0] for p in points) / len(points)
    mean_y = sum(p[1] for p in points) / len(points)
    var = sum((p[0] - mean_x) ** 2 for p in points)
    return sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / var if var else None


def machine() -> str:
    """One line naming the machine and versions the figures were taken on."""
    from importlib.metadata import version

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GB RAM, load {load:.2f}; "
        f"Python {platform.python_version()}, Airflow {version('apache-airflow')}, "
        f"MLflow {version('mlflow')}, scikit-learn {version('scikit-learn')}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
