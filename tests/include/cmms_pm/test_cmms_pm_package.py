"""The domain package stays importable without Airflow or MLflow, and cheap to import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

INCLUDE_DIR = Path(__file__).resolve().parents[3] / "include"

_PROBE = """
import importlib, pkgutil, sys
import cmms_pm
light = "pandas" not in sys.modules and "numpy" not in sys.modules
for module in pkgutil.iter_modules(cmms_pm.__path__):
    importlib.import_module(f"cmms_pm.{module.name}")
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"airflow", "mlflow"})
print(light, heavy)
"""


def test_package_imports_neither_airflow_nor_mlflow_and_its_root_is_light():
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**os.environ, "PYTHONPATH": str(INCLUDE_DIR)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split("\n")[0] == "True []"
