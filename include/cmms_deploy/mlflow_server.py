"""Deployment helpers for a production MLflow server: its databases, its auth config, its users.

Used by ``include/start_mlflow_server.sh`` and by operators setting up the pipeline's MLflow
user; every secret, database URIs included, comes from the environment, never from an argument
(arguments show up in ``ps``, ``/proc/<pid>/cmdline`` and shell history)::

    python -m cmms_deploy.mlflow_server check-bind HOST            # loopback, or MLFLOW_AUTH=1
    python -m cmms_deploy.mlflow_server prepare-store [--upgrade]  # DB of MLFLOW_BACKEND_STORE_URI
    python -m cmms_deploy.mlflow_server auth-database-uri          # <backend db>_auth, query kept
    python -m cmms_deploy.mlflow_server write-auth-config PATH     # basic_auth.ini from MLFLOW_AUTH_* vars
    python -m cmms_deploy.mlflow_server ensure-user USERNAME       # password from MLFLOW_PIPELINE_PASSWORD
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit


class DeployConfigurationError(ValueError):
    """A deployment setting is missing or unusable; the message names it."""


PERMISSIONS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
# MLflow's own default; "no broader than needed": everyone may read, only owners write.
DEFAULT_PERMISSION = "READ"
#: Seconds a worker trusts a successful basic-auth check (MLflow default: 0, no cache; see auth_config).
DEFAULT_AUTH_CACHE_TTL_SECONDS = 30


def store_state(uri: str) -> str:
    """Create the database behind ``uri`` if it is missing; say what was found.

    Returns ``"created"`` (the server will create the schema), ``"empty"`` (same), or
    ``"existing"`` (tables exist: run ``mlflow db upgrade`` before starting a newer MLflow).
    SQLite files are created by MLflow itself, so only their folder is made here.
    """
    parsed = urlparse(uri)
    if parsed.scheme.startswith("sqlite"):
        path = Path(unquote(parsed.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            return "empty"
        return "existing" if _has_tables(uri) else "empty"
    if not parsed.scheme.startswith("postgresql"):
        raise DeployConfigurationError(
            f"backend store {parsed.scheme}:// is not supported here: use postgresql+psycopg2:// or sqlite:///"
        )
    if parsed.scheme == "postgresql":
        raise DeployConfigurationError(
            "backend store URI must name its driver: postgresql+psycopg2://... "
            "(SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which is not installed)"
        )
    created = _create_postgres_database(parsed)
    if created:
        return "created"
    return "existing" if _has_tables(uri) else "empty"


def upgrade_store(uri: str) -> None:
    """What ``mlflow db upgrade URI`` does, in this process: the URI never becomes an argument."""
    from mlflow.db import upgrade

    upgrade.callback(uri)


def auth_database_uri(backend_uri: str) -> str:
    """The users database next to a PostgreSQL backend: ``<db>_auth``, every other part kept.

    Only the path changes, so credentials, host and query options (``?sslmode=require``,
    ``connect_timeout``...) stay exactly as the operator wrote them.
    """
    parts = urlsplit(backend_uri)
    if not parts.scheme.startswith("postgresql"):
        raise DeployConfigurationError(
            f"no users database can be derived from a {parts.scheme}:// backend: set MLFLOW_AUTH_DATABASE_URI"
        )
    name = parts.path.lstrip("/")
    if not name:
        raise DeployConfigurationError("backend store URI names no database")
    return urlunsplit(parts._replace(path=f"/{name}_auth"))


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """``host`` is 127.0.0.0/8, ::1 or ``localhost`` (any other name may resolve anywhere)."""
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, auth: bool) -> None:
    """Refuse to serve beyond loopback without basic-auth."""
    if not auth and not is_loopback(host):
        raise DeployConfigurationError(
            f"MLFLOW_HOST={host!r} is not a loopback address (127.0.0.0/8, ::1, localhost) and "
            "MLFLOW_AUTH is not 1: refusing to serve MLflow unauthenticated beyond this machine; set "
            "MLFLOW_AUTH=1 (with MLFLOW_AUTH_ADMIN_PASSWORD and MLFLOW_FLASK_SERVER_SECRET_KEY) or "
            "MLFLOW_HOST=127.0.0.1"
        )


def _create_postgres_database(parsed) -> bool:
    import psycopg2
    from psycopg2 import errors, sql

    name = parsed.path.lstrip("/")
    if not name:
        raise DeployConfigurationError("backend store URI names no database")
    conn = psycopg2.connect(
        host=parsed.hostname,
        port=parsed.port or 5432,
        user=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
        dbname="postgres",
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                return False
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except errors.DuplicateDatabase:  # created meanwhile by another server starting
                return False
            return True
    finally:
        conn.close()


def _has_tables(uri: str) -> bool:
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        return bool(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name) or ""
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DeployConfigurationError(f"{name}={raw!r} is not a whole number") from None


def auth_config(
    database_uri: str,
    *,
    default_permission: str,
    admin_username: str,
    cache_ttl_seconds: int = DEFAULT_AUTH_CACHE_TTL_SECONDS,
) -> str:
    """Text of a ``basic_auth.ini``; the admin password is left to ``MLFLOW_AUTH_ADMIN_PASSWORD``.

    ``cache_ttl_seconds``: how long a worker keeps a successful credential check (MLflow's
    ``auth_cache_ttl_seconds``). Every check otherwise costs a scrypt/PBKDF2 hash, about 0.25 s of
    CPU here, on every request; the price is that a password changed or a user deleted through
    another worker is still accepted by this one for at most the TTL (0 turns the cache off).
    """
    if default_permission not in PERMISSIONS:
        raise DeployConfigurationError(
            f"MLFLOW_AUTH_DEFAULT_PERMISSION={default_permission!r} is not one of {', '.join(PERMISSIONS)}"
        )
    if not 0 <= cache_ttl_seconds <= 3600:
        raise DeployConfigurationError(
            f"MLFLOW_AUTH_CACHE_TTL_SECONDS={cache_ttl_seconds!r}: seconds from 0 (no cache) to 3600"
        )
    settings = {
        "default_permission": default_permission,
        "database_uri": database_uri,
        "admin_username": admin_username,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        "auth_cache_ttl_seconds": str(cache_ttl_seconds),
    }
    # MLflow reads this file with configparser's interpolation: a literal % (a URL-encoded
    # password such as p%40ss) must be written %%.
    lines = [f"{key} = {value.replace('%', '%%')}" for key, value in settings.items()]
    return "[mlflow]\n" + "\n".join(lines) + "\n"


def ensure_user(tracking_uri: str, username: str, password: str) -> str:
    """Create ``username`` (or reset its password) as the admin in ``MLFLOW_TRACKING_USERNAME``.

    Returns ``"created"`` or ``"updated"``. The user is not an admin: it owns (MANAGE) the
    experiments and models it creates, and has the server's default permission elsewhere.
    """
    from mlflow.exceptions import RestException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=tracking_uri)
    try:
        client.get_user(username)
    except RestException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, password)
        return "created"
    client.update_user_password(username, password)
    return "updated"


def _require_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise DeployConfigurationError(f"environment variable {name} must be set")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmms_deploy.mlflow_server", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    bind = commands.add_parser("check-bind", help="refuse a non-loopback address unless MLFLOW_AUTH=1")
    bind.add_argument("host")
    prepare = commands.add_parser("prepare-store", help="create the store's database if missing")
    prepare.add_argument("--uri-env", default="MLFLOW_BACKEND_STORE_URI", help="variable holding the URI")
    prepare.add_argument("--upgrade", action="store_true", help="run `mlflow db upgrade` on existing tables")
    commands.add_parser("auth-database-uri", help="print <backend db>_auth for MLFLOW_BACKEND_STORE_URI")
    write = commands.add_parser("write-auth-config", help="write basic_auth.ini from MLFLOW_AUTH_* vars")
    write.add_argument("path", type=Path)
    user = commands.add_parser("ensure-user", help="create/update a user; password from the environment")
    user.add_argument("username")
    user.add_argument("--password-env", default="MLFLOW_PIPELINE_PASSWORD")
    user.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""))
    args = parser.parse_args(argv)
    try:
        if args.command == "check-bind":
            check_bind(args.host, auth=os.environ.get("MLFLOW_AUTH", "0") == "1")
        elif args.command == "prepare-store":
            uri = _require_env(args.uri_env)
            state = store_state(uri)
            if state == "existing" and args.upgrade:
                # A newer MLflow refuses to start on an older schema; a no-op when up to date.
                upgrade_store(uri)
            print(state)
        elif args.command == "auth-database-uri":
            print(auth_database_uri(_require_env("MLFLOW_BACKEND_STORE_URI")))
        elif args.command == "write-auth-config":
            text = auth_config(
                _require_env("MLFLOW_AUTH_DATABASE_URI"),
                default_permission=os.environ.get("MLFLOW_AUTH_DEFAULT_PERMISSION") or DEFAULT_PERMISSION,
                admin_username=os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
                cache_ttl_seconds=_int_env("MLFLOW_AUTH_CACHE_TTL_SECONDS", DEFAULT_AUTH_CACHE_TTL_SECONDS),
            )
            args.path.parent.mkdir(parents=True, exist_ok=True)
            args.path.write_text(text)
            args.path.chmod(0o600)
        else:
            if not args.tracking_uri:
                raise DeployConfigurationError("--tracking-uri or MLFLOW_TRACKING_URI must name the server")
            _require_env("MLFLOW_TRACKING_USERNAME")
            _require_env("MLFLOW_TRACKING_PASSWORD")
            outcome = ensure_user(args.tracking_uri, args.username, _require_env(args.password_env))
            print(f"user {args.username} {outcome}")
    except DeployConfigurationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
