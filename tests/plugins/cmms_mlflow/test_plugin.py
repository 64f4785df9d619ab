"""The AirflowPlugin registers the extra links and the model API; only plugin.py is a plugin module."""

from __future__ import annotations

import json
import os
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
        "print('cmms_mlflow.www.routes' in sys.modules or 'cmms_mlflow.www.ui' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    links, top_level_modules, api_loaded = out.stdout.strip().splitlines()[-3:]
    assert links == "['MlflowModelVersionLink', 'MlflowRunLink']"
    # plugins/.airflowignore keeps Airflow from importing hooks.py etc. as top-level modules.
    assert top_level_modules == "['plugin']"
    # Loading plugins (every task process does) does not import the API app or the page.
    assert api_loaded == "False"


def test_plugin_serves_the_model_api_under_api_v1_ml_and_the_models_page_under_cmms_ui():
    code = (
        "from airflow import plugins_manager as pm\n"
        "apps, _ = pm.get_fastapi_plugins()\n"
        "for name in ('CMMS model API', 'CMMS Models page'):\n"
        "    ours = [a for a in apps if a['name'] == name]\n"
        "    print(ours[0]['url_prefix'], sorted(r.path for r in ours[0]['app'].routes))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    api, page = out.stdout.strip().splitlines()[-2:]
    routes = [
        "/models", "/models/train", "/models/{name}", "/models/{name}/history", "/models/{name}/performance",
        "/models/{name}/predict",
        "/models/{name}/production",
        "/models/{name}/versions/{version}", "/models/{name}/versions/{version}/plots/{plot}",
        "/models/{name}/versions/{version}/promote",
    ]  # fmt: skip
    assert api == f"/api/v1/ml {sorted(routes)}"
    assert page == "/cmms-ui ['/models/', '/models/{name}/versions/{version}', '/static/{asset}']"


def _external_views(env: dict[str, str]) -> list[dict]:
    code = (
        "import json\n"
        "from airflow import plugins_manager as pm\n"
        "from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse\n"
        "pm._get_ui_plugins()  # Airflow's own checks drop views that conflict or are not dicts\n"
        "(ours,) = [p for p in pm._get_plugins()[0] if p.name == 'cmms_mlflow']\n"
        "views = [ExternalViewResponse.model_validate(v).model_dump() for v in ours.external_views]\n"
        "print(json.dumps(views))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_models_page_is_in_airflows_navigation_and_mlflow_only_when_its_url_is_set():
    without = _external_views({"CMMS_MLFLOW_UI_URL": ""})
    assert [(v["name"], v["href"], v["url_route"]) for v in without] == [
        ("Models", "/cmms-ui/models/", "models")
    ]
    with_mlflow = _external_views({"CMMS_MLFLOW_UI_URL": "http://127.0.0.1:5099"})
    assert [(v["name"], v["href"]) for v in with_mlflow][1] == ("MLflow", "http://127.0.0.1:5099")
    # A value that is not an http(s) URL adds no link (it would be a javascript: link in the nav).
    assert len(_external_views({"CMMS_MLFLOW_UI_URL": "javascript:alert(1)"})) == 1
