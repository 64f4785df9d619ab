#!/usr/bin/env bash
# Create .venv and install the pinned requirements plus the project (editable).
# Uses uv when it is available or installable (about 10x faster here), else pip.
# Force pip with: INSTALLER=pip scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp="$CMMS_VENV/.requirements.sha256"
# Bump BYTECODE when the install recipe changes, so existing venvs are redone once.
BYTECODE=compiled-v1
want="$( (cat requirements.txt pyproject.toml; echo "$BYTECODE") | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
installer="${INSTALLER:-}"
if [ -z "$installer" ]; then
  if command -v uv >/dev/null 2>&1 || "$PYTHON" -m pip install -q --user uv >/dev/null 2>&1; then
    installer=uv
  else
    installer=pip
  fi
fi
start=$(date +%s)
install_with_uv() {
  local uv
  uv="$(command -v uv || echo "$("$PYTHON" -m site --user-base)/bin/uv")"
  [ -x "$CMMS_VENV/bin/python" ] || "$uv" venv -q -p "$PYTHON" "$CMMS_VENV"
  "$uv" pip install -q -p "$CMMS_VENV/bin/python" -r requirements.txt &&
    "$uv" pip install -q -p "$CMMS_VENV/bin/python" --no-deps -e .
}
install_with_pip() {
  [ -x "$CMMS_VENV/bin/python" ] || "$PYTHON" -m venv "$CMMS_VENV"
  # A venv made by uv has no pip of its own.
  "$CMMS_VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$CMMS_VENV/bin/python" -m ensurepip >/dev/null
  "$CMMS_VENV/bin/python" -m pip install -q -r requirements.txt &&
    "$CMMS_VENV/bin/python" -m pip install -q --no-deps -e .
}
if [ "$installer" = uv ] && ! install_with_uv; then
  echo "uv could not install the requirements; falling back to pip" >&2
  installer=pip
fi
if [ "$installer" = pip ]; then
  install_with_pip
fi
# Byte-compile everything once. uv installs no .pyc files, and where PYTHONDONTWRITEBYTECODE is
# set (as on our shared dev/CI machine) nothing ever writes them: every Airflow task process then
# compiles Airflow, mlflow, sklearn and pandas from source again, seconds per task
# (docs/BENCHMARKS.md). Also redoes venvs made before this step (BYTECODE above).
"$CMMS_VENV/bin/python" -m compileall -q -j 0 "$("$CMMS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
echo "$want" > "$stamp"
echo "Installed with $installer in $(( $(date +%s) - start )) s into $CMMS_VENV"
