"""Helpers of the time-series tests: raw tables written as files under a data root, and the spec
that reads them. On ``sys.path`` through pytest's ``pythonpath`` (``from timeseries_data import ...``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd

from cmms_pm.timeseries.generator import ALARM_CODES, COMPONENTS, SIGNALS, Fleet, write_fleet


def fleet_section(
    folder: str, *, fmt: str = "csv", partitioned: bool = False, **overrides: Any
) -> dict[str, Any]:
    """The ``timeseries`` section of a spec reading the generator's files under ``folder`` (a path
    relative to the data root)."""
    suffix = f".{fmt}"
    section: dict[str, Any] = {
        "entity": "asset_id",
        "time": "timestamp",
        "telemetry": {
            "source": {"kind": "file", "path": f"{folder}/telemetry" + ("" if partitioned else suffix)},
            "signals": list(SIGNALS),
        },
        "failures": {
            "source": {"kind": "file", "path": f"{folder}/failures{suffix}"},
            "component_column": "component",
            "components": list(COMPONENTS),
        },
        "maintenance": {
            "source": {"kind": "file", "path": f"{folder}/maintenance{suffix}"},
            "component_column": "component",
            "components": list(COMPONENTS),
            "kind_column": "kind",
        },
        "alarms": {
            "source": {"kind": "file", "path": f"{folder}/alarms{suffix}"},
            "code_column": "code",
            "codes": list(ALARM_CODES),
        },
        "assets": {
            "source": {"kind": "file", "path": f"{folder}/assets{suffix}"},
            "categorical": ["model"],
            "install_date": "install_date",
        },
        "label": {"horizon": "48h"},
        "cadence": "6h",
    }
    for key, value in overrides.items():
        section[key] = value
    return section


def spec_of(section: dict[str, Any], name: str = "fleet_test", **top: Any):
    from cmms_pm.spec import build_spec

    return build_spec({"name": name, "registered_model": name, "timeseries": copy.deepcopy(section), **top})


def write(fleet: Fleet, root: Path, folder: str, **options: Any) -> dict[str, Path]:
    return write_fleet(fleet, root / folder, **options)


def replace(fleet: Fleet, **tables: pd.DataFrame) -> Fleet:
    parts = {
        name: getattr(fleet, name) for name in ("telemetry", "failures", "maintenance", "alarms", "assets")
    }
    parts.update(tables)
    return Fleet(**parts)
