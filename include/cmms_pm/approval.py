"""Human approval before Production, as pure functions: where a validated run goes next, and what a
person's answer (or its absence) means for the version.

The Airflow side (``cmms_mlflow.operators.approval_ops``) asks through Airflow's human-in-the-loop
operator and records :func:`approval_outcome` on the model version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

APPROVE, REJECT = "Approve", "Reject"
APPROVED, REJECTED, TIMED_OUT = "approved", "rejected", "timed_out"
#: Steps after validation: straight to Production, ask a person first, or archive.
PROMOTE_STEP, APPROVAL_STEP, REJECT_STEP = "promote", "approve", "reject"
#: The training DAG's human-in-the-loop task (not mapped: Airflow's map index -1).
APPROVAL_TASK_ID = "approve_promotion"
#: ``approval_status`` of a version whose request waits for an answer.
PENDING = "pending"
_REQUESTED_BY_PREFIX = "airflow:"


def requested_by(dag_id: str, run_id: str) -> str:
    """The ``approval_requested_by`` tag of a request: the Airflow run that asks."""
    return f"{_REQUESTED_BY_PREFIX}{dag_id}/{run_id}"


def requesting_run(tag: str | None) -> tuple[str, str] | None:
    """``(dag_id, run_id)`` of an ``approval_requested_by`` tag (a DAG id has no ``/``), else None."""
    if not tag or not tag.startswith(_REQUESTED_BY_PREFIX) or "/" not in tag:
        return None
    dag_id, run_id = tag[len(_REQUESTED_BY_PREFIX) :].split("/", 1)
    return (dag_id, run_id) if dag_id and run_id else None


def next_step(decision: str, approval_required: bool) -> str:
    """``decision`` is the validation's (``promote``/``reject``): only a version that passed is
    shown to a person; one that failed is archived without asking anyone."""
    if decision != "promote":
        return REJECT_STEP
    return APPROVAL_STEP if approval_required else PROMOTE_STEP


def approval_outcome(
    *,
    chosen: Sequence[str],
    user: Mapping[str, Any] | None,
    comment: str | None,
    timed_out: bool,
    timeout_hours: float,
    responded_at: str | None,
) -> dict[str, Any]:
    """What the answer means: ``status`` (approved / rejected / timed_out), who, when, the comment and
    the reason recorded on the version (a rejection's and a timeout's become its archive reason).

    Nobody answering is never an approval, whatever option the timeout recorded.
    """
    comment = (comment or "").strip()
    who = str((user or {}).get("id") or (user or {}).get("name") or "")
    if timed_out or not who:
        status = TIMED_OUT
        reason = f"approval timed out: no answer within {timeout_hours:g} h"
    elif list(chosen) == [APPROVE]:
        status = APPROVED
        reason = f"approved by {who}"
    else:
        status = REJECTED
        reason = f"rejected by {who}"
    if comment and status != TIMED_OUT:
        reason += f": {comment}"
    return {
        "status": status,
        "by": who or None,
        "comment": comment,
        "at": responded_at,
        "reason": reason,
        "timeout_hours": timeout_hours,
    }


def approval_tags(outcome: Mapping[str, Any]) -> dict[str, str]:
    """The model-version tags of an answer (empty strings for what does not apply)."""
    return {
        "approval_status": outcome["status"],
        "approval_by": outcome.get("by") or "",
        "approval_comment": outcome.get("comment") or "",
        "approval_at": outcome.get("at") or "",
        "approval_reason": outcome["reason"],
    }
