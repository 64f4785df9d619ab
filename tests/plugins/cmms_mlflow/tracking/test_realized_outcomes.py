"""Storing realized outcomes in a real MLflow store (SQLite): one monitoring run per version, each
matured day logged once (step = day index) even across a crash between the metrics and the JSON, and
days that retention took out of the inputs kept from earlier measurements."""

from __future__ import annotations

import pandas as pd
import pytest

from cmms_pm.outcomes import measure

AT = pd.Timestamp("2026-03-01T03:00Z")


def _report(days: range, version: str = "4"):
    """Daily scorings of two assets; A (alerted) fails 20 h after each, B (not alerted) never."""
    predictions = pd.DataFrame(
        [(asset, AT + pd.Timedelta(days=d), asset == "A", version) for d in days for asset in ("A", "B")],
        columns=["equipment_id", "scored_at", "at_risk", "model_version"],
    )
    failures = pd.DataFrame(
        {"entity": "A", "failure_time": [AT + pd.Timedelta(days=d, hours=20) for d in range(0, 12)]}
    )
    return measure(predictions, failures, entity_column="equipment_id", horizon_hours=48, now="2026-04-01")


def test_each_day_is_logged_once_and_earlier_days_stay_when_their_inputs_are_gone(
    client, model_name, tmp_path
):
    from cmms_mlflow.tracking import realized_outcomes

    location = (tmp_path / "artifacts").as_uri()
    first = _report(range(0, 5))
    stored = realized_outcomes.store(
        client, model_name, first, window_days=3, tags={}, artifact_location=location
    )
    run_id = stored["4"]["monitoring_run_id"]
    assert client.get_experiment_by_name(f"{model_name}__outcomes").artifact_location == location
    steps = [m.step for m in client.get_metric_history(run_id, "realized_recall")]
    assert sorted(steps) == [0, 1, 2, 3, 4]
    assert {m.value for m in client.get_metric_history(run_id, "lead_time_hours_median")} == {20.0}
    # Later: the first three days' prediction files were removed (retention), two new days arrived.
    later = _report(range(3, 7))
    stored = realized_outcomes.store(
        client, model_name, later, window_days=3, tags={}, artifact_location=location
    )
    assert stored["4"]["monitoring_run_id"] == run_id  # one run per version
    assert [d["day"] for d in stored["4"]["days"]] == [f"2026-03-0{d}" for d in range(1, 8)]
    steps = sorted(m.step for m in client.get_metric_history(run_id, "realized_recall"))
    assert steps == [0, 1, 2, 3, 4, 5, 6]  # the first day stays step 0; days 3-4 not logged twice
    assert stored["4"]["window"]["tp"] == 3 and stored["4"]["window"]["tn"] == 3  # the newest 3 days


def test_a_crash_between_the_metrics_and_the_json_logs_nothing_twice(
    client, model_name, monkeypatch, tmp_path
):
    from cmms_mlflow.tracking import realized_outcomes

    location = (tmp_path / "artifacts").as_uri()
    report = _report(range(0, 3))
    real = client.log_text
    monkeypatch.setattr(client, "log_text", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        realized_outcomes.store(
            client, model_name, report, window_days=3, tags={}, artifact_location=location
        )
    monkeypatch.setattr(client, "log_text", real)
    stored = realized_outcomes.store(
        client, model_name, report, window_days=3, tags={}, artifact_location=location
    )
    history = client.get_metric_history(stored["4"]["monitoring_run_id"], "matured_predictions")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert realized_outcomes.read_performance(client, model_name)[0]["days"] == stored["4"]["days"]
    assert realized_outcomes.performance_of(client, model_name, "4")["window"]["recall"] == 1.0
    assert realized_outcomes.performance_of(client, model_name, "5") is None
    assert realized_outcomes.read_performance(client, "pm_never_measured") == []


def test_a_training_run_asked_for_by_a_retraining_request_carries_its_reason():
    from types import SimpleNamespace

    from cmms_mlflow.integrations.assets import champion_asset, retrain_asset
    from cmms_mlflow.tracking.training_run import airflow_tags

    def event(asset, **extra):
        return SimpleNamespace(asset=SimpleNamespace(name=asset.name, uri=asset.uri), extra=extra)

    ti = SimpleNamespace(
        dag_id="pm_training", run_id="asset_triggered__x", task_id="train_model", try_number=1
    )
    context = {"ti": ti, "dag_run": SimpleNamespace(run_type="asset_triggered")}
    assert "retrain_reason" not in airflow_tags(context)  # the nightly run
    context["triggering_asset_events"] = {
        "a": [event(champion_asset("pm"), reason="not a retraining request")],
        "b": [event(retrain_asset("pm"), reason="realized f1 0.210 of v3 ... below the floor 0.5")],
    }
    assert airflow_tags(context)["retrain_reason"] == "realized f1 0.210 of v3 ... below the floor 0.5"


def _spec(path: str):
    import yaml

    from cmms_pm.spec import PROJECT_DIR, build_spec

    raw = yaml.safe_load((PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "pm_outcomes.yaml").read_text())
    raw["outcomes"]["source"]["path"] = path
    return build_spec(raw)


def test_the_failure_log_is_read_through_the_source_checks_and_normalized(tmp_path, monkeypatch):
    from cmms_mlflow.exceptions import BadDataError
    from cmms_mlflow.tracking import realized_outcomes

    monkeypatch.setenv("CMMS_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    (tmp_path / "data" / "incoming" / "failures.csv").write_text(
        "asset,failed_at,component\nEQ-1,2026-03-02T10:00:00Z,bearing\nEQ-2,2026-03-02 12:00,seal\n"
    )
    log = realized_outcomes.read_failures(
        _spec("incoming/failures.csv"), start="2026-03-01", end="2026-03-03"
    )
    assert list(log["entity"]) == ["EQ-1", "EQ-2"] and list(log["component"]) == ["bearing", "seal"]
    assert list(log["failure_time"]) == [pd.Timestamp("2026-03-02T10:00Z"), pd.Timestamp("2026-03-02T12:00Z")]
    # The attacker's path: outside the allowed roots, refused before anything is read (not retried).
    (tmp_path / "secret.csv").write_text("asset,failed_at,component\nx,2026-03-02,y\n")
    for path in ("../secret.csv", str(tmp_path / "secret.csv"), "incoming/../../secret.csv"):
        with pytest.raises(BadDataError):
            realized_outcomes.read_failures(_spec(path), start="2026-03-01", end="2026-03-03")
    # A log without the declared columns: a typed error naming them.
    (tmp_path / "data" / "incoming" / "other.csv").write_text("machine,when\nEQ-1,2026-03-02\n")
    with pytest.raises(BadDataError, match="asset"):
        realized_outcomes.read_failures(_spec("incoming/other.csv"), start="2026-03-01", end="2026-03-03")
