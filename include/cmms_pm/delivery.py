"""Delivering scores to the CMMS: rows for its table (one per model, asset and scoring day) and
work-order suggestions for its webhook (the top-K alerts, each with an idempotency key).

No Airflow, no MLflow: the scoring DAG's ``deliver`` task (``cmms_mlflow.operators.delivery_ops``)
reads the predictions, gets a SQLAlchemy engine from an Airflow SQL connection and posts through
an Airflow HTTP connection; the rules live here.

* **The table.** Its columns are this module's (:data:`TABLE_COLUMNS`); only its name comes from
  the spec (``[schema.]table``, validated by the spec schema, quoted by SQLAlchemy). Values are
  bound parameters, never SQL text. Rows are upserted on the key ``(model_name, asset_id,
  scoring_day)`` in one transaction: a rerun replaces its rows (never duplicates), a crash
  leaves the table as it was, and an older run cleared after a newer one of the same day does not
  overwrite the newer scores (``scored_at`` decides).
* **The suggestions.** Each carries an ``idempotency_key`` (also sent as the ``Idempotency-Key``
  header): the same model, asset and scoring day give the same key, so a rerun — or a retry after
  the CMMS answered but the answer was lost — is one work order at the CMMS.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from cmms_pm.exceptions import CmmsPmError

SCHEMA = "cmms.work_order_suggestion/1"
KEY_COLUMNS = ("model_name", "asset_id", "scoring_day")
TABLE_COLUMNS = (
    *KEY_COLUMNS,
    "ids",
    "risk",
    "alert",
    "threshold",
    "reasons",
    "issues",
    "model_version",
    "scored_at",
    "airflow_run_id",
)
#: Rows per INSERT statement (all of them in one transaction).
CHUNK_ROWS = 1000
_SUPPORTED_DIALECTS = ("postgresql", "sqlite", "mysql")


class DeliveryError(CmmsPmError):
    """Scores could not be delivered; the message names the target (connection, table), never data."""


class DeliveryRefused(DeliveryError, ValueError):
    """The target refuses the delivery for good (no such table, wrong columns, HTTP 4xx): fix the
    target or the spec; retrying the same delivery gives the same answer."""


def scoring_day(scored_at: str | datetime, timezone: str = "UTC") -> date:
    """The day a scoring belongs to: its timestamp's date in the spec's timezone."""
    stamp = pd.Timestamp(scored_at)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert(ZoneInfo(timezone)).date()


def asset_id(ids: Mapping[str, Any]) -> str:
    """An asset's key from its id columns: the value itself for one column, a JSON array for several."""
    values = [_plain(value) for value in ids.values()]
    if len(values) == 1:
        return "" if values[0] is None else str(values[0])
    return json.dumps(values, default=str)


def idempotency_key(model_name: str, asset: str, day: date) -> str:
    """Same model, asset and scoring day → same key (what the CMMS dedupes a rerun by)."""
    text = json.dumps([model_name, asset, day.isoformat()])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    """A JSON value for a cell (NumPy scalars, NaN → None, timestamps → ISO text)."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    return value


def _reason_lists(predictions: pd.DataFrame) -> list[list[dict[str, Any]]]:
    """Each row's reasons from batch scoring's flat columns (``reason_1``, ``reason_1_contribution``,
    …; ``cmms_pm.fleet.reason_columns``); ``[]`` for a row without any (or a file without them)."""
    n = len(predictions)
    k = 0
    while f"reason_{k + 1}" in predictions.columns:
        k += 1
    out: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    for i in range(1, k + 1):
        names = predictions[f"reason_{i}"].tolist()
        values = predictions[f"reason_{i}_contribution"].tolist()
        for row, (feature, value) in enumerate(zip(names, values, strict=True)):
            if isinstance(feature, str) and feature and value is not None and math.isfinite(value):
                out[row].append({"feature": feature, "contribution": float(value)})
    return out


def records(
    predictions: pd.DataFrame,
    *,
    id_columns: Sequence[str],
    threshold: float,
    timezone: str,
    airflow_run_id: str,
) -> list[dict[str, Any]]:
    """One table row per predictions row (``cmms_pm.fleet.score_frame``'s columns), keyed as the
    table is; ``threshold`` for files without a ``decision_threshold`` column. Two rows of one asset
    in one scoring: :class:`DeliveryRefused` (the key must be unique)."""
    missing = [c for c in id_columns if c not in predictions.columns]
    if missing:
        raise DeliveryRefused(f"the predictions have no id columns {missing}: the asset of a row is unknown")
    n = len(predictions)
    ids = [
        {column: _plain(value) for column, value in zip(id_columns, values, strict=True)}
        for values in zip(*(predictions[column].tolist() for column in id_columns), strict=True)
    ] if id_columns else [{} for _ in range(n)]  # fmt: skip
    stamps = pd.to_datetime(predictions["scored_at"], utc=True)
    days = stamps.dt.tz_convert(ZoneInfo(timezone)).dt.date.tolist()
    reasons = _reason_lists(predictions)
    thresholds = (
        predictions["decision_threshold"].astype(float).tolist()
        if "decision_threshold" in predictions.columns
        else [float(threshold)] * n
    )
    issues = (
        predictions["contract_issues"].fillna("").astype(str).tolist()
        if "contract_issues" in predictions.columns
        else [""] * n
    )
    out = [
        {
            "model_name": str(model),
            "asset_id": asset_id(row_ids),
            "scoring_day": day,
            "ids": json.dumps(row_ids, default=str),
            "risk": float(risk),
            "alert": bool(alert),
            "threshold": row_threshold,
            "reasons": json.dumps(found),
            "issues": issue,
            "model_version": str(version),
            "scored_at": stamp.to_pydatetime(),
            "airflow_run_id": airflow_run_id,
        }
        for model, row_ids, day, risk, alert, found, issue, version, stamp, row_threshold in zip(
            predictions["model_name"].tolist(), ids, days, predictions["failure_probability"].tolist(),
            predictions["at_risk"].tolist(), reasons, issues, predictions["model_version"].tolist(), stamps,
            thresholds, strict=True,
        )
    ]  # fmt: skip
    keys = {(r["model_name"], r["asset_id"], r["scoring_day"]) for r in out}
    if len(keys) != len(out):
        raise DeliveryRefused(
            f"{len(out) - len(keys)} rows repeat an asset of another row (same id columns "
            f"{list(id_columns)}): one row per asset and scoring day is delivered"
        )
    return out


def suggestions(
    rows: Iterable[Mapping[str, Any]], *, top_k: int, spec_name: str, airflow: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The work-order suggestions: the ``top_k`` riskiest rows that alert, riskiest first."""
    alerts = sorted((r for r in rows if r["alert"]), key=lambda r: (-r["risk"], r["asset_id"]))[:top_k]
    return [
        {
            "schema": SCHEMA,
            "idempotency_key": idempotency_key(r["model_name"], r["asset_id"], r["scoring_day"]),
            "asset_id": r["asset_id"],
            "ids": json.loads(r["ids"]),
            "risk": r["risk"],
            "threshold": r["threshold"],
            "rank": rank,
            "reasons": json.loads(r["reasons"]),
            "issues": [issue for issue in r["issues"].split("; ") if issue],
            "model": r["model_name"],
            "model_version": r["model_version"],
            "spec": spec_name,
            "scoring_day": r["scoring_day"].isoformat(),
            "scored_at": r["scored_at"].isoformat(),
            "airflow": dict(airflow),
        }
        for rank, r in enumerate(alerts, start=1)
    ]


# --- the table ---------------------------------------------------------------------------------


def scores_table(name: str) -> Any:
    """The SQLAlchemy table ``[schema.]name`` with :data:`TABLE_COLUMNS`, keyed by :data:`KEY_COLUMNS`."""
    import sqlalchemy as sa

    schema, _, table = name.rpartition(".")
    return sa.Table(
        table,
        sa.MetaData(schema=schema or None),
        sa.Column("model_name", sa.String(100), primary_key=True),
        sa.Column("asset_id", sa.String(512), primary_key=True),
        sa.Column("scoring_day", sa.Date, primary_key=True),
        sa.Column("ids", sa.Text, nullable=False),
        sa.Column("risk", sa.Float, nullable=False),
        sa.Column("alert", sa.Boolean, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("issues", sa.Text, nullable=False),
        sa.Column("model_version", sa.String(20), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("airflow_run_id", sa.String(250), nullable=False),
    )


def upsert(engine: Any, name: str, rows: Sequence[Mapping[str, Any]], *, create: bool, where: str) -> int:
    """Upsert ``rows`` into the table ``name`` in one transaction; returns the rows written.

    ``create``: create the table when it is missing (else :class:`DeliveryRefused`). An existing
    table must have :data:`TABLE_COLUMNS` and a primary key or unique constraint on
    :data:`KEY_COLUMNS`. ``where`` names the target in messages (the connection).
    """
    import sqlalchemy as sa

    dialect = engine.dialect.name
    if dialect not in _SUPPORTED_DIALECTS:
        raise DeliveryRefused(
            f"{where}: delivery upserts into {list(_SUPPORTED_DIALECTS)} databases, not {dialect!r}"
        )
    table = scores_table(name)
    with engine.begin() as conn:
        _check_or_create(conn, table, name, create=create, where=where)
        statement = _upsert_statement(dialect, table)
        for start in range(0, len(rows), CHUNK_ROWS):
            conn.execute(statement, [dict(row) for row in rows[start : start + CHUNK_ROWS]])
        if not rows:
            return 0
        # What this run holds now: rows a later scoring of the same day had written are not replaced.
        query = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(
                table.c.airflow_run_id == rows[0]["airflow_run_id"],
                table.c.model_name.in_(sorted({row["model_name"] for row in rows})),
            )
        )
        return int(conn.execute(query).scalar_one())


def _check_or_create(conn: Any, table: Any, name: str, *, create: bool, where: str) -> None:
    import sqlalchemy as sa

    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name, schema=table.schema):
        if not create:
            raise DeliveryRefused(
                f"{where}: table {name!r} does not exist; create it (docs/scoring-dag.md: Delivering to "
                "the CMMS) or set delivery.table.create: true"
            )
        table.create(conn)
        return
    present = {column["name"] for column in inspector.get_columns(table.name, schema=table.schema)}
    absent = [column for column in TABLE_COLUMNS if column not in present]
    if absent:
        raise DeliveryRefused(f"{where}: table {name!r} lacks the columns {absent}")
    where_table = {"table_name": table.name, "schema": table.schema}
    keys = [inspector.get_pk_constraint(**where_table).get("constrained_columns") or []]
    keys += [u["column_names"] for u in inspector.get_unique_constraints(**where_table)]
    keys += [i["column_names"] for i in inspector.get_indexes(**where_table) if i.get("unique")]
    if not any(set(key) == set(KEY_COLUMNS) for key in keys):
        raise DeliveryRefused(
            f"{where}: table {name!r} needs a primary key or unique constraint on {list(KEY_COLUMNS)} "
            "(a rerun replaces its rows by it)"
        )


def _upsert_statement(dialect: str, table: Any) -> Any:
    """INSERT … ON CONFLICT (key) DO UPDATE, unless the row there comes from a later scoring."""
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    values = [c for c in TABLE_COLUMNS if c not in KEY_COLUMNS]
    if dialect == "mysql":
        upsert = mysql.insert(table)
        return upsert.on_duplicate_key_update({c: upsert.inserted[c] for c in values})
    statement = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(KEY_COLUMNS),
        set_={c: statement.excluded[c] for c in values},
        where=table.c.scored_at <= statement.excluded.scored_at,
    )
