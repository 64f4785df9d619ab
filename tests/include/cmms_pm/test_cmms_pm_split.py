"""Forward-in-time and grouped splits (``cmms_pm.timeseries.split``) for flat tables and their specs.

A flat file with a timestamp column may split by time (``split: {strategy: time}``), one whose id
repeats across rows by group; ``make new-model`` proposes each and says why; a spec without
``split`` keeps today's random split, bytes and all.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cmms_pm.batch import prepare_batch, split_params, split_periods
from cmms_pm.exceptions import DataValidationError, SpecError
from cmms_pm.scaffold import scaffold
from cmms_pm.spec import load_spec
from cmms_pm.timeseries.split import entity_groups, group_split_frame, time_boundaries, time_split_frame

DAY = 86400


def test_time_boundaries_train_first_then_purged_gaps_then_validation_and_holdout():
    bounds = time_boundaries(0, 100 * DAY, validation=0.15, holdout=0.15, gap=2 * DAY)
    assert bounds.validation_start - bounds.train_end == 2 * DAY
    assert bounds.holdout_start - bounds.validation_end == 2 * DAY
    usable = 96 * DAY
    assert bounds.train_end == round(0.7 * usable)
    assert bounds.validation_end - bounds.validation_start == round(0.15 * usable)
    record = bounds.record()
    assert record["train_end"] == "1970-03-09T04:48:00+00:00" and record["gap_hours"] == 48
    with pytest.raises(DataValidationError, match="shorter than the two purged gaps"):
        time_boundaries(0, 3 * DAY, validation=0.15, holdout=0.15, gap=2 * DAY)


def test_entity_groups_are_disjoint_complete_and_seeded():
    entities = [f"A{i}" for i in range(40)]
    groups = entity_groups(entities, seed=3, validation=0.15, holdout=0.15)
    assert set(groups) == set(entities) and set(groups.values()) == {"train", "validation", "holdout"}
    assert groups == entity_groups(list(reversed(entities)), seed=3, validation=0.15, holdout=0.15)
    assert groups != entity_groups(entities, seed=4, validation=0.15, holdout=0.15)
    with pytest.raises(DataValidationError, match="at least 3 entities"):
        entity_groups(["a", "b"], seed=1, validation=0.15, holdout=0.15)


def _machines(rows: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    machine = rng.integers(1, 41, rows)
    stamp = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.integers(0, 90 * 24, rows)), unit="h"
    )
    torque = rng.normal(40, 5, rows) + machine * 0.2
    failed = (torque + rng.normal(0, 3, rows) > 52).astype(int)
    return pd.DataFrame(
        {"machineID": machine, "datetime": stamp.strftime("%Y-%m-%d %H:%M:%S"), "torque": torque.round(2),
         "volt": rng.normal(170, 10, rows).round(1), "failure": np.where(failed, "yes", "no")}
    )  # fmt: skip


def test_time_split_frame_keeps_time_order_and_gaps():
    frame = _machines()
    splits, record = time_split_frame(
        frame, time_column="datetime", validation=0.15, holdout=0.15, gap_hours=24, target="failure"
    )
    when = {name: pd.to_datetime(part["datetime"], utc=True) for name, part in splits.items()}
    assert when["train"].max() < pd.Timestamp(record["train_end"])
    assert when["validation"].min() >= pd.Timestamp(record["validation_start"])
    assert when["holdout"].min() >= pd.Timestamp(record["holdout_start"])
    assert pd.Timestamp(record["validation_start"]) - pd.Timestamp(record["train_end"]) == pd.Timedelta(
        hours=24
    )
    assert sum(len(p) for p in splits.values()) + record["rows_in_gaps"] == len(frame)
    bad = frame.assign(datetime=frame["datetime"].where(frame.index % 100 != 0, "not a time"))
    with pytest.raises(DataValidationError, match="30 values do not parse"):
        time_split_frame(bad, time_column="datetime", validation=0.15, holdout=0.15, gap_hours=0)


def test_group_split_frame_puts_every_row_of_an_entity_in_one_part():
    splits, record = group_split_frame(
        _machines(), entity_column="machineID", validation=0.15, holdout=0.15, seed=1, target="failure"
    )
    owners = [set(part["machineID"]) for part in splits.values()]
    assert not (owners[0] & owners[1]) and not (owners[0] & owners[2]) and not (owners[1] & owners[2])
    assert record == {"strategy": "group", "entity_column": "machineID"}
    assert split_periods(record) == "group split by 'machineID'"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "incoming").mkdir(parents=True)
    monkeypatch.setenv("CMMS_DATA_ROOT", str(root))
    return root


def test_the_scaffold_proposes_a_time_split_for_a_file_with_timestamps_and_batches_follow_it(
    data_root, tmp_path
):
    _machines().to_csv(data_root / "incoming" / "machines.csv", index=False)
    result = scaffold(
        "machines", data_root / "incoming" / "machines.csv", "failure", models_dir=tmp_path / "m"
    )
    assert result.split == {"strategy": "time", "time_column": "datetime"}
    assert (
        "'datetime' holds timestamps" in result.split_reason
        and "entity_column: 'machineID'" in result.split_reason
    )
    spec = load_spec(result.spec_path)
    assert spec.split["strategy"] == "time" and "datetime" in spec.drop
    frame = pd.read_csv(data_root / "incoming" / "machines.csv")
    manifest = prepare_batch(
        spec=spec, frame=frame, source="incoming/machines.csv", n_samples=None, target_column="failure",
        interval_start="2026-04-01T00:00:00+00:00", interval_end="2026-04-02T00:00:00+00:00",
        out_uri=str(tmp_path / "batch"),
    )  # fmt: skip
    assert manifest["split"]["strategy"] == "time" and "datetime" not in manifest["columns"]
    assert split_params(manifest)["split_strategy"] == "time"
    assert split_params(manifest)["train_end"] == manifest["split"]["train_end"]
    assert split_periods(manifest["split"]).startswith("time split: train 2026-01-01")


def test_the_scaffold_proposes_a_group_split_when_an_id_repeats(data_root, tmp_path):
    _machines().drop(columns=["datetime"]).to_csv(data_root / "incoming" / "no_time.csv", index=False)
    result = scaffold("no_time", data_root / "incoming" / "no_time.csv", "failure", models_dir=tmp_path / "m")
    assert result.split == {"strategy": "group", "entity_column": "machineID"}
    assert "split: group" in result.text or "strategy: group" in result.text
    spec = load_spec(result.spec_path)
    manifest = prepare_batch(
        spec=spec, frame=pd.read_csv(data_root / "incoming" / "no_time.csv"), source="x.csv", n_samples=None,
        target_column="failure", interval_start="2026-04-01T00:00:00+00:00",
        interval_end="2026-04-02T00:00:00+00:00", out_uri=str(tmp_path / "g"),
    )  # fmt: skip
    assert manifest["split"]["strategy"] == "group"


def test_a_flat_spec_without_split_keeps_the_random_split_and_its_manifest(shipped_spec, tmp_path):
    manifest = prepare_batch(
        spec=shipped_spec, frame=None, source="synthetic", n_samples=2000, target_column=shipped_spec.target,
        interval_start="2026-04-01T00:00:00+00:00", interval_end="2026-04-02T00:00:00+00:00",
        out_uri=str(tmp_path / "r"),
    )  # fmt: skip
    assert "split" not in json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert split_params(manifest) == {"split_strategy": "random"} and shipped_spec.split == {
        "strategy": "random"
    }


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"strategy": "time"}, "split.time_column: a time split needs"),
        ({"strategy": "group"}, "split.entity_column: a group split needs"),
        ({"strategy": "time", "time_column": "torque"}, "'torque' is a feature or the target"),
        ({"strategy": "random", "gap_hours": 5}, "apply to time and group splits"),
        ({"strategy": "weekly"}, "split.strategy"),
    ],
)
def test_a_flat_split_that_cannot_work_is_refused(split, message):
    from cmms_pm.spec import build_spec

    with pytest.raises(SpecError, match=message):
        build_spec(
            {"name": "m", "registered_model": "m", "source": {"kind": "file", "path": "x.csv"},
             "target": {"column": "failure", "positive": "yes"}, "features": {"numeric": ["torque"]},
             "split": split}
        )  # fmt: skip
