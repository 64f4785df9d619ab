"""The leakage guard: each test on data whose answer is known, the attacker's disguises, and the
honest data it must leave alone (the shipped synthetic telemetry, AI4I-like sensors)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from datasets import TARGET, ai4i_like, with_label_copy

from cmms_pm import leakage
from cmms_pm.data import generate_telemetry
from cmms_pm.exceptions import DataValidationError, LabelLeakError
from cmms_pm.leakage import (
    FLAG_SET,
    FUTURE_TIMESTAMP,
    NEAR_COPY,
    SINGLE_COLUMN,
    check_features,
    find_leaks,
    guard_record,
    leakage_tags,
)
from cmms_pm.schema import TARGET as SYNTHETIC_TARGET

MODES = ["TWF", "HDF", "PWF", "OSF", "RNF"]
SENSORS = [
    "Type", "Air temperature [K]", "Process temperature [K]", "Rotational speed [rpm]", "Torque [Nm]",
    "Tool wear [min]",
]  # fmt: skip


@pytest.fixture(scope="module")
def ai4i_modes() -> pd.DataFrame:
    return ai4i_like(10_000, seed=11, failure_modes=True)


def _labelled(n: int = 20_000, rate: float = 0.05, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A frame of honest noise and a 0/1 ``label`` (``rate`` positives) to plant leaks next to."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < rate
    frame = pd.DataFrame(
        {
            "noise": rng.normal(size=n),
            "signal": rng.normal(size=n) + 1.2 * y,  # an honest strong reading: AUC ~0.8
            "label": y.astype(np.int64),
        }
    )
    return frame, y


def _tests(report) -> dict[tuple[str, ...], str]:
    return {finding.columns: finding.test for finding in report.findings}


# --- flag sets: AI4I's failure modes ------------------------------------------------------------


def test_ai4i_failure_mode_flags_are_found_as_a_set_though_no_flag_alone_is_enough(ai4i_modes):
    report = find_leaks(ai4i_modes, TARGET, positive="yes", columns=[*SENSORS, *MODES])

    (finding,) = report.findings
    assert finding.test == FLAG_SET and finding.measure == "F1 of the OR"
    assert finding.columns == ("TWF", "HDF", "PWF", "OSF")  # RNF is mostly noise, as in the real file
    assert finding.value >= leakage.SET_MIN_F1
    assert "OR of these 4 two-valued columns matches it in 99.9" in finding.reason
    # No flag alone separates the classes: the single-column test cannot see this leak.
    y = (ai4i_modes[TARGET] == "yes").to_numpy()
    for mode in MODES:
        alone = find_leaks(ai4i_modes[[mode, TARGET]], TARGET, positive="yes")
        assert alone.findings == (), mode
        on = ai4i_modes[mode].to_numpy() == 1
        assert on.sum() < 0.5 * y.sum()


def test_honest_ai4i_like_sensors_give_no_finding():
    for seed in range(3):
        frame = ai4i_like(10_000, seed=seed, failure_modes=True).drop(columns=MODES)
        report = find_leaks(frame, TARGET, positive="yes")
        assert report.findings == () and report.skipped is None, seed


def test_the_shipped_synthetic_telemetry_gives_no_finding():
    for n, seed in ((20_000, 1), (300_000, 2)):
        frame = generate_telemetry(n, seed)
        report = find_leaks(frame, SYNTHETIC_TARGET)
        assert report.findings == (), (n, report.findings)
        assert report.rows == min(n, leakage.MAX_ROWS) and report.sampled_from == n


def test_a_leak_split_across_many_flags_is_found_and_the_decoys_are_not():
    frame, y = _labelled(40_000, rate=0.05, seed=3)
    rng = np.random.default_rng(4)
    positives = np.flatnonzero(y)
    part = rng.integers(0, 25, len(positives))  # each positive row raises one of 25 flags
    for k in range(25):
        flag = np.zeros(len(y), dtype=np.int64)
        flag[positives[part == k]] = 1
        frame[f"bit_{k:02d}"] = flag
    for k in range(10):  # flags unrelated to the label, some as rare as the leaking ones
        frame[f"decoy_{k}"] = (rng.random(len(y)) < 0.002 * (k + 1)).astype(np.int64)

    report = find_leaks(frame, "label")

    (finding,) = report.findings
    assert finding.test == FLAG_SET
    assert finding.columns == tuple(f"bit_{k:02d}" for k in range(25))
    assert finding.value == 1.0
    for k in range(25):  # each flag alone is far from the threshold
        assert find_leaks(frame[[f"bit_{k:02d}", "label"]], "label").findings == ()


def test_a_flag_the_others_cover_is_not_named():
    """The widest flag is chosen first; once two narrower ones cover every failure it adds nothing
    and is dropped from the set (it is no leak by itself)."""
    frame, y = _labelled(20_000, rate=0.05, seed=23)
    order = np.flatnonzero(y)
    share = np.arange(len(order)) / len(order)
    for name, low, high in (("wide", 0.2, 0.8), ("left", 0.0, 0.45), ("right", 0.45, 1.0)):
        flag = np.zeros(len(y), dtype=np.int64)
        flag[order[(share >= low) & (share < high)]] = 1
        frame[name] = flag

    (finding,) = find_leaks(frame, "label").findings

    assert (finding.columns, finding.value) == (("left", "right"), 1.0)


def test_flags_whose_and_is_the_label_are_found_as_an_and():
    rng = np.random.default_rng(5)
    n = 30_000
    flags = {name: rng.random(n) < 0.3 for name in ("door_open", "pressure_low", "valve_shut")}
    y = flags["door_open"] & flags["pressure_low"] & flags["valve_shut"]
    frame = pd.DataFrame({**{k: v.astype(np.int64) for k, v in flags.items()}, "label": y.astype(int)})
    frame["unrelated"] = (rng.random(n) < 0.3).astype(np.int64)
    frame["almost_always"] = (y | (rng.random(n) < 0.8)).astype(np.int64)  # on in every failure, adds little

    (finding,) = find_leaks(frame, "label").findings

    assert (finding.test, finding.measure, finding.value) == (FLAG_SET, "F1 of the AND", 1.0)
    assert finding.columns == ("door_open", "pressure_low", "valve_shut")


def test_flags_that_only_come_close_to_the_label_are_not_a_set():
    """The set's threshold can fail: flags covering 80 % of the failures (F1 ~0.89) pass."""
    frame, y = _labelled(30_000, rate=0.05, seed=6)
    rng = np.random.default_rng(7)
    positives = np.flatnonzero(y)
    covered = positives[rng.random(len(positives)) < 0.8]
    halves = np.array_split(covered, 2)
    for k, rows in enumerate(halves):
        flag = np.zeros(len(y), dtype=np.int64)
        flag[rows] = 1
        frame[f"mode_{k}"] = flag
    assert find_leaks(frame, "label").findings == ()


# --- near copies ------------------------------------------------------------------------------------


def test_a_noisy_copy_with_an_innocent_name_is_a_near_copy():
    frame = with_label_copy(ai4i_like(10_000, seed=12), "Spindle state", values=("A", "B"), flip=0.05)

    report = find_leaks(frame, TARGET, positive="yes", columns=[*SENSORS, "Spindle state"])

    (finding,) = report.findings
    assert (finding.columns, finding.test, finding.measure) == (
        ("Spindle state",),
        NEAR_COPY,
        "balanced accuracy",
    )
    assert 0.93 < finding.value < 0.97
    assert "copy of the label with noise" in finding.reason
    assert "'A'" not in finding.reason and "'B'" not in finding.reason  # no value from the data


def test_a_copy_too_noisy_to_be_a_copy_is_not_flagged():
    """The near-copy threshold can fail: a copy with 20 % of its rows flipped agrees with 80 % of
    each class, which a strong honest reading may do."""
    frame = with_label_copy(ai4i_like(10_000, seed=13), "Spindle state", flip=0.20)
    assert find_leaks(frame, TARGET, positive="yes", columns=["Spindle state"]).findings == ()


def test_a_function_of_the_label_is_named_as_one():
    frame, y = _labelled(seed=8)
    frame["coolant_code"] = np.where(y, 7, 3)
    frame["status_text"] = np.where(y, "closed by WO", "open")

    report = find_leaks(frame, "label")

    assert _tests(report) == {("coolant_code",): NEAR_COPY, ("status_text",): NEAR_COPY}
    for finding in report.findings:
        assert finding.value == 1.0 and "a function of the label" in finding.reason


# --- single columns ---------------------------------------------------------------------------------


def test_a_numeric_column_named_innocently_separates_the_classes_in_either_direction():
    frame, y = _labelled(seed=9)
    rng = np.random.default_rng(10)
    frame["Humidity [%]"] = 40.0 + 25.0 * y + rng.normal(0, 3.0, len(y))
    frame["Oil level [mm]"] = 80.0 - 25.0 * y + rng.normal(0, 3.0, len(y))

    report = find_leaks(frame, "label")

    by_column = {f.columns[0]: f for f in report.findings}
    assert set(by_column) == {"Humidity [%]", "Oil level [mm]"}
    assert all(f.test == SINGLE_COLUMN and f.value >= 0.99 for f in by_column.values())
    assert "higher values mean positive" in by_column["Humidity [%]"].reason
    assert "lower values mean positive" in by_column["Oil level [mm]"].reason


def test_a_column_filled_in_only_for_failures_leaks_through_its_missing_values():
    frame, y = _labelled(seed=14)
    rng = np.random.default_rng(15)
    frame["repair_cost"] = np.where(y, rng.uniform(100, 5000, len(y)), np.nan)

    (finding,) = find_leaks(frame, "label").findings

    assert finding.columns == ("repair_cost",) and finding.test == SINGLE_COLUMN
    assert finding.value == 1.0 and "missing values ranked low" in finding.reason


def test_a_leak_only_in_a_category_is_found_by_category_rates():
    """Text with 30 values, one of which means "failed", and an integer code whose middle value does:
    no rank order shows it, the categories' failure rates do."""
    frame, y = _labelled(seed=16)
    rng = np.random.default_rng(17)
    codes = np.array([f"E{k:02d}" for k in range(30)], dtype=object)
    frame["last_event"] = np.where(y, "E17", codes[np.delete(np.arange(30), 17)][rng.integers(0, 29, len(y))])
    others = np.array([k for k in range(1, 31) if k != 15])
    frame["shift_code"] = np.where(y, 15, others[rng.integers(0, len(others), len(y))])

    report = find_leaks(frame, "label")

    assert _tests(report) == {("last_event",): SINGLE_COLUMN, ("shift_code",): SINGLE_COLUMN}
    for finding in report.findings:
        assert finding.value >= 0.99 and "failure rate of each of its values" in finding.reason
    # An integer code with gaps reads as floats: still a code, tested the same way.
    as_floats = frame.assign(shift_code=frame["shift_code"].astype(float).where(frame.index % 50 > 0))
    assert _tests(find_leaks(as_floats, "label")) == _tests(report)


def test_ids_and_free_text_gain_nothing_from_category_rates():
    frame, y = _labelled(seed=18)
    frame["work_order"] = [f"WO-{k:06d}" for k in range(len(y))]  # unique per row
    frame["serial"] = np.arange(len(y))

    assert find_leaks(frame, "label").findings == ()


# --- timestamps after the snapshot ------------------------------------------------------------------


def _with_dates(seed: int = 19) -> tuple[pd.DataFrame, np.ndarray]:
    frame, y = _labelled(5_000, seed=seed)
    snapshot = pd.Timestamp("2025-01-01") + pd.to_timedelta(np.arange(len(y)), unit="h")
    frame["reading_time"] = snapshot
    frame["repaired_at"] = pd.Series(snapshot + pd.Timedelta(hours=30)).where(y)  # only failures
    frame["installed_at"] = (snapshot - pd.Timedelta(days=400)).strftime("%Y-%m-%d %H:%M")  # as text
    frame["next_inspection"] = (snapshot + pd.Timedelta(days=3)).strftime("%Y-%m-%d")  # text, planned
    return frame, y


def test_a_timestamp_after_the_snapshot_is_found_when_the_time_column_is_known():
    frame, _ = _with_dates()

    report = find_leaks(frame, "label", columns=["noise", "signal"], time_column="reading_time")

    assert _tests(report) == {("repaired_at",): FUTURE_TIMESTAMP, ("next_inspection",): FUTURE_TIMESTAMP}
    repaired = next(f for f in report.findings if f.columns == ("repaired_at",))
    assert repaired.value == 1.0 and "later than 'reading_time'" in repaired.reason
    assert "installed_at" not in {c for f in report.findings for c in f.columns}
    # Without a time column there is nothing to compare a date with.
    assert find_leaks(frame, "label", columns=["noise", "signal"]).findings == ()


def test_a_few_clock_skewed_rows_are_not_a_future_timestamp():
    frame, y = _with_dates(20)
    late = np.zeros(len(y), dtype=bool)
    late[:20] = True  # 0.4 % of rows a minute late
    frame["logged_at"] = frame["reading_time"] + pd.to_timedelta(np.where(late, 1, -5), unit="min")

    report = find_leaks(frame, "label", columns=[], timestamps=["logged_at"], time_column="reading_time")
    assert report.findings == ()


# --- the guard's contract ---------------------------------------------------------------------------


def test_too_few_positives_skip_the_label_tests_with_the_reason():
    frame, _ = _labelled(2_000, rate=0.005, seed=21)
    frame["copy"] = frame["label"]

    report = find_leaks(frame, "label")

    assert report.findings == () and "fewer than 30" in report.skipped
    assert guard_record(report, accept=())["notes"] == [f"leakage guard not run: {report.skipped}"]


def test_a_large_frame_is_sampled_the_same_way_every_time():
    frame, y = _labelled(450_000, rate=0.03, seed=22)
    frame["copy"] = np.where(y, "bad", "good")

    first, second = find_leaks(frame, "label"), find_leaks(frame, "label")

    assert first == second and first.rows == leakage.MAX_ROWS and first.sampled_from == 450_000
    assert _tests(first) == {("copy",): NEAR_COPY}


def test_check_features_refuses_a_leak_unless_every_column_of_it_is_accepted(ai4i_modes):
    frame = with_label_copy(ai4i_modes, "Status")
    features = [*SENSORS, *MODES, "Status"]

    with pytest.raises(LabelLeakError) as refused:
        check_features(frame, TARGET, features=features, positive="yes")
    message = str(refused.value)
    assert isinstance(refused.value, DataValidationError)
    for needle in ("'Status'", "near_copy", "balanced accuracy 0.9", "'TWF', 'HDF', 'PWF', 'OSF'", "flag_set",
                   "F1 of the OR 0.9", "leakage.accept"):  # fmt: skip
        assert needle in message, needle

    with pytest.raises(LabelLeakError, match="flag_set") as partly:
        check_features(frame, TARGET, features=features, positive="yes", accept=["Status", "TWF", "HDF"])
    assert "near_copy" not in str(partly.value)

    report = check_features(
        frame, TARGET, features=features, positive="yes", accept=["Status", "TWF", "HDF", "PWF", "OSF"]
    )
    record = guard_record(report, accept=["Status", "TWF", "HDF", "PWF", "OSF"])
    assert len(record["accepted"]) == 2 and all(n.startswith("leakage accepted") for n in record["notes"])
    assert leakage_tags(record) == {"leakage_columns": "5", "leakage_accepted": "HDF,OSF,PWF,Status,TWF"}
    json.dumps(record)  # travels through XCom and into data_checks/leakage.json
    assert leakage.LeakageReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_tags_of_excluded_columns_and_a_bounded_list():
    report = leakage.LeakageReport()
    record = guard_record(report, accept=(), excluded={f"flag_{k:03d}": "leaks" for k in range(200)})
    tags = leakage_tags(record)
    assert tags["leakage_columns"] == "200" and "leakage_accepted" not in tags
    assert len(tags["leakage_excluded"]) <= leakage.TAG_LIMIT and tags["leakage_excluded"].endswith("more")
    assert leakage_tags({}) == {}


# --- the spec's leakage section and the batch ------------------------------------------------------

LEAKY_SPEC = {
    "name": "leaky",
    "registered_model": "leaky",
    "source": {"kind": "file", "path": "incoming/leaky.csv"},
    "target": {"column": TARGET, "positive": "yes", "negative": "no"},
    "features": {"categorical": ["Type", "Status"], "numeric": SENSORS[1:], "integer": MODES},
    "drop": ["UDI", "Product ID"],
    "validation": {"min_rows": 100},
}


def test_leakage_accept_names_feature_columns_only():
    from cmms_pm.exceptions import SpecError
    from cmms_pm.spec import build_spec

    assert build_spec(LEAKY_SPEC).leakage_accept == ()
    assert build_spec({**LEAKY_SPEC, "leakage": {"accept": ["TWF", "Status"]}}).leakage_accept == (
        "TWF",
        "Status",
    )
    inferred = {**LEAKY_SPEC, "features": {"infer": True}, "leakage": {"accept": ["anything"]}}
    assert build_spec(inferred).leakage_accept == ("anything",)  # which columns exist is the data's
    for accept, message in (
        ([TARGET], "is the target column"),
        (["UDI"], "is dropped or excluded"),
        (["Humidity"], "is not a declared feature"),
        (["TWF", "TWF"], "non-unique"),
        ("TWF", "is not of type 'array'"),
    ):
        with pytest.raises(SpecError, match=f"leakage.accept.*{message}"):
            build_spec({**LEAKY_SPEC, "leakage": {"accept": accept}})
    with pytest.raises(SpecError, match="leakage: Additional properties"):
        build_spec({**LEAKY_SPEC, "leakage": {"ignore": ["TWF"]}})


def _batch(tmp_path, spec_data: dict, frame: pd.DataFrame) -> tuple:
    from cmms_pm.batch import prepare_batch
    from cmms_pm.spec import build_spec

    spec = build_spec(spec_data)
    manifest = prepare_batch(
        spec=spec,
        frame=frame,
        source="incoming/leaky.csv",
        n_samples=None,
        target_column=TARGET,
        interval_start="2026-07-01T00:00:00+00:00",
        interval_end="2026-07-02T00:00:00+00:00",
        out_uri=str(tmp_path / "batch"),
    )
    return spec, manifest


def test_validate_batch_refuses_a_declared_leaking_feature_naming_it_the_test_and_the_number(
    tmp_path, ai4i_modes
):
    from cmms_pm.batch import validate_batch

    spec, manifest = _batch(tmp_path, LEAKY_SPEC, with_label_copy(ai4i_modes, "Status"))

    with pytest.raises(LabelLeakError) as refused:
        validate_batch(manifest, spec)
    message = str(refused.value)
    assert message.startswith(f"train split of {manifest['uri']}: feature(s) ")
    assert "'Status' (near_copy: balanced accuracy 0.9" in message
    assert "'TWF', 'HDF', 'PWF', 'OSF' (flag_set: F1 of the OR 0.9" in message

    accepted = {**LEAKY_SPEC, "leakage": {"accept": ["Status", "TWF", "HDF", "PWF", "OSF"]}}
    spec, manifest = _batch(tmp_path, accepted, with_label_copy(ai4i_modes, "Status"))
    checked = validate_batch(manifest, spec)
    record = checked["leakage"]
    assert {tuple(f["columns"]) for f in record["accepted"]} == {("Status",), ("TWF", "HDF", "PWF", "OSF")}
    assert len(record["notes"]) == 2 and record["rows"] == checked["splits"]["train"]["rows"]


def test_inferred_features_leave_the_leaks_out_and_say_why(tmp_path, ai4i_modes):
    from cmms_pm.batch import validate_batch

    inferred = {**LEAKY_SPEC, "features": {"infer": True}, "leakage": {"accept": ["TWF"]}}
    spec, manifest = _batch(tmp_path, inferred, with_label_copy(ai4i_modes, "Status"))

    features = {c for kind in manifest["features"].values() for c in kind}
    assert features == {*SENSORS, "RNF", "TWF"}  # TWF is accepted; the rest of its set is not
    assert set(manifest["leakage_excluded"]) == {"Status", "HDF", "PWF", "OSF"}
    assert "near_copy" in manifest["leakage_excluded"]["Status"]
    assert {"Status", "HDF"} <= set(manifest["columns"])  # still in the batch, not features
    checked = validate_batch(manifest, spec)  # nothing leaks among the features left
    assert checked["leakage"]["findings"] == []
    assert sorted(checked["leakage"]["excluded"]) == ["HDF", "OSF", "PWF", "Status"]
    assert all("left out" in note for note in checked["leakage"]["notes"])
