"""Airflow hook for MLflow tracking and registry servers.

Where MLflow lives is decided once, here, in this order:

1. the Airflow connection ``mlflow_default`` (conn type ``mlflow``): host = tracking URI,
   login/password for basic-auth, extras ``registry_uri``, ``token``, ``ui_url``,
   ``artifact_location``, ``request_timeout``, ``max_retries``;
2. the standard ``MLFLOW_TRACKING_URI`` environment variable;
3. the embedded default: a SQLite DB and an artifact folder under ``CMMS_MLFLOW_HOME``
   (default ``<project>/.mlflow``), so a laptop needs no server at all.

Inside :meth:`MlflowHook.session` MLflow uses the connection's URI, credentials and HTTP bounds
for this thread (or asyncio task) only: they are never written to ``os.environ``, so
overlapping sessions with different credentials do not mix and subprocesses inherit no secret
(:mod:`cmms_mlflow.hooks.client_context`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlparse

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from cmms_mlflow.exceptions import MlflowConfigurationError

if TYPE_CHECKING:
    from mlflow import MlflowClient

PROJECT_DIR = Path(__file__).resolve().parents[2]

# Bounded waits: MLflow's defaults (7 retries, backoff 2, 120 s timeout) can block one call
# for many minutes, longer than any task's execution_timeout.
DEFAULT_REQUEST_TIMEOUT = 30
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_FACTOR = 1

# SQLite stores whose schema this process has created/upgraded (once per store, not per session).
_SCHEMA_READY: set[Path] = set()
_SCHEMA_READY_LOCK = threading.Lock()


def embedded_home() -> Path:
    """Folder of the embedded MLflow (SQLite DB + artifacts)."""
    return Path(os.environ.get("CMMS_MLFLOW_HOME") or PROJECT_DIR / ".mlflow").resolve()


def embedded_tracking_uri() -> str:
    return f"sqlite:///{embedded_home() / 'mlflow.db'}"


@dataclass(frozen=True)
class MlflowSettings:
    """Resolved MLflow endpoint for one hook; ``password``/``token`` are never logged."""

    tracking_uri: str
    registry_uri: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    ui_url: str | None = None
    artifact_location: str | None = None
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    source: str = "embedded"

    @property
    def is_remote(self) -> bool:
        return urlparse(self.tracking_uri).scheme in ("http", "https")

    @property
    def sqlite_path(self) -> Path | None:
        """Path of the SQLite DB behind the tracking URI, if it is one."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        return Path(unquote(self.tracking_uri[len("sqlite:///") :]))

    def client_settings(self) -> dict[str, str | None]:
        """MLflow's client settings for one session (see :mod:`cmms_mlflow.hooks.client_context`)."""
        values: dict[str, str | None] = {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_REGISTRY_URI": self.registry_uri or self.tracking_uri,
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.request_timeout),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(DEFAULT_BACKOFF_FACTOR),
        }
        if self.username or self.password or self.token:
            # The connection's credentials, and none that the process environment may hold.
            values.update(
                MLFLOW_TRACKING_USERNAME=self.username,
                MLFLOW_TRACKING_PASSWORD=self.password,
                MLFLOW_TRACKING_TOKEN=self.token,
            )
        return values


def _tracking_uri_from_connection(conn: Any) -> str:
    host = (conn.host or "").strip()
    if "://" in host:
        return host.rstrip("/")
    if not host:
        return ""
    scheme = (conn.extra_dejson.get("scheme") or "http").strip()
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}"


def _default_artifact_location(settings_uri: str, explicit: str | None) -> str | None:
    """Artifact root for experiments created against a local (SQLite/file) store.

    Without it MLflow would use ``./mlruns`` relative to whatever directory the worker runs in.
    Remote servers decide their own artifact root, so nothing is forced on them.
    """
    if explicit:
        return explicit
    if not settings_uri.startswith("sqlite:///"):
        return None
    db_path = Path(unquote(settings_uri[len("sqlite:///") :]))
    return (db_path.parent / "artifacts").resolve().as_uri()


def resolve_settings(conn: Any | None) -> MlflowSettings:
    """Build :class:`MlflowSettings` from a connection (or ``None``) and the environment."""
    env_artifacts = os.environ.get("CMMS_MLFLOW_ARTIFACT_ROOT") or None
    if conn is not None and _tracking_uri_from_connection(conn):
        extra = conn.extra_dejson
        uri = _tracking_uri_from_connection(conn)
        try:
            timeout = int(extra.get("request_timeout", DEFAULT_REQUEST_TIMEOUT))
            retries = int(extra.get("max_retries", DEFAULT_MAX_RETRIES))
        except (TypeError, ValueError) as err:
            raise MlflowConfigurationError(
                f"connection {conn.conn_id!r}: request_timeout/max_retries must be integers"
            ) from err
        return MlflowSettings(
            tracking_uri=uri,
            registry_uri=extra.get("registry_uri") or None,
            username=conn.login or None,
            password=conn.password or None,
            token=extra.get("token") or None,
            ui_url=extra.get("ui_url") or None,
            artifact_location=_default_artifact_location(
                uri, extra.get("artifact_location") or env_artifacts
            ),
            request_timeout=timeout,
            max_retries=retries,
            source=f"connection {conn.conn_id!r}",
        )
    uri = os.environ.get("MLFLOW_TRACKING_URI") or ""
    source = "MLFLOW_TRACKING_URI"
    if not uri:
        uri, source = embedded_tracking_uri(), "embedded"
    return MlflowSettings(
        tracking_uri=uri,
        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or None,
        ui_url=os.environ.get("CMMS_MLFLOW_UI_URL") or None,
        artifact_location=_default_artifact_location(uri, env_artifacts),
        source=source,
    )


class MlflowHook(BaseHook):
    """Talks to an MLflow tracking server / registry described by an Airflow connection."""

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "Tracking URI", "login": "Username", "password": "Password"},
            "placeholders": {
                "host": "http://127.0.0.1:5000",
                "login": "pipeline user (basic-auth only)",
                "password": "its password (basic-auth only)",
                "extra": '{"registry_uri": "", "token": "", "ui_url": "", "request_timeout": 30, '
                '"max_retries": 3}',
            },
        }

    @cached_property
    def settings(self) -> MlflowSettings:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            conn = None
        settings = resolve_settings(conn)
        # Airflow masks a connection's password when a task reads it; mask here too so the
        # hook is safe wherever it runs (api-server plugins, scripts), and the token as well.
        from airflow.sdk.log import mask_secret

        for secret in (settings.password, settings.token):
            if secret:
                mask_secret(secret)
        self.log.info("MLflow tracking URI %s (from %s)", redact_uri(settings.tracking_uri), settings.source)
        return settings

    @cached_property
    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.registry_uri)

    @property
    def lock_dir(self) -> Path:
        """Folder of the registry locks: next to a SQLite store, else ``CMMS_LOCK_DIR``."""
        if self.settings.sqlite_path is not None:
            return self.settings.sqlite_path.parent / "locks"
        return Path(os.environ.get("CMMS_LOCK_DIR") or Path(tempfile.gettempdir()) / "cmms-mlflow-locks")

    @property
    def ui_url(self) -> str:
        """Base URL of the MLflow UI, for links from Airflow."""
        if self.settings.ui_url:
            return self.settings.ui_url.rstrip("/")
        if self.settings.is_remote:
            return self.settings.tracking_uri.rstrip("/")
        return (os.environ.get("CMMS_MLFLOW_UI_URL") or "http://127.0.0.1:5000").rstrip("/")

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url}/#/models/{quote(name, safe='')}/versions/{version}"

    @contextmanager
    def session(self) -> Iterator[MlflowClient]:
        """Yield the client; until exit, MLflow in this thread uses this connection's settings.

        Covers the client and MLflow's fluent API (``mlflow.start_run``, ``log_model``,
        ``load_model`` of ``models:/`` URIs, artifact up/downloads); overlapping sessions in other
        threads keep their own settings, and nothing is written to ``os.environ``.
        """
        from cmms_mlflow.hooks.client_context import client_settings

        settings = self.settings
        _refuse_process_wide_uris(settings)
        with client_settings(settings.client_settings()):
            if settings.sqlite_path is not None:
                self._ensure_sqlite_schema(settings.sqlite_path)
            yield self.client

    def _ensure_sqlite_schema(self, db_path: Path) -> None:
        """Create/upgrade the SQLite schema once per process, under a file lock.

        Several tasks opening a fresh DB at once race on MLflow's alembic migration
        ("table _alembic_tmp_... already exists"); the first one migrates, the others wait.
        """
        from cmms_mlflow.hooks import locks

        if db_path in _SCHEMA_READY:
            return
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with _SCHEMA_READY_LOCK, locks.file_lock(self.lock_dir, locks.lock_file_name(db_path.name, "schema")):
            if db_path not in _SCHEMA_READY:
                self.client.search_experiments(max_results=1)
                _SCHEMA_READY.add(db_path)

    def get_or_create_experiment(self, client: MlflowClient, name: str) -> str:
        """Experiment id for ``name``, created with the configured artifact location if missing."""
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self.settings.artifact_location)
        except MlflowException as err:  # created concurrently by another task
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise err
            return experiment.experiment_id

    def test_connection(self) -> tuple[bool, str]:
        try:
            with self.session() as client:
                client.search_experiments(max_results=1)
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        return True, f"Connected to MLflow at {redact_uri(self.settings.tracking_uri)}"


def redact_uri(uri: str) -> str:
    """Drop any user:password@ part of a URI before it reaches a log line."""
    parsed = urlparse(uri)
    if parsed.password or parsed.username:
        netloc = parsed.hostname or ""
        if parsed.port:
            netloc += f":{parsed.port}"
        return parsed._replace(netloc=netloc).geturl()
    return uri


def _refuse_process_wide_uris(settings: MlflowSettings) -> None:
    """``mlflow.set_tracking_uri``/``set_registry_uri`` would override the session for the fluent API."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    wanted = {
        "mlflow.set_tracking_uri": (tracking_utils._tracking_uri, settings.tracking_uri),
        "mlflow.set_registry_uri": (
            registry_utils._registry_uri,
            settings.registry_uri or settings.tracking_uri,
        ),
    }
    for setter, (process_wide, session) in wanted.items():
        if process_wide is not None and process_wide != session:
            raise MlflowConfigurationError(
                f"{setter}({redact_uri(process_wide)!r}) was called in this process, so MLflow's fluent "
                f"API would not use {settings.source} ({redact_uri(session)!r}); call {setter}(None), "
                "the hook chooses the URI per session"
            )
