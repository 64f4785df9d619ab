"""``make new-model TELEMETRY=... FAILURES=...``: what is inferred from raw files, and what is refused.

The happy path through the CLI and the DAGs is tests/dags/test_timeseries_pipeline.py; here the
inference on odd but valid files and the refusals, each naming what to give.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cmms_pm.exceptions import DataSourceError, DataValidationError, ScaffoldError
from cmms_pm.scaffold import main
from cmms_pm.spec import load_spec
from cmms_pm.timeseries.generator import generate_fleet, write_fleet
from cmms_pm.timeseries.telemetry_scaffold import scaffold_timeseries


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    fleet = generate_fleet(15, "2026-01-01", "2026-02-01", seed=2)
    root = tmp_path_factory.mktemp("raw")
    # Names a real export might use: machineID and datetime, a date-only install column.
    renamed = {"asset_id": "machineID", "timestamp": "datetime"}
    from timeseries_data import replace

    fleet = replace(
        fleet,
        **{
            name: getattr(fleet, name).rename(columns=renamed)
            for name in ("telemetry", "failures", "maintenance", "alarms", "assets")
        },
    )
    return write_fleet(fleet, root, fmt="csv")


def test_columns_are_inferred_from_their_names_types_and_values(files, tmp_path):
    result = scaffold_timeseries(
        "machines",
        telemetry=str(files["telemetry"]),
        failures=str(files["failures"]),
        maintenance=str(files["maintenance"]),
        assets=str(files["assets"]),
        horizon="7d",
        models_dir=str(tmp_path),
    )
    section = load_spec(result.spec_path).raw["timeseries"]
    assert (section["entity"], section["time"]) == ("machineID", "datetime")
    assert section["telemetry"]["signals"] == ["temperature", "vibration", "pressure", "rotation"]
    assert section["failures"]["components"] == ["comp1", "comp2", "comp3", "comp4"]
    assert section["maintenance"]["kind_column"] == "kind"
    assert section["assets"]["install_date"] == "install_date" and "model" in section["assets"]["categorical"]
    # A 7-day horizon: snapshots every 12 h (the largest cadence within an eighth of it).
    assert section["cadence"] == "12h" and section["label"]["horizon"] == "7d"
    reasons = dict(result.reasons)
    assert "entity column 'machineID'" in reasons and "snapshots every 12h" in reasons


def test_the_same_files_give_the_same_spec(files, tmp_path):
    texts = [
        scaffold_timeseries(
            "again",
            telemetry=str(files["telemetry"]),
            failures=str(files["failures"]),
            models_dir=str(tmp_path / str(i)),
        ).text
        for i in range(2)
    ]
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"entity": "serial"}, DataValidationError, "no column 'serial'; give ENTITY=<column>"),
        ({"horizon": "two days"}, ScaffoldError, "is not a duration like 24h"),
        ({"telemetry": "/no/such/folder"}, DataSourceError, "no such file or folder"),
        ({"estimator": "xgb"}, ScaffoldError, "estimator 'xgb'"),
    ],
)
def test_a_scaffold_that_cannot_work_is_refused_and_writes_nothing(files, tmp_path, change, error, message):
    arguments = {"telemetry": str(files["telemetry"]), "failures": str(files["failures"]), **change}
    with pytest.raises(error, match=message):
        scaffold_timeseries("refused", models_dir=str(tmp_path), **arguments)
    assert not (tmp_path / "refused.yaml").exists()


def test_a_telemetry_file_without_timestamps_asks_for_time(files, tmp_path):
    frame = pd.read_csv(files["telemetry"]).drop(columns=["datetime"])
    frame.to_csv(tmp_path / "no_time.csv", index=False)
    with pytest.raises(DataValidationError, match="no timestamp column found; give TIME=<column>"):
        scaffold_timeseries(
            "no_time",
            telemetry=str(tmp_path / "no_time.csv"),
            failures=str(files["failures"]),
            models_dir=str(tmp_path / "m"),
        )


def test_the_cli_refuses_a_flat_and_a_raw_form_at_once(files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "--name",
                "both",
                "--source",
                "x.csv",
                "--target",
                "y",
                "--telemetry",
                str(files["telemetry"]),
                "--failures",
                str(files["failures"]),
                "--models-dir",
                str(tmp_path),
            ]
        )
    assert "not both" in capsys.readouterr().err
