# Source this file to work with the project's Airflow and MLflow from a shell:
#   source scripts/env.sh && airflow standalone
# Every value can be overridden by exporting it first.
CMMS_PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export CMMS_PROJECT_DIR
export VENV="${VENV:-$CMMS_PROJECT_DIR/.venv}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$CMMS_PROJECT_DIR/.airflow}"
export AIRFLOW_CONFIG="${AIRFLOW_CONFIG:-$CMMS_PROJECT_DIR/airflow.cfg}"
export CMMS_MLFLOW_HOME="${CMMS_MLFLOW_HOME:-$CMMS_PROJECT_DIR/.mlflow}"
export CMMS_DATA_ROOT="${CMMS_DATA_ROOT:-$CMMS_PROJECT_DIR/.data}"
case ":$PATH:" in
  *":$VENV/bin:"*) ;;
  *) export PATH="$VENV/bin:$PATH" ;;
esac
mkdir -p "$AIRFLOW_HOME" "$CMMS_MLFLOW_HOME"
