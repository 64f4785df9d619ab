"""The AirflowPlugin registers the extra links and the model API; only plugin.py is a plugin module."""

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
        "names = ('hooks', 'operators', 'registry', 'links', 'plugin', 'api')\n"
        "print(sorted(m for m in names if m in sys.modules))\n"
        "print('cmms_mlflow.api' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    links, top_level_modules, api_loaded = out.stdout.strip().splitlines()[-3:]
    assert links == "['MlflowModelVersionLink', 'MlflowRunLink']"
    # plugins/.airflowignore keeps Airflow from importing hooks.py etc. as top-level modules.
    assert top_level_modules == "['plugin']"
    # Loading plugins (every task process does) does not import the API app.
    assert api_loaded == "False"


def test_plugin_serves_the_model_api_under_api_v1_ml():
    code = (
        "from airflow import plugins_manager as pm\n"
        "apps, _ = pm.get_fastapi_plugins()\n"
        "ours = [a for a in apps if a['name'] == 'CMMS model API']\n"
        "print(ours[0]['url_prefix'], sorted(r.path for r in ours[0]['app'].routes))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    routes = (
        "['/models/train', '/models/{name}/history', '/models/{name}/production', "
        "'/models/{name}/versions/{version}/promote']"
    )
    assert out.stdout.strip().splitlines()[-1] == f"/api/v1/ml {routes}"
