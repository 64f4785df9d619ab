"""What the Models page shows about one registered model, read from the registry (never written).

The model API's read routes (``cmms_mlflow.www.routes``) return these views, and the page reads only
those routes, so the page and the API cannot disagree. Writes stay in ``registry``/``promotion``.
The decisions are the model's append-only history (``cmms_mlflow.registry.history``); the pending
approvals are the versions whose ``approval_status`` tag is ``pending`` (written by
``MlflowApprovalOperator`` when it asks, replaced by the answer under the registry lock).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cmms_mlflow.exceptions import ModelNotFoundError
from cmms_mlflow.integrations.links import (
    DAG_ID_PATTERN,
    RUN_ID_PATTERN,
    airflow_run_url,
    required_actions_url,
)
from cmms_mlflow.registry import history, model_registry
from cmms_pm.approval import APPROVAL_TASK_ID, PENDING, requesting_run
from cmms_pm.registry_plan import PRUNED, PRUNING, RETENTION_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from cmms_mlflow.hooks.mlflow_hook import MlflowHook

#: How many decisions a model's row shows, and at most how many events a version's page lists.
DECISIONS_LIMIT = 10
VERSION_HISTORY_LIMIT = 100
#: Where the plots of a training run live, and the one drift plot of its data checks.
EVALUATION_DIR = "evaluation"
DRIFT_PLOT = "data_checks/drift.png"
#: The tuning study's plots (optimisation history, parameter importances) of a tuned model's run.
TUNING_DIR = "tuning"
#: A plot's id in a URL: ``evaluation.roc_curve``, ``drift``; resolved against the run's own
#: artifact listing, so no path from a request ever reaches the artifact store.
PLOT_ID_PATTERN = r"[a-z0-9_]{1,64}(\.[a-z0-9_]{1,64})?"
PLOT_ID = re.compile(PLOT_ID_PATTERN)
HOLDOUT_METRICS = ("f1", "roc_auc", "pr_auc", "precision", "recall", "accuracy")
#: What each history event type reads as on the page.
DECISION_LABELS = {
    "promotion": "promoted",
    "rejection": "rejected",
    "rollback": "rolled back",
    "stage_change": "moved",
    "staging": "staged",
    "approval": "approval",
    "repair": "repaired",
    "prune": "pruned",
    # realized outcomes below the floor (cmms_mlflow.tracking.realized_outcomes)
    "retrain_request": "retraining requested",
}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _iso_from_ms(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else None


def drift_of(tags: dict[str, str]) -> dict[str, Any] | None:
    """The drift tags of a version (set by training from validate_data's report), or None."""
    if not tags.get("drift_status"):
        return None
    return {
        "status": tags["drift_status"],
        "maxPsi": _float(tags.get("drift_max_psi")),
        "threshold": _float(tags.get("drift_threshold")),
        "action": tags.get("drift_action") or None,
        "features": [f for f in (tags.get("drift_features") or "").split(",") if f],
    }


def artifacts_of(tags: Mapping[str, str]) -> dict[str, Any]:
    """Whether the version still has its artifacts: ``present``, or ``pruning`` / ``pruned`` by the
    spec's retention (``cmms_mlflow.registry.pruning``), with when and by whom."""
    status = tags.get(RETENTION_TAG) or ""
    return {
        "artifacts": status if status in (PRUNING, PRUNED) else "present",
        "prunedAt": tags.get("pruned_at") or None,
        "prunedBy": tags.get("pruned_by") or None,
    }


def decision_view(event: Mapping[str, Any]) -> dict[str, Any]:
    """One history event as the page shows it: what, which version (from → to stage), the champion
    before → after, who, when, why, and the Airflow run that made it (None for an API request)."""
    airflow = event.get("airflow") or {}
    dag_id, run_id = airflow.get("dag_id"), airflow.get("run_id")
    return {
        "seq": event.get("seq"),
        "type": event.get("type"),
        "decision": DECISION_LABELS.get(str(event.get("type")), str(event.get("type"))),
        "version": event.get("version"),
        "versions": list(event.get("versions") or []),  # a prune event's versions
        "fromStage": event.get("from_stage"),
        "toStage": event.get("to_stage"),
        "championBefore": event.get("champion_before"),
        "championAfter": event.get("champion_after"),
        "changed": event.get("changed", True),
        "by": event.get("actor") or "",
        # ``at`` is the event's own time (a DAG step's is its run's run_after, so a retry writes the
        # same event); ``recordedAt`` is when the history recorded it.
        "at": event.get("at"),
        "recordedAt": event.get("recorded_at"),
        "reason": event.get("reason") or "",
        "airflow": dict(airflow) or None,
        "status": event.get("status", "done"),
        "override": event.get("override"),
        "links": {"airflowRun": airflow_run_url(dag_id, run_id)},
    }


def recent_decisions(
    client: MlflowClient, name: str, limit: int = DECISIONS_LIMIT, *, version: str | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` events of the model's history (of one ``version`` if given), newest first."""
    return [decision_view(e) for e in history.read(client, name, limit=limit, version=version)]


def pending_approvals(
    versions: list[ModelVersion], approvers: Sequence[str] = (), *, training_dag_id: str | None = None
) -> list[dict[str, Any]]:
    """The versions waiting for a person's answer (``approval_status=pending``), newest first: when
    and by which Airflow run it was asked, who may answer (``approvers``; empty: anyone allowed to
    answer the DAG's human-in-the-loop tasks), until when, and Airflow's page to answer it.

    The asking run comes from a tag, which anyone with MLflow write access can edit: it counts only
    if it names ``training_dag_id`` (the model's spec's training DAG, the only one with an approval
    step for it) and a run id of Airflow's own shape; otherwise ``dagId``/``runId`` and the links
    are None (``requestedBy`` still shows the tag as text).

    Read from ``versions`` (the listing :func:`model_summary` already holds, tags included): no
    MLflow call of its own.
    """
    pending = []
    for mv in versions:
        tags = dict(mv.tags)
        if tags.get("approval_status") != PENDING:
            continue
        dag_id, run_id = asking_run(tags.get("approval_requested_by"), training_dag_id)
        hours = _float(tags.get("approval_timeout_hours"))
        requested_at = tags.get("approval_requested_at") or None
        pending.append({
            "version": str(mv.version),
            "stage": mv.current_stage,
            "requestedAt": requested_at,
            "requestedBy": tags.get("approval_requested_by") or None,
            "timeoutHours": hours,
            "expiresAt": _plus_hours(requested_at, hours),
            "approvers": list(approvers),
            "reason": tags.get("decision_reason") or "",
            "holdoutF1": _float(tags.get("validation_f1")),
            "championF1": _float(tags.get("champion_f1")),
            "dagId": dag_id,
            "runId": run_id,
            "taskId": APPROVAL_TASK_ID,
            "mapIndex": -1,
            "links": {
                "requiredActions": (
                    required_actions_url(dag_id, run_id, APPROVAL_TASK_ID) if dag_id and run_id else None
                ),
                "airflowRun": airflow_run_url(dag_id, run_id),
            },
        })  # fmt: skip
    return pending


def asking_run(tag: str | None, training_dag_id: str | None) -> tuple[str | None, str | None]:
    """``(dag_id, run_id)`` of an ``approval_requested_by`` tag when it names ``training_dag_id`` and a
    well-formed run id, else ``(None, None)``."""
    dag_id, run_id = requesting_run(tag) or (None, None)
    if training_dag_id is None or dag_id != training_dag_id or not DAG_ID_PATTERN.fullmatch(dag_id):
        return None, None
    if run_id is None or not RUN_ID_PATTERN.fullmatch(run_id):
        return None, None
    return dag_id, run_id


def _plus_hours(iso: str | None, hours: float | None) -> str | None:
    if not iso or hours is None:
        return None
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (at + timedelta(hours=hours)).isoformat(timespec="seconds")


def version_view(client: MlflowClient, hook: MlflowHook, mv: ModelVersion, aliases: dict) -> dict[str, Any]:
    """One version as the page shows it: stage, aliases, holdout metrics, decision, drift, links."""
    tags = dict(mv.tags)
    run = client.get_run(mv.run_id) if mv.run_id else None
    experiment_id = run.info.experiment_id if run is not None else None
    version = str(mv.version)
    return {
        "version": version,
        "stage": mv.current_stage,
        "aliases": sorted(a for a, v in aliases.items() if v == version),
        "runId": mv.run_id or None,
        "createdAt": _iso_from_ms(mv.creation_timestamp),
        "holdout": {m: _float(tags.get(f"validation_{m}")) for m in HOLDOUT_METRICS},
        # The alert threshold chosen on its validation data (None: a version from before, 0.5).
        "decisionThreshold": _float(tags.get("decision_threshold")),
        "validationMetrics": dict(run.data.metrics) if run is not None else {},
        "championF1AtValidation": _float(tags.get("champion_f1")),
        "championVersionAtValidation": tags.get("champion_version") or None,
        "status": tags.get("validation_status") or None,
        "reason": tags.get("decision_reason") or tags.get("rejection_reason") or "",
        "dataVersion": tags.get("data_version") or None,
        "dataDigest": tags.get("data_digest") or None,
        "estimator": tags.get("estimator") or None,
        "promotedAt": tags.get("promoted_at") or None,
        "promotedBy": tags.get("promoted_by") or None,
        "promotionReason": tags.get("promotion_reason") or None,
        "approvalStatus": tags.get("approval_status") or None,
        "approvalOverride": (
            {
                "of": tags["approval_override"],
                "by": tags.get("approval_override_by") or None,
                "reason": tags.get("approval_override_reason") or "",
            }
            if tags.get("approval_override")
            else None
        ),  # fmt: skip
        "drift": drift_of(tags),
        **artifacts_of(tags),
        "tuning": tuning_of(run.data if run is not None else None),
        "links": {
            "mlflowVersion": hook.model_version_url(mv.name, version),
            "mlflowRun": hook.run_url(experiment_id, mv.run_id) if experiment_id else None,
            # Built from the run's ids on this Airflow's address, never a URL taken from a tag.
            "airflowRun": airflow_run_url(tags.get("airflow.dag_id"), tags.get("airflow.run_id")),
        },
    }


def tuning_of(data: Any) -> dict[str, Any] | None:
    """A tuned model's study in brief (from its run's params, metrics and tags), or None."""
    if data is None or "tuning_trials" not in data.params:
        return None
    metric = data.params.get("tuning_metric", "")
    return {
        "study": data.tags.get("cmms.tuning.study"),
        "trials": int(data.params["tuning_trials"]),
        "metric": metric,
        "bestValue": data.metrics.get(f"tuning_best_{metric}"),
        "bestSlot": data.params.get("tuning_best_slot"),
        "states": data.tags.get("tuning_states"),
    }


def model_summary(
    client: MlflowClient,
    hook: MlflowHook,
    name: str,
    limit: int = DECISIONS_LIMIT,
    *,
    approvers: Sequence[str] = (),
    training_dag_id: str | None = None,
) -> dict:
    """Champion, challenger (or the last candidate), decisions, drift and pending approvals of
    ``name`` (``approvers``: who the model's spec lets answer an approval; ``training_dag_id``: its
    spec's training DAG, the only DAG whose approval requests count)."""
    try:
        model = model_registry.get_model(client, name)
    except ModelNotFoundError:
        return {"registered": False, "champion": None, "challenger": None, "lastCandidate": None,
                "previousChampion": None, "decisions": [], "drift": None, "pendingApprovals": [],
                "versions": 0, "links": {"mlflowModel": _model_url(hook, name)}}  # fmt: skip
    aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    # Bounded reads, whatever the model's age: the recent versions, the aliased ones, those waiting
    # for approval and the newest of each stage (registry.lean_versions), never every version.
    listed = model_registry.lean_versions(client, name, model, set(aliases.values()))
    versions = sorted(listed.values(), key=lambda v: int(v.version), reverse=True)
    by_number = {str(v.version): v for v in versions}
    champion = by_number.get(aliases.get(model_registry.CHAMPION, ""))
    if champion is None:  # stages and aliases agree when the registry is healthy; fall back to the stage
        champion = next((v for v in versions if v.current_stage == "Production"), None)
    challenger = by_number.get(aliases.get(model_registry.CHALLENGER, ""))
    candidate = next((v for v in versions if champion is None or v.version != champion.version), None)
    drifted = next((v for v in versions if drift_of(dict(v.tags))), None)
    drift = drift_of(dict(drifted.tags)) if drifted is not None else None
    if drifted is not None and drift is not None:
        drift["version"] = str(drifted.version)
    return {
        "registered": True,
        # The newest version's number: how many were registered (duplicates deleted at registration
        # excepted), without counting them one by one.
        "versions": int(versions[0].version) if versions else 0,
        "champion": version_view(client, hook, champion, aliases) if champion is not None else None,
        "challenger": version_view(client, hook, challenger, aliases) if challenger is not None else None,
        "lastCandidate": (
            version_view(client, hook, candidate, aliases)
            if candidate is not None and challenger is None
            else None
        ),  # fmt: skip
        "previousChampion": aliases.get(model_registry.PREVIOUS_CHAMPION),
        "decisions": recent_decisions(client, name, limit),
        "drift": drift,
        "pendingApprovals": pending_approvals(versions, approvers, training_dag_id=training_dag_id),
        "links": {"mlflowModel": _model_url(hook, name)},
    }


def _model_url(hook: MlflowHook, name: str) -> str:
    return f"{hook.ui_url}/#/models/{quote(name, safe='')}"


def plot_paths(client: MlflowClient, run_id: str) -> dict[str, str]:
    """``{plot id: artifact path}`` of a training run's PNG plots, from its own artifact listing."""
    plots: dict[str, str] = {}
    for info in client.list_artifacts(run_id, EVALUATION_DIR):
        stem = Path(info.path).stem
        if not info.is_dir and info.path.endswith(".png") and PLOT_ID.fullmatch(stem):
            plots[f"{EVALUATION_DIR}.{stem}"] = info.path
    if any(i.path == DRIFT_PLOT for i in client.list_artifacts(run_id, str(Path(DRIFT_PLOT).parent))):
        plots["drift"] = DRIFT_PLOT
    for info in client.list_artifacts(run_id, TUNING_DIR):
        stem = Path(info.path).stem
        if not info.is_dir and info.path.endswith(".png") and PLOT_ID.fullmatch(stem):
            plots[f"{TUNING_DIR}.{stem}"] = info.path
    return plots


def read_artifact(client: MlflowClient, run_id: str, path: str) -> bytes:
    """The bytes of one artifact of ``run_id`` (``path`` comes from :func:`plot_paths`)."""
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def version_detail(client: MlflowClient, hook: MlflowHook, name: str, version: str) -> dict[str, Any]:
    """One version with its decision record (``validation/decision.json``), its plots' ids and its
    history (the events about it, newest first)."""
    from cmms_mlflow.tracking.model_evaluation import recorded_decision

    mv = client.get_model_version(name, version)
    aliases = model_registry.aliases_of(client, name)
    view = version_view(client, hook, mv, aliases)
    view["name"] = name
    view["description"] = mv.description or ""
    view["decisionRecord"] = recorded_decision(client, mv.run_id) if mv.run_id else None
    view["history"] = recent_decisions(client, name, VERSION_HISTORY_LIMIT, version=str(mv.version))
    view["plots"] = sorted(plot_paths(client, mv.run_id)) if mv.run_id else []
    view["modelCard"] = model_card_text(client, mv.run_id) if mv.run_id else None
    view["champion"] = aliases.get(model_registry.CHAMPION)
    view["previousChampion"] = aliases.get(model_registry.PREVIOUS_CHAMPION)
    view["outcomes"] = outcomes_of(client, name, str(mv.version))
    return view


def outcomes_of(client: MlflowClient, name: str, version: str) -> dict[str, Any] | None:
    """The version's realized outcomes for the page (``cmms_mlflow.tracking.realized_outcomes``): its
    window and the newest :data:`OUTCOME_DAYS_SHOWN` days, or None when they were never measured."""
    from cmms_mlflow.tracking.realized_outcomes import performance_of

    found = performance_of(client, name, version)
    if not found:
        return None
    return {
        "window": found.get("window"),
        "windowDays": found.get("window_days"),
        "knownUntil": found.get("known_until"),
        "pending": found.get("pending"),
        "days": list(found.get("days") or [])[-OUTCOME_DAYS_SHOWN:],
    }


#: Days of realized outcomes a version page shows (the route serves them all).
OUTCOME_DAYS_SHOWN = 60


#: Largest model card the page shows (ours are a few KB; a run's artifact could be anything).
MODEL_CARD_MAX_BYTES = 256 * 1024


def model_card_text(client: MlflowClient, run_id: str) -> str | None:
    """The version's ``model_card.md`` as text (None: none yet), cut at ``MODEL_CARD_MAX_BYTES``.

    Plain text for the page, which shows it preformatted through ``textContent``: a column name
    like ``<script>`` in the card stays characters on the screen.
    """
    from cmms_mlflow.tracking.card_logging import read_card

    text = read_card(client, run_id)
    if text is None:
        return None
    encoded = text.encode("utf-8")
    if len(encoded) <= MODEL_CARD_MAX_BYTES:
        return text
    return encoded[:MODEL_CARD_MAX_BYTES].decode("utf-8", errors="ignore") + "\n\n[… cut: the card is larger]"
