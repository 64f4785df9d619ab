"""A data batch for one pipeline run: extract (generate or read), split, write, validate.

The batch is a pure function of the run's data interval and parameters: the same interval
gives the same bytes, so a rerun or a backfill trains on exactly what the first run saw.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[2]
SYNTHETIC = "synthetic"


def data_root() -> str:
    """Root folder or URI of pipeline data (``CMMS_DATA_ROOT``, default ``<project>/.data``)."""
    return (os.environ.get("CMMS_DATA_ROOT") or str(PROJECT_DIR / ".data")).rstrip("/")


def batch_uri(root: str, dag_id: str, run_id: str) -> str:
    """Where one run's batch lives: ``<root>/<dag_id>/<run_id made path-safe>``."""
    safe_run = re.sub(r"[^A-Za-z0-9_.=-]+", "_", run_id)
    return f"{root}/{dag_id}/{safe_run}"


def prepare_batch(
    *,
    source: str,
    n_samples: int,
    target_column: str,
    interval_start: str,
    interval_end: str,
    out_uri: str,
) -> dict[str, Any]:
    """Extract the batch for a data interval, split it and write it as Parquet; return the manifest.

    ``source`` is ``"synthetic"`` or a CSV/Parquet path/URI. Returns the small, JSON-able
    manifest (URIs, row counts, digests, data version) that travels through XCom.
    """
    from cmms_pm.data import generate_telemetry, interval_seed, load_external, split_frame, write_batch

    seed = interval_seed(interval_start, interval_end)
    if source == SYNTHETIC:
        frame = generate_telemetry(n_samples, seed)
    else:
        frame = load_external(source, target_column)
    splits = split_frame(frame, seed)
    return write_batch(
        splits,
        out_uri,
        metadata={
            "source": source,
            "seed": seed,
            "data_interval_start": interval_start,
            "data_interval_end": interval_end,
            "data_version": f"{interval_start}/{interval_end}",
            "training_date": interval_end[:10],
        },
    )


def validate_batch(manifest: dict[str, Any]) -> dict[str, Any]:
    """Validate every split of a written batch; raise ``DataValidationError`` naming the problem."""
    from cmms_pm.data import read_split
    from cmms_pm.exceptions import DataValidationError
    from cmms_pm.frame_checks import validate_frame

    reports = {}
    for name, split in manifest["splits"].items():
        try:
            # Splits are a fraction of the batch; the minimum size applies to the whole batch.
            reports[name] = validate_frame(read_split(split["uri"]), min_rows=1)
        except DataValidationError as err:
            raise DataValidationError(f"{name} split of {manifest['uri']}: {err}") from err
    from cmms_pm.schema import MIN_ROWS

    total = sum(report["rows"] for report in reports.values())
    if total < MIN_ROWS:
        raise DataValidationError(
            f"batch {manifest['uri']} has {total} rows, fewer than the minimum {MIN_ROWS}"
        )
    return {"rows": total, "splits": reports}
