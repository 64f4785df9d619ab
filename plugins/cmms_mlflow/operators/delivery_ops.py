"""The scoring DAG's ``deliver`` task: the scores of ``score_fleet`` to the CMMS, per the spec's
``delivery`` section (rules in :mod:`cmms_pm.delivery`).

A separate task after ``score_fleet``: a delivery that fails is retried without scoring again.

* ``table``: upserted through an Airflow SQL connection (``conn.get_hook()``, a common-sql hook,
  whose SQLAlchemy engine runs the upsert), in one transaction.
* ``webhook``: one POST per work-order suggestion to an Airflow HTTP connection (the notifier's
  :func:`cmms_mlflow.integrations.notifiers.post_json`: timeout, bearer token masked, no cross-host redirect),
  with an ``Idempotency-Key`` header. Connection refused, timeouts, HTTP 408/429/5xx are retried in
  the task (connection extras ``retries``, default 2, and ``retry_delay`` seconds, default 2,
  doubling); then the task fails and Airflow's retry delivers again. Another HTTP 4xx fails it for
  good; 409 (the CMMS has that key already) counts as delivered.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from cmms_mlflow.exceptions import DeliveryRefusedError, DeliveryUnavailable, NotificationError
from cmms_mlflow.operators.base import LineageMixin, SpecOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY = 2.0
_RETRIED_STATUSES = frozenset({408, 425, 429})
ALREADY_DELIVERED = 409


class DeliverScoresOperator(SpecOperatorMixin, LineageMixin, BaseOperator):
    """Deliver ``scored`` (``score_fleet``'s result: one entry per model, with its predictions file
    and threshold) to the spec's table and/or webhook; returns what was delivered where."""

    template_fields: Sequence[str] = ("scored",)
    ui_color = "#e8f7d5"

    def __init__(self, *, spec: Mapping[str, Any], scored: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.scored = scored

    def execute(self, context: Context) -> dict[str, Any]:
        from cmms_pm import delivery
        from cmms_pm.data import read_split

        spec = self.model_spec
        settings = spec.delivery
        ti = context["ti"]
        rows: list[dict[str, Any]] = []
        for scored in self.scored or []:
            frame = read_split(scored["predictions_uri"])
            rows += self._refused_for_good(
                delivery.records, frame, id_columns=spec.id_columns, threshold=float(scored["threshold"]),
                timezone=spec.timezone, airflow_run_id=ti.run_id,
            )  # fmt: skip
        result: dict[str, Any] = {"rows": len(rows)}
        if settings.get("table"):
            result["table"] = self.to_table(rows, settings["table"])
        if settings.get("webhook"):
            airflow = {"dag_id": ti.dag_id, "run_id": ti.run_id}
            found = delivery.suggestions(
                rows, top_k=int(settings["webhook"]["top_k"]), spec_name=spec.name, airflow=airflow
            )
            result["webhook"] = self.to_webhook(found, settings["webhook"]["conn_id"])
        self.lineage_result = result
        return result

    def _refused_for_good(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        from cmms_pm.delivery import DeliveryRefused

        try:
            return function(*args, **kwargs)
        except DeliveryRefused as err:
            raise DeliveryRefusedError(str(err)) from err

    def to_table(self, rows: list[dict[str, Any]], table: Mapping[str, Any]) -> dict[str, Any]:
        """Upsert ``rows`` into the spec's table; the number of rows this run now holds there."""
        from sqlalchemy.exc import DBAPIError

        from cmms_pm import delivery

        conn_id, name = table["conn_id"], table["name"]
        engine = _sql_engine(conn_id)
        where = f"connection {conn_id!r}"
        try:
            written = self._refused_for_good(
                delivery.upsert, engine, name, rows, create=bool(table["create"]), where=where
            )
        except DBAPIError as err:
            # The driver's text may quote a value of the data: its class only.
            kind = type(getattr(err, "orig", err)).__name__
            if isinstance(err.orig, Exception) and not err.connection_invalidated and _is_refusal(err):
                raise DeliveryRefusedError(f"table {name!r} of {where} refused the upsert: {kind}") from err
            raise DeliveryUnavailable(f"table {name!r} of {where} could not be written: {kind}") from err
        finally:
            engine.dispose()
        self.log.info("Delivered %d rows to table %s of %s (%d hold this run)", len(rows), name, where,
                      written)  # fmt: skip
        return {"conn_id": conn_id, "name": name, "rows": len(rows), "holding_this_run": written}

    def to_webhook(self, suggestions: list[dict[str, Any]], conn_id: str) -> dict[str, Any]:
        """POST each suggestion (retrying what may pass later); counts of sent and already known."""
        retries, delay = _retry_settings(conn_id)
        sent = duplicates = 0
        for suggestion in suggestions:
            headers = {"Idempotency-Key": suggestion["idempotency_key"]}
            for attempt in range(retries + 1):
                try:
                    _post(conn_id, suggestion, headers)
                    sent += 1
                    break
                except NotificationError as err:
                    status = err.http_status
                    if status == ALREADY_DELIVERED:
                        duplicates += 1
                        break
                    if status is not None and 400 <= status < 500 and status not in _RETRIED_STATUSES:
                        raise DeliveryRefusedError(f"{err}; the suggestion for asset #{suggestion['rank']} "
                                                   "was refused (not retried)") from err  # fmt: skip
                    if attempt == retries:
                        raise DeliveryUnavailable(
                            f"{err} ({attempt + 1} attempts); {sent} of {len(suggestions)} suggestions "
                            "delivered, the task's retry sends them again (same idempotency keys)"
                        ) from err
                    self.log.warning("Webhook %r: %s; attempt %d of %d in %.1f s", conn_id, err, attempt + 2,
                                     retries + 1, delay * 2**attempt)  # fmt: skip
                    time.sleep(delay * 2**attempt)
        self.log.info("Webhook %r: %d work-order suggestions sent, %d already known", conn_id, sent,
                      duplicates)  # fmt: skip
        return {"conn_id": conn_id, "suggestions": len(suggestions), "sent": sent, "known": duplicates}

    def openlineage(self, result: Any) -> Any:
        return None


def _post(conn_id: str, payload: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    from cmms_mlflow.integrations.notifiers import post_json

    post_json(conn_id, payload, headers=headers)


def _retry_settings(conn_id: str) -> tuple[int, float]:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        extra = BaseHook.get_connection(conn_id).extra_dejson
    except AirflowNotFoundException:
        raise DeliveryRefusedError(f"connection {conn_id!r} (delivery.webhook) is not defined") from None
    try:
        retries = int(extra.get("retries", DEFAULT_RETRIES))
        return retries, float(extra.get("retry_delay", DEFAULT_RETRY_DELAY))
    except (TypeError, ValueError) as err:
        raise DeliveryRefusedError(f"connection {conn_id!r}: retries, retry_delay are numbers") from err


def _sql_engine(conn_id: str) -> Any:
    """The SQLAlchemy engine of the SQL connection ``conn_id`` (a common-sql hook's)."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise DeliveryRefusedError(f"connection {conn_id!r} (delivery.table) is not defined") from None
    try:
        hook = conn.get_hook()
    except Exception as err:  # unknown conn type, provider not installed
        raise DeliveryRefusedError(f"connection {conn_id!r} ({conn.conn_type!r}) has no usable hook") from err
    if not isinstance(hook, DbApiHook):
        raise DeliveryRefusedError(f"connection {conn_id!r} ({conn.conn_type!r}) is not a SQL connection")
    return hook.get_sqlalchemy_engine()


def _is_refusal(err: Any) -> bool:
    """The database refused the statement itself (SQLSTATE class 22/23/42: data, constraint, schema)."""
    state = str(getattr(err.orig, "pgcode", None) or getattr(err.orig, "sqlstate", None) or "")
    return state[:2] in ("22", "23", "42")
