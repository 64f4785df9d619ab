"""mypy in the suite, with the project's config (``[tool.mypy]`` in pyproject.toml): zero errors.

The config checks our code and skips following Airflow and MLflow (typed, but analysing them is most
of a cold run's time): see the comment above ``[tool.mypy]``. The second test proves that config
still catches a mistake in our own code, including one in how we call our own typed records.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
#: The repo's (gitignored) cache: a warm run takes about a second.
CACHE_DIR = PROJECT_DIR / ".mypy_cache"


def _mypy(*args: str, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(PROJECT_DIR / "pyproject.toml"),
            "--cache-dir",
            str(CACHE_DIR),
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mypy_finds_no_error_in_dags_plugins_and_include():
    out = _mypy()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout, out.stdout + out.stderr


def test_mypy_with_the_project_config_fails_on_a_type_error_in_our_code(tmp_path):
    """A module using ours (found through the config's ``mypy_path``) with three mistakes: a wrong
    return type, a typo'd key of a record that travels between tasks (``DecisionRecord``) and one
    of a spec section (``ModelSpec.drift``)."""
    module = tmp_path / "typecheck_probe.py"
    module.write_text(
        textwrap.dedent(
            """
            from cmms_mlflow.records import DecisionRecord
            from cmms_pm.spec import ModelSpec


            def count(text: str) -> int:
                return text


            def challenger(record: DecisionRecord) -> str:
                return record["challenger_verison"]


            def psi(spec: ModelSpec) -> float:
                return spec.drift["psi_treshold"]
            """
        )
    )
    out = _mypy(str(module), cwd=PROJECT_DIR)
    report = out.stdout + out.stderr
    assert out.returncode == 1, report
    assert 'Incompatible return value type (got "str", expected "int")' in report, report
    assert '"challenger_verison"' in report and "DecisionRecord" in report, report
    assert '"psi_treshold"' in report and '"Drift"' in report, report
    assert "Found 3 errors in 1 file" in report, report
