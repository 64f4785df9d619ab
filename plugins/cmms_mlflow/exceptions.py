"""Typed errors of the MLflow plugin.

A subclass of ``AirflowFailException`` means "a retry cannot help" (bad input, a gate that
failed, a registry in a state we refuse to touch); anything else is left retryable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class MlflowPluginError(AirflowException):
    """Base class of every error raised by the plugin."""


class MlflowConfigurationError(MlflowPluginError, AirflowFailException):
    """The MLflow connection or an environment setting is unusable."""


class MlflowRegistryError(MlflowPluginError, AirflowFailException):
    """The registry refused a request that will not succeed on retry (unknown model, bad value)."""


class MlflowServiceUnavailable(MlflowPluginError):
    """The tracking server could not be reached, did not answer in time, or answered 5xx.

    Airflow's retry may succeed once the server is back.
    """


def server_did_not_answer(url: str, timeout: int, retries: int) -> MlflowServiceUnavailable:
    return MlflowServiceUnavailable(
        f"MLflow server at {url!r} did not answer within {timeout} s "
        f"({retries + 1} attempt(s); connection extras request_timeout={timeout}, max_retries={retries})"
    )


class LockTimeoutError(MlflowPluginError):
    """A lock stayed held by someone else past the timeout; a later retry may get it."""


def lock_timed_out(label: str, holder: str, waited: float, timeout: float) -> LockTimeoutError:
    return LockTimeoutError(
        f"{label} is still held by {holder!r} after waiting {waited:.1f} s (timeout {timeout:g} s)"
    )


class LockRefusedError(MlflowPluginError, AirflowFailException):
    """A lock folder or file is unsafe to use (symlink, another owner, writable by others)."""


def lock_dir_refused(path: object, problem: str) -> LockRefusedError:
    return LockRefusedError(
        f"lock folder {str(path)!r} refused: {problem}; use a private folder (mode 0700, owned by "
        "this user), e.g. set CMMS_LOCK_DIR"
    )


def lock_file_refused(path: object, problem: str) -> LockRefusedError:
    return LockRefusedError(f"lock file {str(path)!r} refused: {problem}")


class RegistryLockUnavailable(MlflowPluginError):
    """The cross-host lock's database could not be reached, or the lock was lost while held;
    a retry may succeed."""


def lock_unreachable(label: str, err: BaseException) -> RegistryLockUnavailable:
    return RegistryLockUnavailable(f"{label}: the database did not answer ({type(err).__name__}: {err})")


def lock_lost(label: str, err: BaseException) -> RegistryLockUnavailable:
    return RegistryLockUnavailable(
        f"{label} was lost while held (its connection failed: {type(err).__name__}); nothing more was "
        "written, the next attempt repairs from a fresh snapshot"
    )


def lock_mode_invalid(mode: str) -> MlflowConfigurationError:
    return MlflowConfigurationError(f"CMMS_REGISTRY_LOCK={mode!r}: expected 'auto', 'postgres' or 'file'")


def lock_connection_missing(conn_id: str) -> MlflowConfigurationError:
    return MlflowConfigurationError(
        f"CMMS_REGISTRY_LOCK=postgres but the Airflow connection {conn_id!r} is not defined: point it at "
        "the Airflow metadata database (or any PostgreSQL every worker and the api-server reach)"
    )


def lock_connection_invalid(conn_id: str, problem: str) -> MlflowConfigurationError:
    return MlflowConfigurationError(
        f"Airflow connection {conn_id!r} cannot hold the registry lock: {problem}"
    )


class ModelValidationError(MlflowPluginError, AirflowFailException):
    """The staged model cannot be validated (wrong stage, unreadable holdout, ...)."""


class PromotionConflictError(MlflowPluginError, AirflowFailException):
    """The champion changed between validation and promotion (compare-and-set failed)."""


def unknown_stage(stage: str) -> MlflowRegistryError:
    return MlflowRegistryError(f"stage {stage!r} is not one of 'None', 'Staging', 'Production', 'Archived'")


def version_not_in_stage(name: str, version: str, expected: str, actual: str) -> ModelValidationError:
    return ModelValidationError(
        f"model {name!r} version {version!r} is in stage {actual!r}, expected {expected!r}"
    )


def invalid_decision_threshold(name: str, version: str, value: str) -> ModelValidationError:
    return ModelValidationError(
        f"model {name!r} version {version!r} has decision_threshold {value!r}, not a number strictly "
        "between 0 and 1; fix or remove the tag (a version without one alerts at 0.5)"
    )


def champion_changed(name: str, expected: str | None, actual: str | None) -> PromotionConflictError:
    return PromotionConflictError(
        f"champion of model {name!r} changed since validation: expected version {expected!r}, "
        f"found {actual!r}; re-run validation against the new champion"
    )


class BadDataError(MlflowPluginError, AirflowFailException):
    """The data batch is unusable; retrying the same interval gives the same bytes."""


@contextmanager
def bad_data_fails_the_task() -> Iterator[None]:
    """Turn ``cmms_pm`` data errors into a non-retryable task failure carrying the same message."""
    from cmms_pm.exceptions import CmmsPmError

    try:
        yield
    except CmmsPmError as err:
        raise BadDataError(f"{type(err).__name__}: {err}") from err


class ModelNotFoundError(MlflowRegistryError):
    """The registered model, or the version asked for, does not exist."""


def model_not_found(name: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"registered model {name!r} does not exist")


def version_not_found(name: str, version: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"model {name!r} has no version {version!r}")


def no_production_version(name: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"model {name!r} has no Production version (no champion)")


def champion_cannot_leave_production(name: str, version: str, stage: str) -> PromotionConflictError:
    return PromotionConflictError(
        f"model {name!r} version {version!r} is the champion; moving it to {stage!r} would leave no "
        "Production version: promote another version (or roll back) instead"
    )


def approval_pending(name: str, version: str, requested_by: str | None) -> PromotionConflictError:
    return PromotionConflictError(
        f"model {name!r} version {version!r} is waiting for a person's approval"
        f"{f' (asked by {requested_by})' if requested_by else ''}: answer it in Airflow's Required "
        "actions, or archive the version; it cannot be promoted around the request"
    )


def version_pruned(name: str, version: str, stage: str | None = None) -> PromotionConflictError:
    """A version whose artifacts retention removed: it can serve no more (the spec's ``retention``)."""
    where = f" to {stage}" if stage else ""
    return PromotionConflictError(
        f"model {name!r} version {version!r} cannot move{where}: its artifacts were removed by retention "
        "(tag retention_status); register a new version instead"
    )


def artifacts_pruned(name: str, version: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {name!r} version {version!r} cannot be loaded: its artifacts were removed by retention "
        "(tag retention_status); its tags, metrics and history remain"
    )


def history_token_invalid() -> MlflowRegistryError:
    return MlflowRegistryError("invalid pageToken: pass the nextPageToken of the previous page unchanged")


class ApprovalAuthorityError(MlflowRegistryError):
    """The caller may not make this registry change: the model's spec requires approval and the
    caller is not one of its approvers, or the step's own approval is missing (the model API: 403)."""


class ModelOwnershipError(MlflowRegistryError):
    """A run or a task was given a registered model its spec does not own (a model belongs to one
    spec; its DAGs and its requests write to no other). A retry cannot help."""


def model_not_owned(spec: str, own: str, given: str) -> ModelOwnershipError:
    return ModelOwnershipError(
        f"model {given!r} is not spec {spec!r}'s registered model {own!r}: a spec's DAGs and requests "
        "write only to the model it owns; nothing was written"
    )


def _approvers_text(details: dict) -> str:
    approvers = details.get("approvers") or []
    return f"its approvers: {', '.join(approvers)}" if approvers else "anyone who may answer its approvals"


def not_an_approver(details: dict) -> ApprovalAuthorityError:
    if details.get("spec") is None:
        who = details.get("actor") or "this caller"
        return ApprovalAuthorityError(
            f"{who} may not override the {details.get('status')} approval of model {details['name']!r} "
            f"version {details['version']!r}: no spec owns the model, so nobody is its approver"
        )
    return ApprovalAuthorityError(
        f"{details.get('actor') or 'this caller'} may not move model {details['name']!r} version "
        f"{details['version']!r} to Production: spec {details['spec']!r} requires approval, and outside its "
        f"approval step only {_approvers_text(details)} may promote or roll back"
    )


def approval_not_granted(details: dict) -> PromotionConflictError:
    status = str(details.get("status") or "").replace("_", " ")
    by = f" by {details['answered_by']}" if details.get("answered_by") else ""
    return PromotionConflictError(
        f"model {details['name']!r} version {details['version']!r} was {status}{by} at its approval step: "
        "it goes to Production only when an approver overrides the answer with a reason "
        "(model API: overrideApproval=true; model_promotion: override_approval)"
    )


def approval_missing(details: dict) -> ApprovalAuthorityError:
    return ApprovalAuthorityError(
        f"model {details['name']!r} version {details['version']!r} was not approved "
        f"(approval_status={details.get('status')!r}) but spec {details['spec']!r} requires approval: "
        "the run cannot promote it without its approval step"
    )


def refused(code: str, details: dict) -> MlflowPluginError:
    """The typed error of a plan's refusal (``cmms_pm.registry_plan.Refusal``)."""
    if code == "version_not_found":
        return version_not_found(details["name"], details["version"])
    if code == "unknown_stage":
        return unknown_stage(details["stage"])
    if code == "champion_changed":
        return champion_changed(details["name"], details["expected"], details["actual"])
    if code == "champion_cannot_leave_production":
        return champion_cannot_leave_production(details["name"], details["version"], details["stage"])
    if code == "approval_pending":
        return approval_pending(details["name"], details["version"], details["requested_by"])
    if code == "version_pruned":
        return version_pruned(details["name"], details["version"], details["stage"])
    if code == "not_an_approver":
        return not_an_approver(details)
    if code == "approval_not_granted":
        return approval_not_granted(details)
    if code == "approval_missing":
        return approval_missing(details)
    return MlflowRegistryError(f"registry change refused ({code}): {details!r}")


def no_previous_champion(name: str) -> PromotionConflictError:
    return PromotionConflictError(f"model {name!r} has no previous champion to roll back to")


class SourceConfigurationError(MlflowPluginError, AirflowFailException):
    """A data source's connection or settings are unusable (missing connection, no credentials, not a
    SQL connection, a table or query the database rejects); fix the setting, a retry cannot help."""


class SourceUnavailableError(MlflowPluginError):
    """A data source could not be reached (storage or database down, timeout); a retry may succeed."""


@contextmanager
def source_errors_fail_the_task() -> Iterator[None]:
    """Data-source errors of ``cmms_pm``: unreachable storage stays retryable, everything else
    (refused path, missing file, bad content) fails the task for good with the same message."""
    from cmms_pm.exceptions import CmmsPmError, DataSourceUnavailableError

    try:
        yield
    except DataSourceUnavailableError as err:
        raise SourceUnavailableError(f"{type(err).__name__}: {err}") from err
    except CmmsPmError as err:
        raise BadDataError(f"{type(err).__name__}: {err}") from err


class UntrustedModelError(MlflowPluginError, AirflowFailException):
    """A model version this package will not load: not skops, types outside the estimator's trusted
    list, or not produced by this package's pipeline. Retrying loads the same artifact."""


def model_not_skops(name: str, version: str, problem: str) -> UntrustedModelError:
    return UntrustedModelError(
        f"model {name!r} version {version!r} refused before deserializing: {problem}; only skops "
        "models written by this package's training step are loaded (pickle can run code)"
    )


def model_without_provenance(name: str, version: str, problem: str) -> UntrustedModelError:
    return UntrustedModelError(
        f"model {name!r} version {version!r} was not produced by this package's pipeline: {problem}; "
        "set allow_unverified_models: true in the spec's loading section to load it anyway"
    )


def model_has_untrusted_types(name: str, version: str, types: list[str]) -> UntrustedModelError:
    return UntrustedModelError(
        f"model {name!r} version {version!r} refused: its skops file holds types outside the "
        f"estimator's trusted list: {types!r}"
    )


class NotificationError(MlflowPluginError):
    """A notification could not be delivered (channel down, refused, misconfigured). Logged by the
    notifier; it never fails the step whose event it reports. ``http_status``: the HTTP answer's
    (not ``status_code``: Airflow's exceptions use that for the status its API answers with)."""

    http_status: int | None = None


def webhook_refused(conn_id: str, problem: str) -> NotificationError:
    return NotificationError(f"webhook connection {conn_id!r} refused: {problem}")


class DeliveryUnavailable(MlflowPluginError):
    """Scores could not be delivered now (database or webhook down, timeouts, HTTP 5xx); the
    ``deliver`` task's retry delivers them again (the table upsert and the webhook's idempotency
    keys make that safe)."""


class DeliveryRefusedError(MlflowPluginError, AirflowFailException):
    """The delivery target refuses for good (a table that does not fit, HTTP 4xx, no such
    connection): fix the target or the spec's ``delivery``; a retry cannot help."""
