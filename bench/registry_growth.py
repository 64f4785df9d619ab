"""How every registry read grows with a model's age: N versions, M history events.

A year of nightly runs leaves a registered model with ~365 versions and 1,000+ history events
(issue 20's target: every read below ≤ 200 ms at day 365). This bench builds such models
directly through the package's own write path — ``registry.register_version``, then
``registry.transition`` / ``promote`` / ``reject`` / ``record_approval`` (snapshot → plan → apply,
one history event each), no DAG runs — at N = 10, 90 and 365 versions (``--events`` events per
version: staging, the approval answer, the decision, …), and times:

* the write path: ``snapshot`` (``registry.read_snapshot``: the lean one every write path reads;
  ``retention.prune_snapshot``: every version not pruned, what the nightly retention step reads,
  after a retention of 5 archived versions), ``plan`` (the pure planner),
  ``apply`` (a tags-only request: its writes and one history event), ``history append``;
* the history: the first page, a late page (reached by paging), and one version's events;
* the Models page's read models (``model_overview.model_summary``, the list row;
  ``version_detail`` of an old version and of the champion), as the API routes call them;
* ``GET …/production`` uncached (``api._registry_mark`` + ``api._production_answer``: what a
  cache miss of the route does).

Each is timed ``--repeat`` times, in rounds that visit every size in turn (a busy machine weighs on
all sizes alike), against a real MLflow on SQLite (``--server``: through an ``mlflow server`` on
127.0.0.1 over the same kind of store, as production runs it); the table gives the median per N,
the ratio of the largest N to the smallest, and the growth exponent, and the write path's average
cost per nightly version while the models were built. It runs against older checkouts too (a read
they lack shows ``-``), for a before column: copy this file into the older checkout's ``bench/``
and run it there (``bench/lib.py`` puts its own checkout's sources first on ``sys.path``, so
``PYTHONPATH`` alone does not select the code measured)::

    python bench/registry_growth.py [--sizes 10,90,365] [--events 3] [--repeat 15] [--server]

It also pages through the largest model's whole history (``history.read_page``) and checks it
is complete, ordered and without duplicates.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib import (
    VENV_BIN,
    clean_env,
    free_port,
    http_answers,
    loglog_slope,
    machine,
    start_server,
    stop_processes,
    table,
)

TARGET_MS = 200.0
METRICS = ("f1", "precision", "recall", "roc_auc", "pr_auc", "accuracy", "brier", "log_loss")
SPEC = "predictive_maintenance"  # the spec the runs say trained them (provenance, for pruning)
KEEP_ARCHIVED = 5


def _run_tags(number: int) -> dict[str, str]:
    return {
        "model_spec": SPEC,
        "airflow.dag_id": f"{SPEC}_training",
        "airflow.run_id": f"scheduled__2026-01-01T02:00:00+00:00-{number}",
        "airflow.run_url": f"http://127.0.0.1:8080/dags/{SPEC}_training/runs/{number}",
        "estimator": "random_forest",
    }


def _version_tags(number: int) -> dict[str, str]:
    return {
        "data_version": f"2026-01-01/{number}",
        "data_digest": f"{number:064x}",
        "estimator": "random_forest",
        "airflow.run_url": f"http://127.0.0.1:8080/dags/{SPEC}_training/runs/{number}",
        **{f"validation_{m}": "0.91" for m in ("f1", "precision", "recall", "roc_auc", "pr_auc", "accuracy")},
        "decision_reason": "challenger beats the champion",
        "champion_f1": "0.90",
        "champion_version": str(number - 1) if number > 1 else "",
        "validation_status": "passed",
        "drift_status": "ok",
        "drift_max_psi": "0.03",
        "drift_threshold": "0.25",
    }


def build(client: Any, name: str, versions: int, events: int, artifacts: str) -> dict[str, Any]:
    """``versions`` nightly versions of ``name`` through the package's write path, ``events`` history
    events each: staged, (events - 2) approval answers, then promoted (every third) or rejected."""
    from mlflow.entities import Metric, Param

    from cmms_mlflow.registry import model_registry
    from cmms_pm.registry_plan import Request

    experiment = client.create_experiment(f"{name}_runs", artifact_location=f"{artifacts}/{name}")
    champion: str | None = None
    started = time.perf_counter()
    for number in range(1, versions + 1):
        run = client.create_run(experiment, tags=_run_tags(number))
        run_id = run.info.run_id
        now = run.info.start_time
        client.log_batch(
            run_id,
            metrics=[Metric(f"{split}_{m}", 0.9 - number / 10_000, now, 0) for m in METRICS
                     for split in ("validation", "holdout")],
            params=[Param("estimator", "random_forest"), Param("n_estimators", "100"),
                    Param("max_depth", "10")],
        )  # fmt: skip
        client.set_terminated(run_id)
        version = str(
            model_registry.register_version(
                client, name=name, source=f"{run.info.artifact_uri}/model", run_id=run_id,
                description="bench", tags=_version_tags(number),
            ).version
        )  # fmt: skip
        at = f"2026-01-01T02:{number % 60:02d}:00+00:00"
        model_registry.transition(
            client, name, version, "Staging", from_stages=("None",), actor="bench", at=at,
            reason="challenger", key=f"s{version}",
        )  # fmt: skip
        for extra in range(max(events - 2, 0)):
            model_registry.execute(
                client,
                name,
                Request(kind="approval", version=version, actor="bench", at=at, reason="approved by bench",
                        key=f"a{version}x{extra}", tags={"approval_status": "approved"}),
                lock=None,
            )  # fmt: skip
        if number % 3 == 1 or champion is None:
            model_registry.promote(
                client, name, version, expected_champion=champion, lock_dir=None,
                audit={"promoted_by": "bench", "promoted_at": at, "promotion_reason": "bench"},
                key=f"p{version}",
            )  # fmt: skip
            champion = version
        else:
            model_registry.reject(client, name, version, reason="below the champion", lock_dir=None, at=at,
                            key=f"r{version}")  # fmt: skip
    index_for_pruning(client, name)
    return {"champion": champion, "seconds": time.perf_counter() - started}


def index_for_pruning(client: Any, name: str) -> None:
    """The nightly retention step of a year with ``keep_archived_versions: 5``: the model's retention
    index is built and the older archived versions are pruned (they have no artifacts here: tags only)."""
    import tempfile

    from cmms_pm.spec import PROJECT_DIR, load_spec

    retention = _optional("cmms_mlflow.registry.pruning")
    if not hasattr(retention, "prune_snapshot"):  # an older checkout: no retention index to build
        return
    spec = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
    with tempfile.TemporaryDirectory() as locks:
        retention.prune_versions(client, name, spec=spec, keep=KEEP_ARCHIVED, lock_dir=Path(locks),
                                 local_root=None, actor="bench", at="t", key=f"index{name}")  # fmt: skip


def _optional(module: str) -> Any:
    """``module``, or None in an older checkout that does not have it (the bench's before column)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def last_page_token(client: Any, name: str, limit: int) -> tuple[str | None, int]:
    """The token of the history's last page of ``limit`` events and how many pages there are."""
    from cmms_mlflow.registry import history

    token, last, pages = None, None, 0
    while True:
        _, following = history.read_page(client, name, limit=limit, page_token=token)
        pages += 1
        if following is None:
            return last if pages > 1 else None, pages
        last, token = token, following


def page_through(client: Any, name: str, limit: int) -> dict[str, Any]:
    """Every event of the history, page by page: count, duplicates, order."""
    from cmms_mlflow.registry import history

    seqs: list[int] = []
    token = None
    pages = 0
    while True:
        events, token = history.read_page(client, name, limit=limit, page_token=token)
        pages += 1
        seqs.extend(int(e["seq"]) for e in events)
        if token is None:
            break
    return {
        "events": len(seqs),
        "pages": pages,
        "duplicates": len(seqs) - len(set(seqs)),
        "ordered": seqs == sorted(seqs, reverse=True),
        "complete": sorted(seqs) == list(range(1, len(seqs) + 1)),
    }


def reads(client: Any, hook: Any, name: str, champion: str) -> dict[str, Callable[[], Any] | None]:
    """Each read (and write) of the table, for the model ``name``, as a call to time (None: this
    checkout does not have it — the bench also runs against older checkouts for the before column)."""
    import inspect

    from cmms_mlflow.registry import history, model_registry
    from cmms_mlflow.www import model_overview, routes
    from cmms_pm import registry_plan

    retention = _optional("cmms_mlflow.registry.pruning")
    from cmms_pm.registry_plan import Request

    snapshot = model_registry.read_snapshot(client, name)
    oldest = min(snapshot.versions, key=int)
    newest = max(snapshot.versions, key=int)
    counter = iter(range(10**9))

    def apply() -> None:
        key = f"bench{next(counter)}x{time.time_ns()}"
        request = Request(kind="approval", version=newest, actor="bench", at="t", reason="bench", key=key,
                          tags={"bench_note": key})  # fmt: skip
        model_registry.execute(client, name, request, lock=None)  # what every write path does

    def append() -> None:
        key = f"append{next(counter)}x{time.time_ns()}"
        history.append(client, name, {"key": key, "type": "approval", "model": name, "version": newest,
                                      "actor": "bench", "at": "t", "reason": "bench"})  # fmt: skip

    token, _ = last_page_token(client, name, 50)

    def production() -> None:
        mark, model = routes._registry_mark(client, name)
        routes._production_answer(client, name, model)

    request = Request(kind="promotion", version=newest, stage="Production", key="plan-only")
    lean = "versions" in inspect.signature(model_registry.read_snapshot).parameters
    return {
        "snapshot (every write path)": (
            (lambda: model_registry.read_snapshot(client, name, versions=[newest]))
            if lean
            else (lambda: model_registry.read_snapshot(client, name))
        ),
        f"snapshot (pruning, keep {KEEP_ARCHIVED} archived)": (
            (lambda: retention.prune_snapshot(client, name)) if hasattr(retention, "prune_snapshot") else None
        ),
        "plan (pure)": lambda: registry_plan.plan(snapshot, request),
        "apply (snapshot+plan+write+event)": apply,
        "history append": append,
        "history first page (50)": lambda: history.read_page(client, name, limit=50),
        "history last page (50)": lambda: history.read_page(client, name, limit=50, page_token=token),
        "history of one version": lambda: history.read(client, name, limit=100, version=oldest),
        "Models page: list row": lambda: model_overview.model_summary(client, hook, name),
        "Models page: old version": lambda: model_overview.version_detail(client, hook, name, oldest),
        "Models page: champion": lambda: model_overview.version_detail(client, hook, name, champion),
        "GET production (uncached)": production,
    }


def measure_rounds(
    calls: dict[int, dict[str, Callable[[], Any] | None]], repeat: int
) -> dict[int, dict[str, float | None]]:
    """Median milliseconds of every call, timed in ``repeat`` rounds that each visit every size in turn,
    so a machine whose load changes during the run weighs on every size alike."""
    times: dict[int, dict[str, list[float]]] = {n: {label: [] for label in c} for n, c in calls.items()}
    for by_label in calls.values():  # warm-up
        for fn in by_label.values():
            if fn is not None:
                fn()
    for _ in range(repeat):
        for n, by_label in calls.items():
            for label, fn in by_label.items():
                if fn is None:
                    continue
                began = time.perf_counter()
                fn()
                times[n][label].append((time.perf_counter() - began) * 1000)
    return {
        n: {label: statistics.median(values) if values else None for label, values in by_label.items()}
        for n, by_label in times.items()
    }


def start_mlflow_server(work: Path, store: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(
        "mlflow server",
        [f"{VENV_BIN}/mlflow", "server", "--backend-store-uri", store, "--default-artifact-root",
         (work / "server-artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        http_answers(f"{url}/health", statuses={200}), env=clean_env(), log=work / "mlflow-server.log",
        timeout=120,
    )  # fmt: skip
    return proc, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="10,90,365", help="versions per model, comma-separated")
    parser.add_argument("--events", type=int, default=3, help="history events per version (>= 2)")
    parser.add_argument("--repeat", type=int, default=15, help="timed calls per read (median reported)")
    parser.add_argument("--server", action="store_true", help="through an mlflow server on 127.0.0.1")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="cmms-bench-registry-"))
    store = f"sqlite:///{work / 'mlflow.db'}"
    artifacts = (work / "artifacts").as_uri()
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "AIRFLOW_CONN_"))]:
        del os.environ[key]
    os.environ["MLFLOW_PRINT_MODEL_URLS_ON_CREATION"] = "false"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    import logging

    logging.basicConfig(level=logging.WARNING)
    for noisy in ("cmms_mlflow", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server = None
    print(f"Machine: {machine()}\nWork folder {work}", flush=True)
    try:
        uri = store
        if args.server:
            from mlflow import MlflowClient

            MlflowClient(tracking_uri=store).search_experiments(max_results=1)  # schema once
            server, uri = start_mlflow_server(work, store)
        os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({"conn_type": "mlflow", "host": uri})
        from mlflow import MlflowClient

        from cmms_mlflow.hooks.mlflow_hook import MlflowHook

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        hook = MlflowHook()
        built: dict[int, dict[str, Any]] = {}
        for n in sizes:
            name = f"growth_{n}"
            built[n] = build(client, name, n, args.events, artifacts)
            print(f"built {name}: {n} versions, {n * args.events} events in {built[n]['seconds']:.0f} s "
                  f"({1000 * built[n]['seconds'] / n:.0f} ms per nightly version)", flush=True)  # fmt: skip
        calls = {n: reads(client, hook, f"growth_{n}", built[n]["champion"]) for n in sizes}
        results = measure_rounds(calls, args.repeat)
        largest, smallest = max(sizes), min(sizes)
        rows = []
        for label in results[largest]:
            values = [results[n][label] for n in sizes]
            if any(v is None for v in values):
                rows.append([label, *values, None, None, "-"])
                continue
            slope = loglog_slope([float(n) for n in sizes], values)
            ratio = values[-1] / values[0] if values[0] else None
            verdict = "ok" if values[-1] <= TARGET_MS else "OVER"
            rows.append([label, *values, ratio, slope, verdict])
        per_version = [1000 * built[n]["seconds"] / n for n in sizes]
        rows.append(["write path per nightly version (build)", *per_version, per_version[-1] / per_version[0],
                     loglog_slope([float(n) for n in sizes], per_version), "-"])  # fmt: skip
        headers = ["read (median ms)", *(f"N={n} (M={n * args.events})" for n in sizes),
                   f"{largest}/{smallest}", "exponent", f"<= {TARGET_MS:.0f} ms"]  # fmt: skip
        where = "an mlflow server (HTTP)" if args.server else "SQLite, in process"
        print()
        print(table(f"Registry reads by model age, MLflow on {where}", headers, rows))
        paging = page_through(client, f"growth_{largest}", 50)
        print(
            f"History of growth_{largest} paged 50 at a time: {paging['events']} events in {paging['pages']} "
            f"pages, duplicates {paging['duplicates']}, ordered {paging['ordered']}, complete "
            f"{paging['complete']}"
        )
        if args.json:
            args.json.write_text(json.dumps({"sizes": sizes, "results": results, "paging": paging}, indent=2))
        over = [r[0] for r in rows if r[-1] == "OVER"]
        ok = not over and paging["duplicates"] == 0 and paging["ordered"] and paging["complete"]
        return 0 if ok else 3
    finally:
        if server is not None:
            stop_processes([server])
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
