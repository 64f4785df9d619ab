"""Synthetic generation, seeding, external loading, splitting and deterministic batch files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmms_pm.data import (
    generate_telemetry,
    interval_seed,
    read_split,
    split_frame,
    write_batch,
)
from cmms_pm.exceptions import DataSourceError, DataValidationError
from cmms_pm.frame_checks import check_frame
from cmms_pm.schema import EQUIPMENT_TYPES, FEATURES, INTEGER_COLUMNS, NUMERIC, TARGET

INCLUDE_DIR = Path(__file__).resolve().parents[3] / "include"


# --- interval_seed -------------------------------------------------------------------------------


def test_interval_seed_is_stable_for_the_same_interval():
    start, end = "2024-06-01T00:00:00+00:00", "2024-06-02T00:00:00+00:00"
    assert interval_seed(start, end) == interval_seed(start, end)


def test_interval_seed_differs_between_intervals_and_is_order_sensitive():
    a = interval_seed("2024-06-01T00:00:00+00:00", "2024-06-02T00:00:00+00:00")
    b = interval_seed("2024-06-02T00:00:00+00:00", "2024-06-03T00:00:00+00:00")
    swapped = interval_seed("2024-06-02T00:00:00+00:00", "2024-06-01T00:00:00+00:00")
    assert len({a, b, swapped}) == 3


def test_interval_seed_is_a_non_negative_63_bit_integer():
    seed = interval_seed("2024-01-01", "2024-01-08")
    assert isinstance(seed, int)
    assert 0 <= seed < 2**63


def test_interval_seed_does_not_depend_on_the_process_hash_salt():
    code = "from cmms_pm.data import interval_seed; print(interval_seed('2024-01-01', '2024-01-02'))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": str(INCLUDE_DIR), "PYTHONHASHSEED": salt},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for salt in ("1", "2")
    }
    assert outputs == {str(interval_seed("2024-01-01", "2024-01-02"))}


# --- generate_telemetry --------------------------------------------------------------------------


def test_same_seed_generates_identical_frame():
    pd.testing.assert_frame_equal(generate_telemetry(1_000, 7), generate_telemetry(1_000, 7))


def test_different_seeds_generate_different_frames():
    first, second = generate_telemetry(1_000, 7), generate_telemetry(1_000, 8)
    assert not first.equals(second)
    assert not np.allclose(first["vibration_mm_s"], second["vibration_mm_s"])


def test_generated_frame_has_schema_columns_and_dtypes(telemetry):
    assert list(telemetry.columns) == FEATURES + [TARGET]
    assert len(telemetry) == 5_000
    for column in NUMERIC:
        expected = np.int64 if column in INTEGER_COLUMNS else np.float64
        assert telemetry[column].dtype == expected, column
    assert telemetry[TARGET].dtype == np.int64
    assert pd.api.types.is_string_dtype(telemetry["equipment_type"])
    assert set(telemetry["equipment_type"]) == set(EQUIPMENT_TYPES)


def test_generated_frame_passes_the_shipped_specs_checks(telemetry, shipped_spec):
    """The shipped spec describes exactly what the generator writes (columns, types, ranges)."""
    report = check_frame(
        telemetry,
        features=shipped_spec.features,
        target=shipped_spec.target,
        min_rows=200,
        max_missing_rate=0.0,
    )
    assert report["rows"] == 5_000
    assert set(shipped_spec.features.declared) == set(FEATURES)
    assert set(shipped_spec.features.integer) == set(INTEGER_COLUMNS)
    assert set(shipped_spec.features.categories["equipment_type"]) == set(EQUIPMENT_TYPES)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_positive_rate_is_between_5_and_15_percent(seed):
    rate = generate_telemetry(5_000, seed)[TARGET].mean()
    assert 0.05 <= rate <= 0.15


@pytest.mark.parametrize(
    "risk_factor",
    ["equipment_age_years", "failures_last_year", "vibration_mm_s", "temperature_c", "load_pct"],
)
def test_higher_risk_factor_means_more_failures(telemetry, risk_factor):
    quantile = telemetry[risk_factor].rank(pct=True)
    low = telemetry.loc[quantile <= 0.25, TARGET].mean()
    high = telemetry.loc[quantile > 0.75, TARGET].mean()
    assert high > 1.5 * low


def test_non_positive_sample_count_is_rejected():
    with pytest.raises(DataValidationError, match="n_samples must be positive"):
        generate_telemetry(0, 1)


# --- split_frame ---------------------------------------------------------------------------------


def _with_ids(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(row_id=np.arange(len(frame)))


def test_split_has_the_requested_fractions_and_covers_every_row_once(telemetry):
    splits = split_frame(_with_ids(telemetry), seed=3)
    assert list(splits) == ["train", "validation", "holdout"]
    sizes = {name: len(frame) for name, frame in splits.items()}
    assert sizes["train"] == pytest.approx(3_500, abs=2)
    assert sizes["validation"] == pytest.approx(750, abs=2)
    assert sizes["holdout"] == pytest.approx(750, abs=2)
    ids = np.concatenate([frame["row_id"].to_numpy() for frame in splits.values()])
    assert sorted(ids) == list(range(len(telemetry)))


def test_split_is_stratified_on_the_target(telemetry):
    overall = telemetry[TARGET].mean()
    splits = split_frame(telemetry, seed=3)
    assert len(splits) == 3
    for name, frame in splits.items():
        assert frame[TARGET].mean() == pytest.approx(overall, abs=0.005), name


def test_split_is_deterministic_for_a_seed_and_varies_across_seeds(telemetry):
    first, again, other = (split_frame(_with_ids(telemetry), seed) for seed in (3, 3, 4))
    for name in first:
        pd.testing.assert_frame_equal(first[name], again[name])
    assert not first["holdout"]["row_id"].equals(other["holdout"]["row_id"])


def test_split_resets_the_index(telemetry):
    splits = split_frame(telemetry, seed=3)
    assert len(splits) == 3
    for frame in splits.values():
        assert frame.index.equals(pd.RangeIndex(len(frame)))


def test_split_keeps_a_rare_class_in_every_split(telemetry):
    rare = pd.concat([telemetry[telemetry[TARGET] == 0].head(300), telemetry[telemetry[TARGET] == 1].head(3)])
    splits = split_frame(rare, seed=1)
    assert len(splits) == 3
    for name, frame in splits.items():
        assert frame[TARGET].sum() == 1, name


def test_split_of_a_single_class_frame_is_not_stratified_but_still_works(telemetry):
    negatives = telemetry[telemetry[TARGET] == 0].head(100)
    sizes = [len(frame) for frame in split_frame(negatives, seed=1).values()]
    assert sizes == [70, 15, 15]


def test_split_keeps_rows_with_bad_labels_for_validation_to_find(telemetry):
    dirty = telemetry.head(1_000).astype({TARGET: float})
    dirty.loc[:9, TARGET] = np.nan
    dirty.loc[10, TARGET] = 2.0
    splits = split_frame(dirty, seed=1)
    combined = pd.concat(splits.values())
    assert len(combined) == 1_000
    assert combined[TARGET].isna().sum() == 10
    assert (combined[TARGET] == 2).sum() == 1


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.15, 0.15), (1.0, 0.0, 0.0)])
def test_split_rejects_bad_fractions(telemetry, fractions):
    with pytest.raises(DataValidationError, match="split fractions"):
        split_frame(telemetry, seed=1, fractions=fractions)


# --- write_batch / read_split --------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_batch_writes_byte_identical_files_for_the_same_frames(splits, tmp_path):
    write_batch(splits, str(tmp_path / "a"))
    write_batch({name: frame.copy() for name, frame in splits.items()}, str(tmp_path / "b"))
    for name in ("train.parquet", "validation.parquet", "holdout.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # The manifests differ only in the output URIs they record.
    first = json.loads((tmp_path / "a" / "manifest.json").read_text())
    second = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert first["digest"] == second["digest"]


def test_manifest_digests_match_the_written_files(splits, tmp_path):
    manifest = write_batch(splits, str(tmp_path))
    split_digests = []
    for name, entry in manifest["splits"].items():
        path = tmp_path / f"{name}.parquet"
        assert entry["uri"] == f"{tmp_path}/{name}.parquet"
        assert entry["sha256"] == _sha256(path)
        assert entry["rows"] == len(splits[name])
        assert entry["positives"] == int(splits[name][TARGET].sum())
        split_digests.append(entry["sha256"])
    assert manifest["digest"] == hashlib.sha256("".join(split_digests).encode()).hexdigest()


def test_manifest_is_small_json_with_totals_and_metadata(splits, tmp_path):
    manifest = write_batch(splits, str(tmp_path), metadata={"data_version": "2024-06-01/2024-06-02"})
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert (tmp_path / "manifest.json").read_text() == json.dumps(manifest, sort_keys=True, indent=2)
    assert manifest["rows"] == sum(len(frame) for frame in splits.values())
    total_positives = sum(int(frame[TARGET].sum()) for frame in splits.values())
    assert manifest["positive_rate"] == pytest.approx(total_positives / manifest["rows"])
    assert manifest["columns"] == list(splits["train"].columns)
    assert manifest["target"] == TARGET
    assert manifest["uri"] == str(tmp_path)
    assert manifest["data_version"] == "2024-06-01/2024-06-02"
    assert len(json.dumps(manifest)) < 4_000


def test_metadata_may_not_overwrite_manifest_fields(splits, tmp_path):
    with pytest.raises(DataValidationError, match=r"\['digest'\]"):
        write_batch(splits, str(tmp_path), metadata={"digest": "forged"})


def test_read_split_returns_the_written_frame(splits, tmp_path):
    manifest = write_batch(splits, str(tmp_path / "nested" / "batch"))
    for name, entry in manifest["splits"].items():
        pd.testing.assert_frame_equal(read_split(entry["uri"]), splits[name])


def test_batch_round_trips_through_a_file_uri(splits, tmp_path):
    manifest = write_batch(splits, tmp_path.as_uri())
    assert manifest["splits"]["holdout"]["uri"] == f"{tmp_path.as_uri()}/holdout.parquet"
    pd.testing.assert_frame_equal(read_split(manifest["splits"]["holdout"]["uri"]), splits["holdout"])


def test_a_split_changed_after_it_was_written_fails_its_recorded_sha256(splits, tmp_path):
    """Another writer (or an attacker) replaces a split between extract_data and a later task."""
    from cmms_pm.batch import read_batch
    from cmms_pm.exceptions import SplitIntegrityError

    manifest = write_batch(splits, str(tmp_path / "batch"))
    other = write_batch({name: frame.head(50) for name, frame in splits.items()}, str(tmp_path / "other"))
    holdout = manifest["splits"]["holdout"]
    pd.testing.assert_frame_equal(read_split(holdout["uri"], sha256=holdout["sha256"]), splits["holdout"])
    # A valid Parquet file of the same schema, only not the one the manifest recorded.
    Path(holdout["uri"]).write_bytes(Path(other["splits"]["holdout"]["uri"]).read_bytes())
    with pytest.raises(SplitIntegrityError, match=r"holdout\.parquet' does not have the SHA-256"):
        read_split(holdout["uri"], sha256=holdout["sha256"])
    with pytest.raises(SplitIntegrityError, match="holdout"):
        read_batch(manifest)
    # One flipped byte is caught too.
    train = Path(manifest["splits"]["train"]["uri"])
    data = bytearray(train.read_bytes())
    data[len(data) // 2] ^= 0xFF
    train.write_bytes(bytes(data))
    with pytest.raises(SplitIntegrityError, match="train"):
        read_split(str(train), sha256=manifest["splits"]["train"]["sha256"])


def test_batch_folders_of_different_run_ids_never_collide():
    from cmms_pm.batch import batch_uri

    run_ids = [
        "a:b",
        "a+b",
        "a_b",
        "a b",
        "manual__2026-03-01T03:00:00+00:00",
        "manual__2026-03-01T03_00_00_00_00",
    ]
    uris = [batch_uri("/data", "pm_training", run_id) for run_id in run_ids]
    assert len(set(uris)) == len(run_ids), uris
    # Readable: the path-safe run id comes first, then 16 hex digits of the raw run id's SHA-256.
    assert uris[0] == "/data/pm_training/a_b-" + hashlib.sha256(b"a:b").hexdigest()[:16]
    assert batch_uri("/data", "pm_training", "a:b") == uris[0]  # stable across calls and processes
    assert all("/" not in uri.removeprefix("/data/pm_training/") for uri in uris)
    assert batch_uri("/data", "d", "../../etc").startswith("/data/d/.._.._etc-")


def test_read_split_of_a_missing_file_names_the_uri(tmp_path):
    uri = str(tmp_path / "holdout.parquet")
    with pytest.raises(DataSourceError, match="holdout.parquet"):
        read_split(uri)


def test_equipment_names_are_gathered_into_the_same_arrow_array_pandas_builds_from_strings():
    from cmms_pm.data import EQUIPMENT_TYPES, _names

    codes = np.random.default_rng(7).integers(0, len(EQUIPMENT_TYPES), 5000)
    fast = _names(EQUIPMENT_TYPES, codes)
    slow = pd.array(np.asarray(EQUIPMENT_TYPES, dtype=object)[codes], dtype="str")
    assert fast.dtype == slow.dtype
    assert fast._pa_array.equals(slow._pa_array)  # same Arrow type and values: same Parquet bytes
