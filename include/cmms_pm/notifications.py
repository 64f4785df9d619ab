"""What a model notification says: one JSON-able event, and its e-mail subject and body.

Pure data and text (no Airflow import): ``cmms_mlflow.integrations.notifiers`` fills the event from a task's
context and sends it by e-mail and to a JSON webhook. An event carries the model, the version,
the decision and its reason, the metrics, links to the MLflow and Airflow pages and the Airflow
run — never a connection password, a token or a URI's credentials: :func:`strip_credentials`
runs over every text that comes from an error message or a URL.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping
from typing import Any

from cmms_pm.spec import NOTIFICATION_EVENTS

#: Version of the payload's shape, sent as ``schema`` so receivers can tell shapes apart.
SCHEMA = "cmms.model_event/1"
PROMOTED, REJECTED, APPROVAL_NEEDED, TASK_FAILED, RETRAIN_REQUESTED = NOTIFICATION_EVENTS
#: The ``decision`` field per event kind (a task failure decides nothing).
DECISIONS = {
    PROMOTED: "promote",
    REJECTED: "reject",
    APPROVAL_NEEDED: "awaiting_approval",
    TASK_FAILED: None,
    RETRAIN_REQUESTED: "retrain",  # realized outcomes below the spec's floor (cmms_pm.outcomes)
}
MAX_TEXT = 1000

# scheme://user:password@host -> scheme://***@host (DB URIs, URLs with basic-auth in error messages)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/@]+@")
# password=..., token: ..., Authorization: Bearer ... in free text (connection strings, headers)
_KEY_VALUE = re.compile(
    r"(?i)\b(?P<key>password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|authorization)"
    r"(?P<sep>\s*[=:]\s*)(?P<value>(?:bearer\s+|basic\s+)?[^\s,;&'\"]+)"
)


def strip_credentials(text: str, *, limit: int = MAX_TEXT) -> str:
    """``text`` without URI credentials or ``password=…``-style values, cut to ``limit`` characters."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}***@", str(text))
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}***", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_id(kind: str, airflow: Mapping[str, Any], version: str | None) -> str:
    """Same task, kind and version → same id (a retried task resends it; receivers can dedupe)."""
    key = "|".join(str(airflow.get(k) or "") for k in ("dag_id", "run_id", "task_id"))
    return hashlib.sha256(f"{key}|{kind}|{version or ''}".encode()).hexdigest()[:24]


def metrics_of(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The metrics part of an event, from a validation decision record (``validate_model``'s)."""
    if not record:
        return None
    policy = record.get("thresholds") or {}
    return {
        "metric": policy.get("metric"),
        "threshold": policy.get("threshold"),
        "min_improvement": policy.get("min_improvement"),
        "challenger": dict(record.get("challenger_metrics") or {}),
        "champion": dict(record["champion_metrics"]) if record.get("champion_metrics") else None,
        "champion_version": record.get("champion_version"),
        "holdout_rows": record.get("holdout_rows"),
    }


def model_event(
    kind: str,
    *,
    model: str | None,
    version: str | None,
    reason: str,
    airflow: Mapping[str, Any],
    occurred_at: str,
    spec: str | None = None,
    record: Mapping[str, Any] | None = None,
    links: Mapping[str, str] | None = None,
    approval: Mapping[str, Any] | None = None,
    error: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The event (the webhook's JSON body) for ``kind``, one of :data:`NOTIFICATION_EVENTS`."""
    if kind not in DECISIONS:
        raise ValueError(f"notification kind {kind!r} is not one of {list(DECISIONS)}")
    version = str(version) if version not in (None, "") else None
    event: dict[str, Any] = {
        "schema": SCHEMA,
        "event_id": event_id(kind, airflow, version),
        "event": kind,
        "occurred_at": occurred_at,
        "model": model,
        "spec": spec,
        "version": version,
        "decision": DECISIONS[kind],
        "reason": strip_credentials(reason),
        "metrics": metrics_of(record),
        "links": {k: strip_credentials(v) for k, v in (links or {}).items() if v},
        "airflow": {k: (str(v) if v is not None else None) for k, v in airflow.items()},
    }
    if approval:
        event["approval"] = {k: strip_credentials(str(v)) if v else v for k, v in approval.items()}
    if error:
        event["error"] = {k: strip_credentials(v) for k, v in error.items()}
    return event


def subject(event: Mapping[str, Any]) -> str:
    """A one-line e-mail subject (no line breaks can reach the header)."""
    model, version = event.get("model") or "?", event.get("version")
    what = f"{model} v{version}" if version else model
    kind = event["event"]
    if kind == PROMOTED:
        text = f"{what} promoted to Production"
    elif kind == REJECTED:
        text = f"{what} rejected: {event.get('reason', '')}"
    elif kind == APPROVAL_NEEDED:
        text = f"Approval needed: promote {what} to Production?"
    elif kind == RETRAIN_REQUESTED:
        text = f"Retraining requested for {model}: {event.get('reason', '')}"
    else:
        airflow = event.get("airflow") or {}
        text = f"Task failed: {airflow.get('dag_id')}.{airflow.get('task_id')} ({what})"
    text = " ".join(f"[cmms] {text}".split())
    return text if len(text) <= 200 else text[:199] + "…"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "—" if value is None else str(value)


def html_body(event: Mapping[str, Any]) -> str:
    """The e-mail body: what happened, why, the metrics and the links; every value HTML-escaped."""
    esc = html.escape
    airflow = event.get("airflow") or {}
    rows = [
        ("Event", event["event"]),
        ("Model", event.get("model")),
        ("Version", event.get("version")),
        ("Decision", event.get("decision")),
        ("Reason", event.get("reason")),
    ]
    approval = event.get("approval") or {}
    rows += [(f"Approval {key}", value) for key, value in approval.items() if value]
    error = event.get("error") or {}
    rows += [(f"Error {key}", value) for key, value in error.items()]
    rows += [
        ("Airflow run", f"{airflow.get('dag_id')} / {airflow.get('run_id')}"),
        ("Task", f"{airflow.get('task_id')} (try {airflow.get('try_number')})"),
    ]
    parts = [f"<h3>{esc(subject(event))}</h3>", "<table>"]
    parts += [f"<tr><th align='left'>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in rows]
    parts.append("</table>")
    metrics = event.get("metrics")
    if metrics:
        champion = metrics.get("champion") or {}
        names = sorted(set(metrics.get("challenger") or {}) | set(champion))
        parts.append(
            f"<p>Policy: {esc(_fmt(metrics.get('metric')))} ≥ {esc(_fmt(metrics.get('threshold')))}, "
            f"+{esc(_fmt(metrics.get('min_improvement')))} over the champion "
            f"(v{esc(_fmt(metrics.get('champion_version')))})</p>"
        )
        parts.append("<table><tr><th>metric</th><th>challenger</th><th>champion</th></tr>")
        parts += [
            f"<tr><td>{esc(n)}</td><td>{esc(_fmt((metrics.get('challenger') or {}).get(n)))}</td>"
            f"<td>{esc(_fmt(champion.get(n)))}</td></tr>"
            for n in names
        ]
        parts.append("</table>")
    links = event.get("links") or {}
    if links:
        parts.append("<ul>")
        parts += [f"<li><a href='{esc(url, quote=True)}'>{esc(name)}</a></li>" for name, url in links.items()]
        parts.append("</ul>")
    parts.append(
        f"<p><small>event {esc(event.get('event_id', ''))}, {esc(event.get('occurred_at', ''))}</small></p>"
    )
    return "\n".join(parts)


def approval_request(event: Mapping[str, Any]) -> str:
    """The Markdown body of the approval request shown in Airflow's Required actions page."""
    metrics = event.get("metrics") or {}
    challenger = metrics.get("challenger") or {}
    champion = metrics.get("champion") or {}
    metric = metrics.get("metric") or "f1"
    lines = [
        f"**{event.get('model')} version {event.get('version')}** passed validation and waits for "
        "your decision before it goes to Production.",
        "",
        f"* Validation: {event.get('reason')}",
        f"* {metric}: challenger {_fmt(challenger.get(metric))}, champion "
        f"(v{_fmt(metrics.get('champion_version'))}) {_fmt(champion.get(metric))}",
    ]
    for name, url in (event.get("links") or {}).items():
        if name != "approve":
            lines.append(f"* [{name}]({url})")
    lines += ["", "Approve promotes it (re-checked against the champion of that moment); Reject archives "
              "it with your comment. No answer in time archives it as 'approval timed out'."]  # fmt: skip
    return "\n".join(lines)
