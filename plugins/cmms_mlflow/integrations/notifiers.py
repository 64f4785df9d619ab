"""Airflow notifiers for model events: e-mail (Airflow's ``SmtpNotifier``) and a JSON webhook.

* :class:`JsonWebhookNotifier` — POSTs one JSON event to the URL of an HTTP connection, with a
  timeout, the connection's password (if any) as a bearer token (masked in logs), and no redirect
  to another host.
* :class:`ModelEventNotifier` — sends a model event to the channels of a spec's ``notifications``
  (``email_to`` through the SMTP connection ``email_conn_id``, ``webhook_conn_id``). The promote,
  reject and approval steps send their events; as a task's ``on_failure_callback`` it reports the
  failed task.

Both are cheap to build (the DAG factory makes one per spec at parse time): constructors only
assign; connections, the SMTP provider and ``requests`` are touched only when a message goes out.
A channel that fails is logged and does not fail the task: the registry change it reports has
happened. What is sent is :mod:`cmms_pm.notifications`' event, with every secret Airflow knows
masked and URI credentials stripped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

from airflow.sdk import BaseNotifier

from cmms_mlflow.exceptions import NotificationError, webhook_refused
from cmms_pm.notifications import (
    TASK_FAILED,
    html_body,
    model_event,
    strip_credentials,
    subject,
)
from cmms_pm.spec import NOTIFICATION_EVENTS

if TYPE_CHECKING:
    from airflow.sdk import Context

    from cmms_pm.spec import ModelSpec

DEFAULT_SMTP_CONN_ID = "smtp_default"
DEFAULT_WEBHOOK_TIMEOUT = 10.0
MAX_REDIRECTS = 3
#: XCom key under which a step records what each channel did with its event.
NOTIFICATIONS_KEY = "notifications"


def _redact(value: Any) -> Any:
    """Mask every secret Airflow knows (connection passwords, masked variables) in ``value``."""
    # Its home in the pinned task SDK (execution_time.secrets_masker is a deprecated alias of it).
    from airflow.sdk._shared.secrets_masker import redact

    return redact(value)


def describe(err: BaseException) -> str:
    """``Type: message`` of an error, safe for a log line or a message (secrets masked, cut)."""
    return f"{type(err).__name__}: {strip_credentials(str(_redact(str(err))), limit=300)}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def airflow_run(context: Context) -> dict[str, Any]:
    """The Airflow run an event comes from: ids, try, dates."""
    ti = context["ti"]
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    logical = getattr(dag_run, "logical_date", None)
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "try_number": ti.try_number,
        "run_type": getattr(run_type, "value", run_type),
        "logical_date": logical.isoformat() if logical else None,
    }


def airflow_links(context: Context) -> dict[str, str]:
    """Links to the Airflow run page and the task's log page (``[api] base_url``)."""
    try:
        log_url = context["ti"].log_url or ""
    except Exception:  # no base URL configured: no link
        return {}
    return {"airflow_run": log_url.split("/tasks/")[0], "airflow_task": log_url}


def failed_task_event(
    context: Context, *, spec_name: str | None = None, mlflow_conn_id: str | None = None
) -> dict[str, Any]:
    """The ``task_failed`` event of the task in ``context`` (an ``on_failure_callback``'s context)."""
    params = context.get("params") or {}
    model = params.get("model_name")
    version = _registered_version(context)
    error = context.get("exception")
    links = airflow_links(context)
    if model and mlflow_conn_id:
        url = _mlflow_url(mlflow_conn_id, model, version)
        if url:
            links["mlflow"] = url
    message = describe(error) if isinstance(error, BaseException) else strip_credentials(str(error or ""))
    return model_event(
        TASK_FAILED,
        model=model,
        version=version,
        spec=spec_name,
        reason=f"task {context['ti'].task_id} failed: {message}",
        airflow=airflow_run(context),
        occurred_at=now_iso(),
        links=links,
        error={"type": type(error).__name__ if error is not None else "", "message": message},
    )


def _registered_version(context: Context) -> str | None:
    """The version this run registered, if it got that far (``register_model``'s XCom)."""
    try:
        registered = context["ti"].xcom_pull(task_ids="register_model")
    except Exception:
        return None
    return (
        str(registered["version"]) if isinstance(registered, Mapping) and registered.get("version") else None
    )


def _mlflow_url(mlflow_conn_id: str, model: str, version: str | None) -> str | None:
    try:
        from cmms_mlflow.hooks.mlflow_hook import MlflowHook

        hook = MlflowHook(mlflow_conn_id=mlflow_conn_id)
        if version:
            return hook.model_version_url(model, version)
        return f"{hook.ui_url}/#/models/{quote(model, safe='')}"
    except Exception:  # a failure notice must go out even when the MLflow connection is the problem
        return None


class JsonWebhookNotifier(BaseNotifier):
    """POST a JSON event to the URL of the HTTP connection ``http_conn_id``.

    The URL is the connection's host when it holds a full URL (``https://hooks.example.com/x``),
    else ``<scheme>://<host>[:<port>]/<endpoint>`` (scheme: the conn type ``http``/``https``, the
    ``scheme`` extra, else ``https``; endpoint: the ``endpoint`` extra, else the schema field).
    The password, if any, is sent as ``Authorization: Bearer …`` and masked. Extras: ``timeout``
    (seconds, default 10). Redirects are followed only on the same scheme, host and port.

    :param payload: the event; ``None`` (as an ``on_failure_callback``) sends the failed task's event.
    """

    # Never render anything: an event's texts (reasons, comments) are data, not Jinja templates.
    template_fields: Sequence[str] = ()

    def __init__(self, *, http_conn_id: str, payload: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http_conn_id = http_conn_id
        self.payload = payload

    def notify(self, context: Context) -> None:
        payload = self.payload if self.payload is not None else failed_task_event(context)
        post_json(self.http_conn_id, _redact(dict(payload)))


def webhook_url(conn: Any) -> str:
    """The URL an HTTP connection points at (see :class:`JsonWebhookNotifier`); http(s) only."""
    host = (conn.host or "").strip()
    if "://" in host:
        url = host
    else:
        extra = conn.extra_dejson
        scheme = conn.conn_type if conn.conn_type in ("http", "https") else extra.get("scheme") or "https"
        endpoint = extra.get("endpoint")
        if endpoint is None and conn.schema and conn.schema not in ("http", "https"):
            endpoint = conn.schema  # a URI connection's path lands in the schema field
        if conn.schema in ("http", "https"):
            scheme = conn.schema
        port = f":{conn.port}" if conn.port else ""
        url = f"{scheme}://{host}{port}/{(endpoint or '').lstrip('/')}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise webhook_refused(
            conn.conn_id, f"its URL must be http(s)://host/..., got scheme {parts.scheme!r}"
        )
    if parts.username or parts.password:
        raise webhook_refused(conn.conn_id, "its URL carries credentials; put a token in the password field")
    return url


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def post_json(
    http_conn_id: str, payload: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
) -> int:
    """POST ``payload`` to the connection's URL; return the HTTP status or raise ``NotificationError``
    (its ``http_status``: the answer's status, None when there was none).

    Error messages name the connection and the URL's origin only (a webhook path is often itself
    a secret), never the token. ``headers`` are added to the request (e.g. ``Idempotency-Key``).
    """
    import requests
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret

    conn = BaseHook.get_connection(http_conn_id)
    url = webhook_url(conn)
    token = conn.password or None
    if token:
        mask_secret(token)
    try:
        timeout = float(conn.extra_dejson.get("timeout", DEFAULT_WEBHOOK_TIMEOUT))
    except (TypeError, ValueError) as err:
        raise webhook_refused(http_conn_id, "the timeout extra must be a number of seconds") from err
    headers = {"Content-Type": "application/json", "User-Agent": "cmms-mlflow-notifier/1", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    origin = _origin(url)
    shown = f"{origin[0]}://{origin[1]}:{origin[2]}"
    for _ in range(MAX_REDIRECTS + 1):
        try:
            # allow_redirects=False: the token must never follow a redirect to another host.
            response = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
        except requests.Timeout as err:
            raise NotificationError(
                f"webhook {http_conn_id!r} at {shown} did not answer within {timeout:g} s"
            ) from err
        except requests.RequestException as err:
            raise NotificationError(
                f"webhook {http_conn_id!r} at {shown} could not be reached ({type(err).__name__})"
            ) from err
        if not response.is_redirect:
            break
        target = urljoin(url, response.headers.get("Location", ""))
        if _origin(target) != origin:
            raise webhook_refused(
                http_conn_id,
                f"it answered HTTP {response.status_code} redirecting to another host "
                f"({urlsplit(target).hostname!r}); not followed",
            )
        url = target
    else:
        raise webhook_refused(http_conn_id, f"more than {MAX_REDIRECTS} redirects")
    if not 200 <= response.status_code < 300:
        status = response.status_code
        refused = NotificationError(f"webhook {http_conn_id!r} at {shown} answered HTTP {status}")
        refused.http_status = response.status_code
        raise refused
    return response.status_code


class ModelEventNotifier(BaseNotifier):
    """Send model events to a spec's channels: e-mail (``SmtpNotifier``) and/or a JSON webhook.

    Called as a notifier (``on_failure_callback``, a HITL operator's ``notifiers``) it sends
    ``event`` if it was given one (:meth:`with_event`), else the failed task's event. Operators
    call :meth:`send` with the event of what they did. Only kinds listed in ``events`` go out.
    """

    template_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        spec_name: str | None = None,
        email_to: Sequence[str] = (),
        email_conn_id: str | None = None,
        email_from: str | None = None,
        webhook_conn_id: str | None = None,
        events: Sequence[str] = NOTIFICATION_EVENTS,
        mlflow_conn_id: str = "mlflow_default",
        event: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec_name = spec_name
        self.email_to = tuple(email_to)
        self.email_conn_id = email_conn_id
        self.email_from = email_from
        self.webhook_conn_id = webhook_conn_id
        self.events = tuple(events)
        self.mlflow_conn_id = mlflow_conn_id
        self.event = event

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> ModelEventNotifier | None:
        """The spec's notifier, or ``None`` when its ``notifications`` name no channel."""
        settings = spec.notifications
        if not settings["email_to"] and not settings["webhook_conn_id"]:
            return None
        return cls(
            spec_name=spec.name,
            email_to=settings["email_to"],
            email_conn_id=settings["email_conn_id"],
            email_from=settings["email_from"],
            webhook_conn_id=settings["webhook_conn_id"],
            events=settings["events"],
        )

    def with_event(self, event: Mapping[str, Any]) -> ModelEventNotifier:
        """The same channels, bound to ``event`` (for notifier hooks that pass only a context)."""
        return type(self)(
            spec_name=self.spec_name,
            email_to=self.email_to,
            email_conn_id=self.email_conn_id,
            email_from=self.email_from,
            webhook_conn_id=self.webhook_conn_id,
            events=self.events,
            mlflow_conn_id=self.mlflow_conn_id,
            event=event,
        )

    def notify(self, context: Context) -> None:
        event = self.event
        if event is None:
            event = failed_task_event(context, spec_name=self.spec_name, mlflow_conn_id=self.mlflow_conn_id)
        self.send(event, context)

    def send(self, event: Mapping[str, Any], context: Context) -> dict[str, str]:
        """Deliver ``event`` on every channel; ``{channel: "sent" | "failed: <error>"}``. Never raises."""
        if event["event"] not in self.events:
            return {}
        self._mask_channel_secrets()
        event = _redact(dict(event))
        results: dict[str, str] = {}
        channels = []
        if self.email_to:
            channels.append((f"email:{self.email_conn_id or DEFAULT_SMTP_CONN_ID}", self._send_email))
        if self.webhook_conn_id:
            channels.append((f"webhook:{self.webhook_conn_id}", self._send_webhook))
        for channel, deliver in channels:
            try:
                deliver(event, context)
            except Exception as err:
                results[channel] = f"failed: {describe(err)}"
                self.log.warning("Notification %s (%s) via %s failed: %s", event["event_id"],
                                 event["event"], channel, describe(err))  # fmt: skip
            else:
                results[channel] = "sent"
                self.log.info("Notification %s (%s) sent via %s", event["event_id"], event["event"], channel)
        return results

    def _mask_channel_secrets(self) -> None:
        """Register the channels' passwords with Airflow's masker before anything is redacted, so an
        event (an error message echoing one) never carries them, even in a process that has not
        read those connections yet."""
        from airflow.sdk import BaseHook
        from airflow.sdk.log import mask_secret

        conn_ids = [self.email_conn_id or DEFAULT_SMTP_CONN_ID] if self.email_to else []
        conn_ids += [self.webhook_conn_id] if self.webhook_conn_id else []
        for conn_id in conn_ids:
            try:
                conn = BaseHook.get_connection(conn_id)
            except Exception:  # a missing connection fails its own channel, with its own message
                continue
            for secret in (conn.password, conn.extra_dejson.get("access_token")):
                if secret:
                    mask_secret(secret)

    def _send_email(self, event: Mapping[str, Any], context: Context) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        mail = SmtpNotifier(
            to=list(self.email_to),
            from_email=self.email_from,
            smtp_conn_id=self.email_conn_id or DEFAULT_SMTP_CONN_ID,
            subject=subject(event),
            html_content=html_body(event),
        )
        # notify(), not __call__: the texts are data and must not be rendered as Jinja templates.
        mail.notify(context)

    def _send_webhook(self, event: Mapping[str, Any], context: Context) -> None:
        JsonWebhookNotifier(http_conn_id=str(self.webhook_conn_id), payload=event).notify(context)
