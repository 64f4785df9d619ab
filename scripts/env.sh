# Source this file to work with the project's Airflow and MLflow from a shell:
#   source scripts/env.sh && airflow standalone
# Every value can be overridden by exporting it first.
CMMS_PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export CMMS_PROJECT_DIR
export CMMS_VENV="${CMMS_VENV:-$CMMS_PROJECT_DIR/.venv}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$CMMS_PROJECT_DIR/.airflow}"
export AIRFLOW_CONFIG="${AIRFLOW_CONFIG:-$CMMS_PROJECT_DIR/airflow.cfg}"
export CMMS_MLFLOW_HOME="${CMMS_MLFLOW_HOME:-$CMMS_PROJECT_DIR/.mlflow}"
export CMMS_DATA_ROOT="${CMMS_DATA_ROOT:-$CMMS_PROJECT_DIR/.data}"
case ":$PATH:" in
  *":$CMMS_VENV/bin:"*) ;;
  *) export PATH="$CMMS_VENV/bin:$PATH" ;;
esac
mkdir -p "$AIRFLOW_HOME" "$CMMS_MLFLOW_HOME"
# Every Airflow component (api-server, scheduler, dag-processor, triggerer, workers) must sign
# and verify task tokens with the same secrets, or tasks fail with "Invalid auth token".
# Generate them once per Airflow home (never committed), unless already set in the environment.
_secrets="$AIRFLOW_HOME/.secrets.env"
if [ ! -f "$_secrets" ]; then
  (umask 077 && python3 -c 'import secrets
print("AIRFLOW__API_AUTH__JWT_SECRET=" + secrets.token_urlsafe(32))
print("AIRFLOW__API__SECRET_KEY=" + secrets.token_urlsafe(32))' > "$_secrets")
fi
while IFS='=' read -r _key _value; do
  [ -n "${!_key:-}" ] || export "$_key=$_value"
done < "$_secrets"
unset _secrets _key _value
