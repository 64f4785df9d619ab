#!/usr/bin/env bash
# Start the MLflow tracking server (UI + REST API + model registry + artifact proxy).
#
# Configured only by environment variables; .env.example documents each one. Unset, it serves
# the embedded store the DAGs use on a laptop (SQLite + local artifacts under CMMS_MLFLOW_HOME).
#
#   MLFLOW_BACKEND_STORE_URI   postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow (DB created if missing)
#   MLFLOW_ARTIFACT_ROOT       local folder or s3://bucket/prefix (with MLFLOW_S3_ENDPOINT_URL for non-AWS S3)
#   MLFLOW_HOST / MLFLOW_PORT  bind address (default 127.0.0.1:5000); beyond loopback only with MLFLOW_AUTH=1
#   MLFLOW_AUTH=1              basic-auth; needs MLFLOW_AUTH_ADMIN_PASSWORD and MLFLOW_FLASK_SERVER_SECRET_KEY
#
# Database URIs hold passwords, so they travel in environment variables only, never as command
# arguments (which every user sees in ps and /proc/<pid>/cmdline): `mlflow server` reads
# MLFLOW_BACKEND_STORE_URI itself, and the Python helper reads the variables it needs.
#
# Artifacts are proxied by the server (--serve-artifacts): clients never need S3 credentials.
# Set MLFLOW_SERVE_ARTIFACTS=0 to have clients write to MLFLOW_ARTIFACT_ROOT directly instead.
set -euo pipefail

project_dir="$(cd "$(dirname "$0")/.." && pwd)"
state_dir="${CMMS_MLFLOW_HOME:-$project_dir/.mlflow}"
python="${CMMS_PYTHON:-python}"
mlflow="${CMMS_MLFLOW_BIN:-mlflow}"

export MLFLOW_BACKEND_STORE_URI="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$state_dir/mlflow.db}"
artifacts="${MLFLOW_ARTIFACT_ROOT:-$state_dir/artifacts}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
workers="${MLFLOW_WORKERS:-2}"
# Only the names this server is reached by; add a load balancer's name in production.
allowed_hosts="${MLFLOW_ALLOWED_HOSTS:-127.0.0.1:$port,localhost:$port,$host:$port}"
cors_origins="${MLFLOW_CORS_ALLOWED_ORIGINS:-http://127.0.0.1:$port,http://localhost:$port}"
# The pipeline uses no MLflow server-side jobs; not starting their workers saves memory and time.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql://*)
    echo "error: MLFLOW_BACKEND_STORE_URI must name its driver: postgresql+psycopg2://..." >&2
    exit 2 ;;
esac
if [ "${MLFLOW_AUTH:-0}" = 1 ]; then
  for name in MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
    if [ -z "${!name:-}" ]; then
      echo "error: MLFLOW_AUTH=1 needs $name (a secret; see .env.example)" >&2
      exit 2
    fi
  done
fi

"$python" -m cmms_deploy.mlflow_server check-bind "$host" || exit 2

# Creates the database if missing; runs `mlflow db upgrade` on existing tables (a newer MLflow
# refuses to start on an older schema; a no-op when up to date).
"$python" -m cmms_deploy.mlflow_server prepare-store --upgrade >/dev/null

# No --backend-store-uri: `mlflow server` reads MLFLOW_BACKEND_STORE_URI from the environment.
args=(--host "$host" --port "$port" --workers "$workers"
      --allowed-hosts "$allowed_hosts" --cors-allowed-origins "$cors_origins")
if [ "${MLFLOW_SERVE_ARTIFACTS:-1}" = 0 ]; then
  args+=(--no-serve-artifacts --default-artifact-root "$artifacts")
else
  args+=(--serve-artifacts --artifacts-destination "$artifacts")
fi

if [ "${MLFLOW_AUTH:-0}" = 1 ]; then
  if [ -z "${MLFLOW_AUTH_DATABASE_URI:-}" ]; then
    case "$MLFLOW_BACKEND_STORE_URI" in
      # Users and permissions next to the tracking data, in their own database (query kept).
      postgresql*) MLFLOW_AUTH_DATABASE_URI="$("$python" -m cmms_deploy.mlflow_server auth-database-uri)" ;;
      *) MLFLOW_AUTH_DATABASE_URI="sqlite:///$state_dir/basic_auth.db" ;;
    esac
  fi
  export MLFLOW_AUTH_DATABASE_URI
  "$python" -m cmms_deploy.mlflow_server prepare-store --uri-env MLFLOW_AUTH_DATABASE_URI >/dev/null
  export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-$state_dir/basic_auth.ini}"
  "$python" -m cmms_deploy.mlflow_server write-auth-config "$MLFLOW_AUTH_CONFIG_PATH"
  args+=(--app-name basic-auth)
fi

echo "MLflow server on http://$host:$port (auth: ${MLFLOW_AUTH:-0}, artifacts: ${artifacts%%\?*})"
exec "$mlflow" server "${args[@]}"
