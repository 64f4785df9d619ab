"""Delivery rules on a real SQLite file (PostgreSQL:
tests/plugins/cmms_mlflow/operators/test_delivery_ops.py): one row per model, asset and scoring
day; a rerun replaces; an older run never overwrites a newer one; ids are data; a table that does
not fit is refused before anything is written."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from cmms_pm import delivery
from cmms_pm.delivery import DeliveryRefused

HOSTILE = "EQ-1'); DROP TABLE pm_scores; --"


def _predictions(scored_at: str, risks: list[float], ids: list[str] | None = None) -> pd.DataFrame:
    ids = ids or [f"EQ-{n:03d}" for n in range(len(risks))]
    return pd.DataFrame(
        {
            "equipment_id": ids,
            "failure_probability": risks,
            "at_risk": [r >= 0.5 for r in risks],
            "contract_ok": True,
            "contract_issues": ["" if n else "out_of_range:rpm" for n in range(len(risks))],
            "model_name": "pm",
            "model_version": "3",
            "scored_at": pd.Timestamp(scored_at),
        }
    )


def _records(frame: pd.DataFrame, run: str) -> list[dict]:
    return delivery.records(
        frame, id_columns=["equipment_id"], threshold=0.5, timezone="UTC", airflow_run_id=run
    )


@pytest.fixture
def engine(tmp_path):
    return sa.create_engine(f"sqlite:///{tmp_path / 'cmms.db'}")


def _table(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql("SELECT * FROM pm_scores ORDER BY asset_id", conn)


def test_a_rerun_replaces_its_rows_and_a_hostile_id_is_stored_as_data(engine):
    frame = _predictions("2026-11-26T02:00:00+00:00", [0.9, 0.2, 0.7], ids=["EQ-1", HOSTILE, "EQ-3"])
    rows = _records(frame, "run-1")
    assert delivery.upsert(engine, "pm_scores", rows, create=True, where="test") == 3
    assert delivery.upsert(engine, "pm_scores", rows, create=True, where="test") == 3
    table = _table(engine)
    assert len(table) == 3 and set(table["asset_id"]) == {"EQ-1", HOSTILE, "EQ-3"}
    assert json.loads(table.loc[table["asset_id"] == HOSTILE, "ids"].item()) == {"equipment_id": HOSTILE}
    assert set(table["scoring_day"].astype(str)) == {"2026-11-26"}
    # A second scoring the same day (a new champion) replaces the day's row of each asset.
    ids = ["EQ-1", HOSTILE, "EQ-3"]
    later = _records(_predictions("2026-11-26T14:00:00+00:00", [0.1, 0.95, 0.7], ids=ids), "run-2")
    delivery.upsert(engine, "pm_scores", later, create=True, where="test")
    table = _table(engine)
    assert len(table) == 3 and set(table["airflow_run_id"]) == {"run-2"}
    assert table.set_index("asset_id")["risk"].to_dict() == {"EQ-1": 0.1, HOSTILE: 0.95, "EQ-3": 0.7}
    # The earlier run, cleared and rerun after it, does not overwrite the later scores.
    assert delivery.upsert(engine, "pm_scores", rows, create=True, where="test") == 0
    assert set(_table(engine)["airflow_run_id"]) == {"run-2"}
    # The next day is new rows.
    delivery.upsert(engine, "pm_scores", _records(_predictions("2026-11-27T02:00:00+00:00", [0.3] * 3,
                    ids=["EQ-1", HOSTILE, "EQ-3"]), "run-3"), create=True, where="test")  # fmt: skip
    assert len(_table(engine)) == 6


def test_a_missing_or_unfit_table_is_refused_and_nothing_is_written(engine):
    rows = _records(_predictions("2026-11-26T02:00:00+00:00", [0.9]), "run-1")
    with pytest.raises(DeliveryRefused, match=r"table 'pm_scores' does not exist.*create: true"):
        delivery.upsert(engine, "pm_scores", rows, create=False, where="connection 'cmms'")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE pm_scores (model_name TEXT, asset_id TEXT)"))
    with pytest.raises(DeliveryRefused, match=r"lacks the columns \['scoring_day', 'ids'"):
        delivery.upsert(engine, "pm_scores", rows, create=True, where="connection 'cmms'")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE pm_scores"))
        conn.execute(sa.text(f"CREATE TABLE pm_scores ({', '.join(delivery.TABLE_COLUMNS)})"))  # no key
    with pytest.raises(DeliveryRefused, match=r"primary key or unique constraint on \['model_name'"):
        delivery.upsert(engine, "pm_scores", rows, create=True, where="connection 'cmms'")
    assert _table(engine).empty


def test_one_asset_twice_in_one_scoring_is_refused():
    frame = _predictions("2026-11-26T02:00:00+00:00", [0.9, 0.8], ids=["EQ-1", "EQ-1"])
    with pytest.raises(DeliveryRefused, match="1 rows repeat an asset"):
        _records(frame, "run-1")


def test_suggestions_are_the_top_k_alerts_with_keys_stable_across_reruns():
    frame = _predictions("2026-11-26T23:30:00+00:00", [0.55, 0.2, 0.99, 0.7, 0.51])
    airflow = {"dag_id": "pm_scoring", "run_id": "run-1"}
    first = delivery.suggestions(_records(frame, "run-1"), top_k=3, spec_name="pm", airflow=airflow)
    assert [(s["asset_id"], s["rank"]) for s in first] == [("EQ-002", 1), ("EQ-003", 2), ("EQ-000", 3)]
    assert first[2]["issues"] == ["out_of_range:rpm"] and first[0]["issues"] == []
    assert {s["scoring_day"] for s in first} == {"2026-11-26"} and first[0]["model_version"] == "3"
    rerun = delivery.suggestions(_records(frame, "run-2"), top_k=3, spec_name="pm", airflow=airflow)
    assert [s["idempotency_key"] for s in rerun] == [s["idempotency_key"] for s in first]
    assert len({s["idempotency_key"] for s in first}) == 3
    # Another day is another suggestion; the day is the spec's timezone's.
    assert delivery.idempotency_key("pm", "EQ-002", date(2026, 11, 27)) != first[0]["idempotency_key"]
    assert delivery.scoring_day("2026-11-26T23:30:00+00:00", "Europe/Berlin") == date(2026, 11, 27)


def test_batch_scorings_reason_columns_and_threshold_travel_to_the_table_and_the_suggestions(engine):
    frame = _predictions("2026-11-26T02:00:00+00:00", [0.9, 0.2])
    frame["decision_threshold"] = 0.37
    frame["reason_1"] = pd.array(["vibration_mm_s", None], dtype="str")
    frame["reason_1_contribution"] = [0.3, float("nan")]
    frame["reason_2"] = pd.array(["rpm", None], dtype="str")
    frame["reason_2_contribution"] = [0.1, float("nan")]
    rows = _records(frame, "run-1")
    assert [json.loads(r["reasons"]) for r in rows] == [
        [{"feature": "vibration_mm_s", "contribution": 0.3}, {"feature": "rpm", "contribution": 0.1}], [],
    ]  # fmt: skip
    assert {r["threshold"] for r in rows} == {0.37}
    delivery.upsert(engine, "pm_scores", rows, create=True, where="test")
    stored = _table(engine).set_index("asset_id").loc["EQ-000", "reasons"]
    assert json.loads(stored)[0]["feature"] == "vibration_mm_s"
    (suggestion,) = delivery.suggestions(rows, top_k=5, spec_name="pm", airflow={})
    assert suggestion["reasons"][1] == {"feature": "rpm", "contribution": 0.1}
    assert suggestion["threshold"] == 0.37
