"""The AirflowPlugin registers the extra links, and only plugin.py is imported as a plugin module."""

from __future__ import annotations

import subprocess
import sys


def test_plugin_registers_both_mlflow_links():
    code = (
        "import sys\n"
        "from airflow import plugins_manager as pm\n"
        "plugins, errors = pm._get_plugins()\n"
        "assert not errors, errors\n"
        "ours = [p for p in plugins if p.name == 'cmms_mlflow']\n"
        "print(sorted(type(link).__name__ for link in ours[0].operator_extra_links))\n"
        "names = ('hooks', 'operators', 'registry', 'links', 'plugin')\n"
        "print(sorted(m for m in names if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    links, top_level_modules = out.stdout.strip().splitlines()[-2:]
    assert links == "['MlflowModelVersionLink', 'MlflowRunLink']"
    # plugins/.airflowignore keeps Airflow from importing hooks.py etc. as top-level modules.
    assert top_level_modules == "['plugin']"
