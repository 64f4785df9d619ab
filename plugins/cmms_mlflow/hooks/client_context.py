"""MLflow client settings (URI, credentials, HTTP bounds) per session, never in ``os.environ``.

MLflow reads its client settings at request time from environment variables, through the
objects of ``mlflow.environment_variables`` (``get_default_host_creds`` for the credentials,
``http_request`` for the timeout and retries, ``get_tracking_uri``/``get_registry_uri`` for the
fluent API). Writing them to ``os.environ`` makes them process-wide: two threads with different
credentials overwrite each other, and every subprocess inherits the password.

Here the values of one session live in a :class:`contextvars.ContextVar` (one per thread and
per asyncio task, never inherited by a subprocess), and the MLflow setting objects listed in
:data:`SESSION_VARIABLES` read it before ``os.environ``. MLflow's artifact thread pools (model
downloads run in them) run each job in the context of the code that submitted it, so a
download authenticates as the session that asked for it. Outside a session nothing changes:
MLflow reads the environment as usual.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

#: The MLflow settings a session owns (names of ``mlflow.environment_variables`` objects).
SESSION_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION",
)

_SESSION: contextvars.ContextVar[Mapping[str, str | None] | None] = contextvars.ContextVar(
    "cmms_mlflow_client_settings", default=None
)
_INSTALL_LOCK = threading.Lock()
_installed = False


@contextmanager
def client_settings(values: Mapping[str, str | None]) -> Iterator[None]:
    """MLflow reads ``values`` (``None``: unset) for these names in this thread/task until exit."""
    unknown = set(values) - set(SESSION_VARIABLES)
    if unknown:
        raise ValueError(f"not session settings: {sorted(unknown)!r}")
    _install()
    token = _SESSION.set(MappingProxyType(dict(values)))
    try:
        yield
    finally:
        _SESSION.reset(token)


@contextmanager
def pickle_loading_disabled() -> Iterator[None]:
    """MLflow's own model loaders refuse to deserialize (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` reads
    ``false``) in this thread/task until exit; the session's other settings stay as they are."""
    with client_settings({**(_SESSION.get() or {}), "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}):
        yield


def _install() -> None:
    """Make MLflow's setting objects and artifact thread pools session-aware (once per process)."""
    global _installed
    if _installed:
        return
    with _INSTALL_LOCK:
        if _installed:
            return
        from mlflow import environment_variables
        from mlflow.store.artifact.artifact_repo import ArtifactRepository

        for name in SESSION_VARIABLES:
            variable = getattr(environment_variables, name)
            variable.__class__ = _session_aware(type(variable))
        ArtifactRepository._create_thread_pool = _jobs_keep_context(ArtifactRepository._create_thread_pool)
        _installed = True


#: One session-aware subclass per MLflow variable class (a dict, not ``functools.cache``, whose
#: ``Hashable`` parameter mypy does not match with a class: python/mypy#11470).
_SESSION_AWARE: dict[type, type] = {}


def _session_aware(base: type) -> type:
    """A subclass of MLflow's environment-variable class that reads the session first (one per class)."""
    if base not in _SESSION_AWARE:
        _SESSION_AWARE[base] = _session_aware_class(base)
    return _SESSION_AWARE[base]


def _session_aware_class(base: type) -> type:

    class SessionAware(base):
        def get_raw(self):
            values = _SESSION.get()
            if values is not None and self.name in values:
                return values[self.name]
            return super().get_raw()

        @property
        def defined(self):
            return self.get_raw() is not None

        def is_set(self):
            return self.get_raw() is not None

        if base.__name__ == "_BooleanEnvironmentVariable":

            def get(self):  # MLflow's boolean get() reads os.environ itself
                raw = self.get_raw()
                if raw is None:
                    return self.default
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"{self.name} must be true/false/1/0, got {raw!r}")
                return raw.lower() in ("true", "1")

    SessionAware.__name__ = SessionAware.__qualname__ = f"SessionAware{base.__name__}"
    return SessionAware


def _jobs_keep_context(create_thread_pool):
    """Wrap MLflow's artifact thread-pool factory: every job runs in its submitter's context."""

    @functools.wraps(create_thread_pool)
    def create(self):
        pool = create_thread_pool(self)
        submit = pool.submit

        def submit_in_context(fn, /, *args, **kwargs):
            return submit(contextvars.copy_context().run, fn, *args, **kwargs)

        pool.submit = submit_in_context
        return pool

    return create
