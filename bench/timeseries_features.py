"""Time-series feature build at fleet scale: the pipeline beside the same query typed into DuckDB,
and a pandas ``groupby().rolling()`` baseline (issue 18's benchmark).

For each size (assets x one year of hourly readings: 1,000 -> 8.8M readings, 10,000 -> 88M), the
generator writes the fleet as Parquet (one file per 500 assets, bounded memory) and three modes run
in fresh processes, the same data, the same spec (cadence 1d, windows 6h/24h/7d, horizon 48h, every
aggregate, alarms, time since maintenance and failure, asset attributes):

  pipeline  what extract_data does: resolve the files (allow-list), check them (timestamps, time
            zones, duplicates and order, numbers), build the feature table with DuckDB, split it
            in time and write the train/validation/holdout Parquet batch with its manifest
  engine    the generated feature query (printed to engine.sql) typed into a bare DuckDB session
            with the same memory limit and threads: ``COPY (query) TO 'features.parquet'``
  pandas    pandas ``groupby(asset).rolling(window, on=time)`` over the readings: mean, std, min and
            max of each signal over each window, then the rows on the daily cadence. A subset of the
            features (no slope, delta, last, alarms, events, labels): a lower bound of pandas' cost

Each mode reports wall seconds, readings/s, CPU seconds and peak RSS (its own VmHWM). The ratio
table gives the pipeline's throughput over the engine's (target >= 0.8) and over pandas'.

    source scripts/env.sh
    python bench/timeseries_features.py --assets 1000,10000 [--pandas-max 1000] [--memory-limit 2GB]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import clean_env, last_json, machine, table, timed_run  # noqa: E402

MODES = ("pipeline", "engine", "pandas")
YEAR = ("2025-01-01", "2026-01-01")
AS_OF = "2026-01-01T00:00:00+00:00"


def section() -> dict:
    """The benchmark spec's timeseries section over the generated Parquet folders."""
    from cmms_pm.timeseries.generator import ALARM_CODES, COMPONENTS, SIGNALS

    def source(name: str) -> dict:
        return {"source": {"kind": "file", "path": f"fleet/{name}", "format": "parquet"}}

    return {
        "entity": "asset_id",
        "time": "timestamp",
        "telemetry": {**source("telemetry"), "signals": list(SIGNALS)},
        "failures": {**source("failures"), "component_column": "component", "components": list(COMPONENTS)},
        "maintenance": {
            **source("maintenance"),
            "component_column": "component",
            "components": list(COMPONENTS),
        },
        "alarms": {**source("alarms"), "code_column": "code", "codes": list(ALARM_CODES)},
        "assets": {**source("assets"), "categorical": ["model", "site"], "install_date": "install_date"},
        "features": {"windows": ["6h", "24h", "7d"]},
        "label": {"horizon": "48h"},
        "cadence": "1d",
    }


def spec():
    from cmms_pm.spec import build_spec

    return build_spec({"name": "bench_fleet", "registered_model": "bench_fleet", "timeseries": section()})


# --- data -----------------------------------------------------------------------------------------


def write_data(root: Path, assets: int, days: int) -> int:
    """The fleet as Parquet folders under ``root/fleet``; returns the number of readings."""
    import pandas as pd

    from cmms_pm.timeseries.generator import generate_fleet

    start = pd.Timestamp(YEAR[1]) - pd.Timedelta(days=days)
    readings = 0
    chunk = 500
    for number, first in enumerate(range(0, assets, chunk)):
        fleet = generate_fleet(
            min(chunk, assets - first), start.isoformat(), YEAR[1], seed=1000 + number, first_asset=first + 1
        )
        for name in ("telemetry", "failures", "maintenance", "alarms", "assets"):
            folder = root / "fleet" / name
            folder.mkdir(parents=True, exist_ok=True)
            getattr(fleet, name).to_parquet(
                folder / f"part-{number:05d}.parquet", index=False, row_group_size=1 << 20
            )
        readings += len(fleet.telemetry)
        del fleet
    return readings


# --- workers (each mode in its own process) ----------------------------------------------------------


def worker_pipeline(root: Path, out: Path, memory_limit: str) -> dict:
    import os

    os.environ["CMMS_DATA_ROOT"] = os.environ["CMMS_SOURCE_ROOTS"] = str(root)
    from cmms_pm.timeseries.build import epoch, file_sources
    from cmms_pm.timeseries.engine import DuckDBEngine
    from cmms_pm.timeseries.snapshot_batch import prepare_timeseries_batch

    model = spec()
    with DuckDBEngine(memory_limit=memory_limit, temp_directory=str(root)) as engine:
        sources = file_sources(model.timeseries, engine, as_of=epoch(AS_OF), read_from=0)
        manifest = prepare_timeseries_batch(
            spec=model, engine=engine, sources=sources, local=engine, source="timeseries",
            interval_start="2025-12-31T00:00:00+00:00", interval_end=AS_OF, out_uri=str(out),
        )  # fmt: skip
    return {"snapshots": manifest["rows"]}


SHARD_MARK = "-- shard\n"


def engine_sql(root: Path, memory_limit: str) -> str:
    """The generated feature queries over the same files, for a bare DuckDB session: one per shard
    of assets, as the pipeline splits them for its memory limit (a single query over 87M readings
    runs out of 2-3 GB: DuckDB's per-thread hash tables of the bucket aggregation)."""
    import os

    os.environ["CMMS_DATA_ROOT"] = os.environ["CMMS_SOURCE_ROOTS"] = str(root)
    import duckdb

    from cmms_pm.timeseries.build import epoch, file_sources
    from cmms_pm.timeseries.engine import DuckDBEngine
    from cmms_pm.timeseries.snapshot_batch import training_range
    from cmms_pm.timeseries.sql import DUCKDB, Snapshots, feature_query

    config = spec().timeseries
    as_of = epoch(AS_OF)
    ((first, readings),) = duckdb.sql(
        "SELECT min(epoch(timestamp))::BIGINT, count(*) "
        f"FROM read_parquet('{root}/fleet/telemetry/*.parquet')"
    ).fetchall()
    start, end = training_range(config, as_of=as_of, first_reading=first)
    snapshots = Snapshots(as_of=as_of, start=start, end=end)
    with DuckDBEngine(memory_limit=memory_limit) as engine:
        sources = file_sources(config, engine, as_of=as_of, read_from=0)
        shards = engine.shards(readings)
        return SHARD_MARK.join(
            feature_query(config, sources.relations, snapshots, DUCKDB, shard=(part, shards)) + "\n"
            for part in range(shards)
        )


def worker_engine(sql_file: Path, out: Path, memory_limit: str, temp: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{temp}'")
    con.execute("SET preserve_insertion_order = false")
    out.mkdir(parents=True, exist_ok=True)
    for part, sql in enumerate(sql_file.read_text().split(SHARD_MARK)):
        con.execute(f"COPY ({sql}) TO '{out}/part-{part:04d}.parquet' (FORMAT parquet, COMPRESSION zstd)")
    ((rows,),) = con.execute(f"SELECT count(*) FROM read_parquet('{out}/*.parquet')").fetchall()
    return {"snapshots": int(rows)}


def worker_pandas(root: Path, out: Path) -> dict:
    import pandas as pd

    frame = pd.read_parquet(root / "fleet" / "telemetry").sort_values(
        ["asset_id", "timestamp"], kind="stable"
    )
    signals = ["temperature", "vibration", "pressure", "rotation"]
    grouped = frame.groupby("asset_id", sort=False)
    features = {}
    for window in ("6h", "24h", "7d"):
        rolled = grouped.rolling(window, on="timestamp")[signals]
        for aggregate in ("mean", "std", "min", "max"):
            values = getattr(rolled, aggregate)()
            for signal in signals:
                features[f"{signal}_{aggregate}_{window}"] = values[signal].to_numpy()
    result = pd.DataFrame(
        {"asset_id": frame["asset_id"].to_numpy(), "timestamp": frame["timestamp"].to_numpy(), **features}
    )
    daily = result[(result["timestamp"].dt.hour == 0)]
    daily.to_parquet(out, index=False)
    return {"snapshots": int(len(daily))}


# --- the bench ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    rows_out = []
    ratios = []
    sizes = [int(n) for n in args.assets.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    for assets in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench-ts-{assets}-", dir=args.workdir))
        try:
            started = time.perf_counter()
            readings = write_data(work, assets, args.days)
            took = time.perf_counter() - started
            print(f"{assets:,} assets: {readings:,} readings written in {took:.0f} s", flush=True)
            sql_file = work / "engine.sql"
            sql_file.write_text(engine_sql(work, args.memory_limit))
            measured = {}
            for mode in modes:
                if mode == "pandas" and assets > args.pandas_max:
                    rows_out.append(
                        [
                            assets,
                            readings,
                            mode,
                            None,
                            None,
                            None,
                            None,
                            f"skipped (> {args.pandas_max} assets)",
                        ]
                    )
                    continue
                out = work / f"out-{mode}"
                command = [sys.executable, __file__, "--worker", mode, "--root", str(work), "--out", str(out),
                           "--memory-limit", args.memory_limit]  # fmt: skip
                result = timed_run(command, clean_env(), log=work / f"{mode}.log", timeout=args.timeout)
                if result.returncode != 0:
                    rows_out.append(
                        [assets, readings, mode, None, None, None, round(result.maxrss_mb), "failed"]
                    )
                    print((work / f"{mode}.log").read_text()[-3000:], file=sys.stderr)
                    continue
                report = last_json(result.stdout)
                measured[mode] = result.seconds
                rows_out.append(
                    [assets, readings, mode, round(result.seconds, 1), round(readings / result.seconds),
                     round(result.cpu_s, 1), round(result.maxrss_mb), f"{report['snapshots']:,} snapshots"]
                )  # fmt: skip
                print(rows_out[-1], flush=True)
            if "pipeline" in measured:
                engine = measured.get("engine")
                pandas = measured.get("pandas")
                ratios.append(
                    [assets, readings, round(engine / measured["pipeline"], 2) if engine else None,
                     round(pandas / measured["pipeline"], 2) if pandas else None]
                )  # fmt: skip
        finally:
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    print()
    print(machine())
    print(
        f"DuckDB memory limit {args.memory_limit}; one year of hourly readings per asset ({args.days} days)"
    )
    print()
    print(table(
        "Time-series feature build",
        ["assets", "readings", "mode", "seconds", "readings/s", "CPU s", "peak RSS MB", "output"],
        rows_out,
    ))  # fmt: skip
    if ratios:
        print(table(
            "Throughput of the pipeline relative to (target: engine >= 0.8)",
            ["assets", "readings", "engine query (pipeline/engine)", "pandas (pipeline/pandas)"],
            ratios,
        ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", default="1000,10000", help="comma-separated fleet sizes")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--pandas-max", type=int, default=1000, help="largest fleet pandas is run on")
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--workdir", default=None, help="where the data is written (default: the temp dir)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        root, out = Path(args.root), Path(args.out)
        if args.worker == "pipeline":
            report = worker_pipeline(root, out, args.memory_limit)
        elif args.worker == "engine":
            report = worker_engine(root / "engine.sql", out, args.memory_limit, root)
        else:
            report = worker_pandas(root, out)
        print(json.dumps(report))
        return
    run(args)


if __name__ == "__main__":
    main()
